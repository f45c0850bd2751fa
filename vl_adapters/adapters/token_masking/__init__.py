from .adapter import TokenMasking
from .config import TokenMaskingConfig

__all__ = ["TokenMasking", "TokenMaskingConfig"]
