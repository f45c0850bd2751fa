from .adapter import TrajectoryWord
from .config import TrajectoryWordConfig

__all__ = ["TrajectoryWord", "TrajectoryWordConfig"]
