from .adapter import XClip
from .config import XClipConfig

__all__ = ["XClip", "XClipConfig"]
