from __future__ import annotations

import torch
from torch import nn

from ...core.adapter import Adapter, AdapterOutput, register_adapter
from ...core.features import FeatureShapeError
from .config import TemporalTransformerConfig


@register_adapter("temporal_transformer")
class TemporalTransformer(Adapter):
    """frame_emb + out_proj(Transformer(frame_emb + position)); out_proj starts at zero, so the
    model starts as mean pooling (CLIP4Clip meanP) and learns temporal context from there."""

    config_class = TemporalTransformerConfig
    stage = "video"

    def __init__(self, config: TemporalTransformerConfig, dims) -> None:
        super().__init__(config, dims)
        width = dims.embed_dim
        heads = config.heads if width % config.heads == 0 else 1
        self.position = nn.Embedding(config.max_frames, width)
        nn.init.normal_(self.position.weight, std=0.01)
        layer = nn.TransformerEncoderLayer(
            d_model=width, nhead=heads, dim_feedforward=int(width * config.mlp_ratio),
            dropout=config.dropout, activation="gelu", batch_first=True, norm_first=True,
        )
        self.encoder = nn.TransformerEncoder(layer, num_layers=config.layers, enable_nested_tensor=False)
        self.out_proj = nn.Linear(width, width)
        nn.init.zeros_(self.out_proj.weight)
        nn.init.zeros_(self.out_proj.bias)

    def forward(self, video, text, ctx) -> AdapterOutput:
        frames = video.frame_emb  # [B, T, D]
        t = frames.shape[1]
        if t > self.config.max_frames:
            raise FeatureShapeError(
                f"temporal_transformer: {t} frames exceed max_frames={self.config.max_frames}; raise it in the config"
            )
        positions = self.position(torch.arange(t, device=frames.device))
        hidden = self.encoder(frames + positions, src_key_padding_mask=~video.frame_mask)
        refined = frames + self.out_proj(hidden) * video.frame_mask[..., None]
        return AdapterOutput(video=video.replace(frame_emb=refined), text=text)
