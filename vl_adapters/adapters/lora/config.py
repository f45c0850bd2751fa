from __future__ import annotations

from dataclasses import dataclass

from ...core.config import AdapterConfig, ConfigError

TOWERS = ("vision", "text", "both")
TARGETS = ("attention", "mlp", "all")


@dataclass
class LoraConfig(AdapterConfig):
    """Low-rank updates (peft's LoRA) on the frozen backbone's attention and MLP layers.

    towers   "vision", "text" or "both": which encoder(s) get LoRA.
    targets  "attention", "mlp" or "all": which layers of each block (open_clip: the attention module
             (in_proj and out_proj) and mlp.c_fc/c_proj; transformers CLIP: self_attn q/k/v/out_proj and
             mlp.fc1/fc2).
    """

    rank: int = 8
    alpha: float = 16.0
    dropout: float = 0.0
    towers: str = "both"
    targets: str = "all"

    def __post_init__(self) -> None:
        self.require_at_least(1, "rank")
        if self.towers not in TOWERS:
            raise ConfigError(f"LoraConfig.towers must be one of {TOWERS}, got {self.towers!r}")
        if self.targets not in TARGETS:
            raise ConfigError(f"LoraConfig.targets must be one of {TARGETS}, got {self.targets!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"LoraConfig.dropout must be in [0, 1), got {self.dropout}")
