"""Tem-Adapter (Chen et al., ICCV 2023): Temporal Aligner + Semantic Aligner."""

from .adapter import TemAdapter, TemSemanticAligner, TemTemporalAligner
from .config import TemAdapterConfig, TemSemanticAlignerConfig, TemTemporalAlignerConfig
from .templates import TEMPLATES, format_candidates

__all__ = [
    "TEMPLATES",
    "TemAdapter",
    "TemAdapterConfig",
    "TemSemanticAligner",
    "TemSemanticAlignerConfig",
    "TemTemporalAligner",
    "TemTemporalAlignerConfig",
    "format_candidates",
]
