"""Graph-free students: light modules on the backbone's own tokens that learn to reproduce the graph
branch's structural features, so inference needs no scene graph."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from .video_graph import grid_coordinates


class VideoStudent(nn.Module):
    """Per frame, K learned queries pool the projected patch tokens (+ grid position) into slots; the video
    feature is an MLP of [mean slot state over frames, mean |change| of the slot state between frames]."""

    def __init__(self, *, vision_width: int, dim: int, slots: int) -> None:
        super().__init__()
        self.token_proj, self.position_proj = nn.Linear(vision_width, dim), nn.Linear(2, dim)
        self.queries = nn.Parameter(torch.randn(slots, dim) * 0.02)
        self.mlp = nn.Sequential(nn.Linear(2 * dim, dim), nn.GELU(), nn.Linear(dim, dim))

    def forward(self, patch_tokens: Tensor, grid: tuple[int, int], frame_mask: Tensor) -> Tensor:
        """patch_tokens [B,T,N,C] -> [B, dim]."""
        tokens = self.token_proj(patch_tokens) + self.position_proj(grid_coordinates(grid, patch_tokens.device))
        attn = (torch.einsum("btnd,kd->btkn", tokens, self.queries) / math.sqrt(tokens.shape[-1])).softmax(-1)
        frame = torch.einsum("btkn,btnd->btkd", attn, tokens).mean(2)  # [B,T,dim]
        real = frame_mask[..., None].to(frame.dtype)
        state = (frame * real).sum(1) / real.sum(1).clamp_min(1)
        both = real[:, 1:] * real[:, :-1]
        change = ((frame[:, 1:] - frame[:, :-1]).abs() * both).sum(1) / both.sum(1).clamp_min(1)
        return self.mlp(torch.cat([state, change], dim=-1))


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
