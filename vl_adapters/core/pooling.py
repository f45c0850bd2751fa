"""Pooling and similarity helpers shared by the model and the task heads."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import einsum
from torch import Tensor

from .features import TextFeatures, VideoFeatures


def masked_mean(x: Tensor, mask: Tensor, dim: int) -> Tensor:
    """Mean of x over `dim` counting only positions where mask is True (mask broadcast from the left)."""
    weights = mask.to(x.dtype)
    while weights.ndim < x.ndim:
        weights = weights.unsqueeze(-1)
    return (x * weights).sum(dim) / weights.sum(dim).clamp_min(1.0)


def video_embedding(video: VideoFeatures) -> Tensor:
    """[B,D] unit-norm video embedding: the adapter's pooled one, else CLIP4Clip's meanP
    (masked mean of L2-normalised frame embeddings, re-normalised)."""
    if video.video_emb is not None:
        return F.normalize(video.video_emb, dim=-1)
    frames = F.normalize(video.frame_emb, dim=-1)
    return F.normalize(masked_mean(frames, video.frame_mask, dim=1), dim=-1)


def text_embedding(text: TextFeatures) -> Tensor:
    return F.normalize(text.text_emb, dim=-1)


def cosine_matrix(text: TextFeatures, video: VideoFeatures) -> Tensor:
    """[num_texts, num_videos] cosine similarities of the dual encoder."""
    return einsum(text_embedding(text), video_embedding(video), "t d, v d -> t v")


def pair_cosine(text: TextFeatures, video: VideoFeatures) -> Tensor:
    """[P] cosine of aligned pairs (text p with video p)."""
    return (text_embedding(text) * video_embedding(video)).sum(-1)


def topk_rerank_pairs(similarity: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """Indices (text, video) of each text's top-k videos, flattened to pairs."""
    k = min(k, similarity.shape[1])
    top = similarity.topk(k, dim=1).indices
    rows = torch.arange(similarity.shape[0], device=similarity.device).repeat_interleave(k)
    return rows, top.flatten()
