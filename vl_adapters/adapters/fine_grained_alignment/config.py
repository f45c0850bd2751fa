from __future__ import annotations

from dataclasses import dataclass

from ...core.config import AdapterConfig, ConfigError


@dataclass
class FineGrainedAlignmentConfig(AdapterConfig):
    """TW-BERT v1's fine-grained align-before-fuse loss, kept a dual encoder.

    dim          size of the shared space words and patches are projected to (256 in the paper)
    temperature  initial (learnable) temperature of the two-way InfoNCE
    weight       weight of the loss (returned already multiplied)
    chunk_elements  bound on the [texts, videos, words, frames, patches] block computed at once
    """

    dim: int = 256
    temperature: float = 0.07
    weight: float = 1.0
    chunk_elements: int = 1 << 25

    def __post_init__(self) -> None:
        if self.dim < 1 or self.chunk_elements < 1:
            raise ConfigError("FineGrainedAlignmentConfig: dim and chunk_elements must be >= 1")
        if self.temperature <= 0:
            raise ConfigError(f"FineGrainedAlignmentConfig.temperature must be > 0, got {self.temperature}")
