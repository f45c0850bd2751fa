"""Frame views: which of a clip's frames a model sees, and in what order.

- "all": every frame in order (the ordinary case);
- "middle": only the middle real frame of each clip: how much of a task needs no time at all;
- "shuffled": every frame, in a random order per clip: what is left of a model's lead once order is gone.

A view applies to a batch whatever its video input is: decoded frames [B, T, 3, H, W] with a frame mask,
or cached `VideoFeatures` (frame embeddings and patch tokens move together). Training draws a fresh
permutation per clip from the generator it is given; evaluation uses `fixed_permutations`, one per video
index, so every model is tested on the same shuffled clips whatever the batching.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..core.features import VideoFeatures

FRAME_VIEWS = ("all", "middle", "shuffled")


def check_view(view: str) -> str:
    if view not in FRAME_VIEWS:
        raise ValueError(f"frame view must be one of {FRAME_VIEWS}, got {view!r}")
    return view


def middle_frames(frame_mask: Tensor) -> Tensor:
    """[B, 1] the index of each clip's middle real frame (the first frame of a clip with none)."""
    real = frame_mask.long().sum(1)
    return ((real - 1).clamp_min(0) // 2)[:, None]


def random_permutations(batch: int, frames: int, generator: torch.Generator | None) -> Tensor:
    """[batch, frames] one uniform permutation per clip."""
    return torch.rand(batch, frames, generator=generator).argsort(dim=1)


def fixed_permutations(num_videos: int, frames: int, seed: int) -> Tensor:
    """[num_videos, frames] the evaluation's permutation of each video (index), a pure function of `seed`."""
    return random_permutations(num_videos, frames, torch.Generator().manual_seed(seed))


def take_frames(video, frame_mask: Tensor | None, order: Tensor):
    """Frames `order` [B, T'] of each clip: (video, frame_mask) with video frames [B,T,3,H,W] or VideoFeatures."""
    rows = torch.arange(order.shape[0], device=order.device)[:, None]
    if isinstance(video, VideoFeatures):
        order = order.to(video.frame_emb.device)
        patches = video.patch_tokens[rows, order] if video.patch_tokens is not None else None
        picked = video.replace(frame_emb=video.frame_emb[rows, order], frame_mask=video.frame_mask[rows, order],
                               patch_tokens=patches, video_emb=None)
        return picked, None if frame_mask is None else frame_mask[rows, order]
    order = order.to(video.device)
    return video[rows, order], None if frame_mask is None else frame_mask[rows, order]


def apply_view(batch: dict, view: str, *, generator: torch.Generator | None = None,
               permutations: Tensor | None = None) -> dict:
    """`batch` with its clips seen through `view`. "shuffled" takes `permutations[video_index]` when
    given (evaluation), else draws from `generator` (training)."""
    if check_view(view) == "all" or batch.get("video") is None:
        return batch
    video, mask = batch["video"], batch.get("frame_mask")
    features = isinstance(video, VideoFeatures)
    real = video.frame_mask if features else mask
    if real is None:
        real = torch.ones(video.shape[:2], dtype=torch.bool)
    b, t = real.shape
    if view == "middle":
        order = middle_frames(real.cpu())
    elif permutations is not None:
        order = permutations[batch["video_index"].cpu()]
    else:
        order = random_permutations(b, t, generator)
    video, mask = take_frames(video, mask, order)
    return {**batch, "video": video, **({"frame_mask": mask} if mask is not None else {})}
