from .adapter import MultiLevelAlignment
from .config import MultiLevelAlignmentConfig

__all__ = ["MultiLevelAlignment", "MultiLevelAlignmentConfig"]
