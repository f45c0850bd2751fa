from __future__ import annotations

from dataclasses import dataclass

from ...core.config import AdapterConfig


@dataclass
class TemporalTransformerConfig(AdapterConfig):
    """CLIP4Clip's seqTransf: a Transformer over frame embeddings with position embeddings."""

    layers: int = 4
    heads: int = 8
    max_frames: int = 64
    mlp_ratio: float = 4.0
    dropout: float = 0.1

    def __post_init__(self) -> None:
        self.require_at_least(1, "layers", "heads", "max_frames")
