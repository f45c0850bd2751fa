from .adapter import FineGrainedAlignment
from .config import FineGrainedAlignmentConfig

__all__ = ["FineGrainedAlignment", "FineGrainedAlignmentConfig"]
