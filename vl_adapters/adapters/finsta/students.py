"""Graph-free students: light modules on the backbone's own tokens that learn to reproduce the graph
branch's structural features, so inference needs no scene graph."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from ...core.pooling import masked_mean
from ..tem_adapter.modules import sinusoid_positions
from .video_graph import grid_coordinates


class VideoStudent(nn.Module):
    """Per frame, K learned queries pool the projected patch tokens (+ grid position) into slots, whose mean is
    the frame's state; one Transformer layer over the frame states, with sinusoidal frame positions, reads
    their order. Returns the video feature, an MLP of [mean frame state ; mean of the ordered states], and
    the ordered states per frame, which learn the graph branch's temporal intervals (the features PTC aligns
    with a caption's events in order). Order-free pooling alone (the mean state and the mean |change|, as
    before) gives a video and its reversal the same feature, so no order the alignment learns could reach
    the embedding."""

    def __init__(self, *, vision_width: int, dim: int, slots: int, heads: int) -> None:
        super().__init__()
        self.token_proj, self.position_proj = nn.Linear(vision_width, dim), nn.Linear(2, dim)
        self.queries = nn.Parameter(torch.randn(slots, dim) * 0.02)
        # the frame states enter at unit scale, as loud as the sinusoids (see temporal_transformer)
        self.frame_norm = nn.LayerNorm(dim)
        layer = nn.TransformerEncoderLayer(d_model=dim, nhead=heads, dim_feedforward=2 * dim, dropout=0.0,
                                           activation="gelu", batch_first=True, norm_first=True)
        self.temporal = nn.TransformerEncoder(layer, num_layers=1, enable_nested_tensor=False)
        self.mlp = nn.Sequential(nn.Linear(2 * dim, dim), nn.GELU(), nn.Linear(dim, dim))

    def forward(self, patch_tokens: Tensor, grid: tuple[int, int], frame_mask: Tensor) -> tuple[Tensor, Tensor]:
        """patch_tokens [B,T,N,C] -> (video feature [B, dim], ordered frame states [B,T,dim])."""
        tokens = self.token_proj(patch_tokens) + self.position_proj(grid_coordinates(grid, patch_tokens.device))
        attn = (torch.einsum("btnd,kd->btkn", tokens, self.queries) / math.sqrt(tokens.shape[-1])).softmax(-1)
        # the mean of the K slots is the tokens pooled by the mean of the K attention rows: one pooling, not K
        frame = self.frame_norm(torch.einsum("btn,btnd->btd", attn.mean(2), tokens))  # [B,T,dim]
        positions = sinusoid_positions(frame.shape[1], frame.shape[2], device=frame.device)
        ordered = self.temporal(frame + positions, src_key_padding_mask=~frame_mask)
        pooled = torch.cat([masked_mean(frame, frame_mask, dim=1), masked_mean(ordered, frame_mask, dim=1)], dim=-1)
        return self.mlp(pooled), ordered


class TextStudent(nn.Module):
    """Attention pool over the text tower's token states plus the sentence embedding, then an MLP."""

    def __init__(self, *, text_width: int, embed_dim: int, dim: int) -> None:
        super().__init__()
        self.token_proj, self.sentence_proj = nn.Linear(text_width, dim), nn.Linear(embed_dim, dim)
        self.score = nn.Linear(dim, 1)
        self.mlp = nn.Sequential(nn.Linear(dim, dim), nn.GELU(), nn.Linear(dim, dim))

    def forward(self, token_states: Tensor, token_mask: Tensor, text_emb: Tensor) -> Tensor:
        """token_states [B,L,C'], token_mask [B,L], text_emb [B,D] -> [B, dim]."""
        tokens = self.token_proj(token_states)
        weight = self.score(tokens).squeeze(-1).masked_fill(~token_mask, float("-inf")).softmax(-1).nan_to_num(0.0)
        return self.mlp(torch.einsum("bl,bld->bd", weight, tokens) + self.sentence_proj(text_emb))
