from __future__ import annotations

from dataclasses import dataclass

from ...core.config import AdapterConfig

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
