"""Salient-frame selection: a video-only scorer, the language-guided target it learns, and the gather.

Shapes: B videos (or pairs), T frames, D joint embedding width, k kept frames.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch
import torch.nn.functional as F
from einops import einsum
from torch import Tensor, nn

from ...core.features import FeatureShapeError, VideoFeatures
from ...core.pooling import masked_mean, video_embedding


@dataclass(frozen=True)
class SalientVideoFeatures(VideoFeatures):
    """VideoFeatures with EVERY frame (the dual encoder still pools all of them) plus the frames the
    scorer kept for the cross adapters: salient_index [B, k] long, in temporal order. Indexing, moving
    and concatenating keep it (they go through dataclasses.replace)."""

    salient_index: Tensor | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        index = self.salient_index
        if index is not None and (index.ndim != 2 or index.shape[0] != self.batch_size
                                  or index.shape[1] > self.num_frames or index.dtype != torch.long):
            raise FeatureShapeError(f"SalientVideoFeatures.salient_index: expected long [{self.batch_size}, k <= "
                                    f"{self.num_frames}], got {index.dtype} {list(index.shape)}")

    @classmethod
    def annotate(cls, video: VideoFeatures, salient_index: Tensor) -> SalientVideoFeatures:
        return cls(**{f.name: getattr(video, f.name) for f in fields(VideoFeatures)}, salient_index=salient_index)


class FrameScorer(nn.Module):
    """Saliency of each frame from the video alone: an MLP over [frame ; frame - video mean] (what the
    frame shows and how it stands out of its video), on unit-normalised frame embeddings -> logits [B, T]."""

    def __init__(self, *, dim: int, hidden: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.LayerNorm(2 * dim), nn.Linear(2 * dim, hidden), nn.GELU(), nn.Linear(hidden, 1))

    def forward(self, frame_emb: Tensor, frame_mask: Tensor) -> Tensor:
        frames = F.normalize(frame_emb, dim=-1)
        mean = masked_mean(frames, frame_mask, dim=1)
        return self.net(torch.cat([frames, frames - mean[:, None]], dim=-1)).squeeze(-1)


def frame_relevance(frame_emb: Tensor, text_emb: Tensor) -> Tensor:
    """[B, T] cosine of each frame with its own row's text (the global alignment's frame-text relevance)."""
    return einsum(F.normalize(frame_emb, dim=-1), F.normalize(text_emb, dim=-1), "b t d, b d -> b t")


def masked_log_softmax(scores: Tensor, frame_mask: Tensor) -> Tensor:
    """log-softmax over real frames; padded frames get -inf."""
    return scores.masked_fill(~frame_mask, float("-inf")).log_softmax(-1)


def saliency_loss(scores: Tensor, frame_mask: Tensor, target: Tensor) -> Tensor:
    """KL(target || softmax(scores)) over each video's real frames, averaged over videos; target [B, T]
    sums to 1 over real frames and carries no gradient."""
    log_q = masked_log_softmax(scores, frame_mask).masked_fill(~frame_mask, 0.0)
    log_p = target.clamp_min(1e-12).log()
    return (target * (log_p - log_q)).sum(-1).mean()


def top_frames(scores: Tensor, frame_mask: Tensor, keep: int) -> Tensor:
    """[B, min(keep, T)] indices of the best-scored real frames, in temporal order (padded frames only
    when a video has fewer real frames than `keep`; they stay masked after the gather)."""
    keep = min(keep, scores.shape[1])
    picked = scores.detach().masked_fill(~frame_mask, float("-inf")).topk(keep, dim=-1).indices
    return picked.sort(dim=-1).values


def keep_frames(video: VideoFeatures, index: Tensor) -> VideoFeatures:
    """The video with only the frames `index` [B, k] (frame embeddings, patch tokens, mask). The pooled
    dual embedding is kept as it was over every frame, so any score of the pooled video is unchanged."""
    rows = torch.arange(video.batch_size, device=index.device)[:, None]
    patches = None if video.patch_tokens is None else video.patch_tokens[rows, index]
    pooled = video.video_emb if video.video_emb is not None else video_embedding(video)
    return VideoFeatures(frame_emb=video.frame_emb[rows, index], frame_mask=video.frame_mask[rows, index],
                         patch_tokens=patches, grid=video.grid, video_emb=pooled)
