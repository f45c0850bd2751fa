from .adapter import TemporalTransformer
from .config import TemporalTransformerConfig

__all__ = ["TemporalTransformer", "TemporalTransformerConfig"]
