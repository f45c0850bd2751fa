from .adapter import SalientFrameFilter, SalientFrames, SalientFrameScorer
from .config import SalientFrameFilterConfig, SalientFrameScorerConfig, SalientFramesConfig
from .modules import SalientVideoFeatures

__all__ = ["SalientFrameFilter", "SalientFrameFilterConfig", "SalientFrameScorer", "SalientFrameScorerConfig",
           "SalientFrames", "SalientFramesConfig", "SalientVideoFeatures"]
