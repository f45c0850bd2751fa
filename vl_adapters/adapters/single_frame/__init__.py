from .adapter import SingleFrame
from .config import SingleFrameConfig

__all__ = ["SingleFrame", "SingleFrameConfig"]
