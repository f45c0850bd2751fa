"""gated_mean: frame embeddings plus a learned, zero-gated shift towards the video's mean frame."""

from dataclasses import dataclass

import torch
from torch import nn

from vl_adapters import Adapter, AdapterConfig, AdapterOutput, register_adapter


@dataclass
class GatedMeanConfig(AdapterConfig):
    hidden: int = 32


@register_adapter("gated_mean")
class GatedMean(Adapter):
    config_class = GatedMeanConfig
    stage = "video"

    def __init__(self, config: GatedMeanConfig, dims) -> None:
        super().__init__(config, dims)
        width = dims.embed_dim
        self.mlp = nn.Sequential(nn.Linear(width, config.hidden), nn.GELU(), nn.Linear(config.hidden, width))
        self.gate = nn.Parameter(torch.zeros(()))  # zero: the wrapped model starts as the backbone

    def forward(self, video, text, ctx) -> AdapterOutput:
        mask = video.frame_mask[..., None].float()  # [B, T, 1]
        mean = (video.frame_emb * mask).sum(1, keepdim=True) / mask.sum(1, keepdim=True).clamp(min=1)
        shifted = video.frame_emb + self.gate * self.mlp(mean) * mask
        return AdapterOutput(video=video.replace(frame_emb=shifted), text=text)
