from .adapter import SalientFrameFilter, SalientFrames, SalientFrameScorer
from .config import SalientFrameFilterConfig, SalientFramesConfig, SalientFrameScorerConfig
from .modules import SalientVideoFeatures

__all__ = ["SalientFrameFilter", "SalientFrameFilterConfig", "SalientFrameScorer", "SalientFrameScorerConfig",
           "SalientFrames", "SalientFramesConfig", "SalientVideoFeatures"]
