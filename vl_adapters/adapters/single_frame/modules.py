"""One random real frame per video, and frame-ensembled scores."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import einsum
from torch import Tensor

from ...core.features import VideoFeatures
from ...core.pooling import masked_mean


def random_real_frame(frame_mask: Tensor) -> Tensor:
    """[B] index of one real frame per video, uniform over its real frames (torch's global RNG, which the
    trainer seeds and checkpoints, so runs and resumes are reproducible)."""
    count = frame_mask.sum(1)
    if not bool((count > 0).all()):
        empty = (count == 0).nonzero().flatten().tolist()
        raise ValueError(f"single_frame: videos {empty} have no real frame (frame_mask all False)")
    pick = torch.minimum((torch.rand(count.shape, device=frame_mask.device) * count).long(), count - 1)
    rank = frame_mask.long().cumsum(1) - 1
    return (frame_mask & (rank == pick[:, None])).long().argmax(1)


def keep_frame(video: VideoFeatures, index: Tensor) -> VideoFeatures:
    """The videos reduced to one frame each (T = 1): frame index[b] of video b."""
    rows = torch.arange(video.batch_size, device=index.device)
    patches = None if video.patch_tokens is None else video.patch_tokens[rows, index][:, None]
    return video.replace(frame_emb=video.frame_emb[rows, index][:, None], patch_tokens=patches,
                         frame_mask=torch.ones(video.batch_size, 1, dtype=torch.bool, device=index.device))


def frame_cosines(text_emb: Tensor, frame_emb: Tensor, *, pairs: bool = False) -> Tensor:
    """Cosine of each text with each frame: [A, B, T], or [P, T] for aligned pairs."""
    text_emb, frame_emb = F.normalize(text_emb, dim=-1), F.normalize(frame_emb, dim=-1)
    if pairs:
        return einsum(text_emb, frame_emb, "p d, p t d -> p t")
    return einsum(text_emb, frame_emb, "a d, b t d -> a b t")


def ensemble(cosines: Tensor, frame_mask: Tensor, how: str) -> Tensor:
    """Aggregate frame cosines [..., T] over a video's real frames (frame_mask broadcastable)."""
    frame_mask = frame_mask.expand_as(cosines)
    if how == "max":
        return cosines.masked_fill(~frame_mask, float("-inf")).amax(-1)
    return masked_mean(cosines, frame_mask, dim=-1)
