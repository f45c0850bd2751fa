from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from ...core.config import AdapterConfig, ConfigError, fit_width


@dataclass
class FineGrainedAlignmentConfig(AdapterConfig):
    """TW-BERT v1's fine-grained align-before-fuse loss, kept a dual encoder.

    dim          size of the shared space words and patches are projected to; None: the paper's 256, at
                 most the backbone's width
    temperature  initial (learnable) temperature of the two-way InfoNCE
    weight       weight of the loss (returned already multiplied)
    chunk_elements  bound on the [texts, videos, words, frames, patches] block computed at once
    """

    dim: int | None = None
    temperature: float = 0.07
    weight: float = 1.0
    chunk_elements: int = 1 << 25

    def __post_init__(self) -> None:
        self.require_at_least(1, "dim", "chunk_elements")
        if self.temperature <= 0:
            raise ConfigError(f"FineGrainedAlignmentConfig.temperature must be > 0, got {self.temperature}")

    def resolve(self, dims) -> FineGrainedAlignmentConfig:
        return dataclasses.replace(self, dim=fit_width(self.dim, paper=256, dims=dims))
