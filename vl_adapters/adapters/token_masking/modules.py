"""Dropping patch tokens and putting them back on the full grid.

Shapes: N images (the real frames of the videos being encoded, in (video, time) order), P patches of
the grid, K kept patches, C tower width. Token sequences are [N, prefix + P, C] with the class token(s)
first, as both open_clip and transformers lay them out.
"""

from __future__ import annotations

import torch
from torch import Tensor


def kept_count(num_patches: int, ratio: float) -> int:
    """Patches kept per frame: floor((1 - ratio) * P), at least one."""
    return max(1, int(num_patches * (1.0 - ratio)))


def motion_saliency(patches: Tensor, frame_mask: Tensor | None) -> Tensor:
    """[N, P]: how far each patch is from its video's mean patch at the same place (positional embeddings
    cancel out). frame_mask [b, T] says how the N images split into videos (None: each image alone)."""
    n = patches.shape[0]
    if frame_mask is None:
        video = torch.arange(n, device=patches.device)
        videos = n
    else:
        counts = frame_mask.sum(1).to(patches.device)
        video = torch.repeat_interleave(torch.arange(len(counts), device=patches.device), counts)
        videos = len(counts)
    x = patches.float()
    total = x.new_zeros(videos, *x.shape[1:]).index_add(0, video, x)
    size = x.new_zeros(videos).index_add(0, video, torch.ones_like(x[:, 0, 0]))
    mean = total / size.clamp_min(1.0)[:, None, None]
    return (x - mean[video]).norm(dim=-1)


def choose_patches(scores: Tensor, keep: int) -> Tensor:
    """[N, K] indices of the K best-scored patches of each image, in grid order."""
    return scores.topk(keep, dim=1).indices.sort(dim=1).values


def gather_patches(tokens: Tensor, kept: Tensor, prefix: int) -> Tensor:
    """[N, prefix + P, C] -> [N, prefix + K, C]: the class token(s) and the kept patches."""
    index = kept[..., None].expand(-1, -1, tokens.shape[-1]) + prefix
    return torch.cat([tokens[:, :prefix], tokens.gather(1, index)], dim=1)


def scatter_patches(tokens: Tensor, kept: Tensor, prefix: int, num_patches: int) -> Tensor:
    """[N, prefix + K, C] -> [N, prefix + P, C]: the kept patches back at their places, zeros where dropped."""
    n, _, c = tokens.shape
    full = tokens.new_zeros(n, num_patches, c).scatter(1, kept[..., None].expand(-1, -1, c), tokens[:, prefix:])
    return torch.cat([tokens[:, :prefix], full], dim=1)
