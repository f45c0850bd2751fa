from .adapter import STAdapter
from .config import STAdapterConfig
from .modules import STAdapterBlock

__all__ = ["STAdapter", "STAdapterBlock", "STAdapterConfig"]
