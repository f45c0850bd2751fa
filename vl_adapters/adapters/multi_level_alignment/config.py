from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from ...core.config import AdapterConfig, ConfigError, fit_heads


@dataclass
class MultiLevelAlignmentConfig(AdapterConfig):
    """Multi-level alignment (Zhang et al., arXiv 2204.10938) over a temporal module.

    layers, heads, max_frames, mlp_ratio, dropout
                    the temporal module over frame embeddings: temporal_transformer's, same defaults
    text_layers     layers of the text module over token states (same heads, mlp_ratio, dropout); 0
                    leaves the text side frozen, and the adapter is temporal_transformer + the contrast
    weight_global   lambda_g: whole video against whole caption (returned already multiplied)
    weight_segment  lambda_s: segment i of a video against phrase i of its caption
    temperature     initial (learnable) temperature shared by both levels
    """

    layers: int = 4
    heads: int | None = None
    max_frames: int = 64
    mlp_ratio: float = 4.0
    dropout: float = 0.1
    text_layers: int = 1
    weight_global: float = 1.0
    weight_segment: float = 1.0
    temperature: float = 0.07

    def __post_init__(self) -> None:
        if self.temperature <= 0:
            raise ConfigError(f"MultiLevelAlignmentConfig.temperature must be > 0, got {self.temperature}")
        if self.text_layers < 0:
            raise ConfigError(f"MultiLevelAlignmentConfig.text_layers must be >= 0, got {self.text_layers}")
        if self.weight_global < 0 or self.weight_segment < 0:
            raise ConfigError(
                "MultiLevelAlignmentConfig: weight_global and weight_segment must be >= 0, got "
                f"{self.weight_global} and {self.weight_segment}"
            )

    def resolve(self, dims) -> MultiLevelAlignmentConfig:
        return dataclasses.replace(self, heads=fit_heads(self.heads, width=dims.embed_dim, paper=8))
