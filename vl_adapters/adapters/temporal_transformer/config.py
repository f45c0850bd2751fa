from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from ...core.config import AdapterConfig, fit_heads


@dataclass
class TemporalTransformerConfig(AdapterConfig):
    """CLIP4Clip's seqTransf: a Transformer over frame embeddings with position embeddings."""

    layers: int = 4
    heads: int | None = None  # None: 8 on ViT-B's 512 (CLIP4Clip), fewer where heads would be under 32 channels
    max_frames: int = 64
    mlp_ratio: float = 4.0
    dropout: float = 0.1

    def __post_init__(self) -> None:
        self.require_at_least(1, "layers", "heads", "max_frames")

    def resolve(self, dims) -> TemporalTransformerConfig:
        return dataclasses.replace(self, heads=fit_heads(self.heads, width=dims.embed_dim, paper=8))
