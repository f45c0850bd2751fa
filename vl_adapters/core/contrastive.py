"""The contrastive pieces the task heads and the adapters share: the bounded learnable temperature and the
(multi-positive, two-way) InfoNCE."""

from __future__ import annotations

import math

import torch
from torch import Tensor

# The bound CLIP puts on its own temperature; a learnable scale beyond it makes training unstable.
MAX_LOGIT_SCALE = 100.0
MAX_LOG_SCALE = math.log(MAX_LOGIT_SCALE)


def bounded_scale(log_scale: Tensor, max_log_scale: float = MAX_LOG_SCALE) -> Tensor:
    """exp(log_scale), at most exp(max_log_scale). CLIP backbones start exactly at the bound (log 100 in fp32),
    where a plain clamp has a zero gradient: the temperature would never learn. `_UpperBound` lets through
    every gradient that moves the value back inside, so it learns from there."""
    return _UpperBound.apply(log_scale, max_log_scale).exp()


class _UpperBound(torch.autograd.Function):
    """min(x, bound) whose gradient is blocked only where a descent step would push x past the bound
    (x >= bound and gradient < 0); a plain clamp blocks it in both directions, so a parameter that reaches
    the bound stays there for good."""

    @staticmethod
    def forward(ctx, x: Tensor, bound: float) -> Tensor:
        ctx.save_for_backward(x)
        ctx.bound = bound
        return x.clamp(max=bound)

    @staticmethod
    def backward(ctx, grad: Tensor):
        (x,) = ctx.saved_tensors
        outward = (x >= ctx.bound) & (grad < 0)
        return grad.masked_fill(outward, 0.0), None


def infonce(logits: Tensor, positive: Tensor) -> Tensor:
    """InfoNCE of each row of [N, M] logits against all its columns, where several columns may be positives
    (positive [N, M] bool): -log of the softmax mass on the row's positives, averaged over the rows that have
    one. With one positive per row it is the cross-entropy."""
    has = positive.any(1)
    log_prob = logits.log_softmax(1).masked_fill(~positive, torch.finfo(logits.dtype).min)
    return -log_prob.logsumexp(1)[has].mean()


def two_way_infonce(logits: Tensor, positive: Tensor) -> Tensor:
    """Symmetric InfoNCE over [N, M] logits: each row against all columns and each column against all rows
    (several positives allowed on either side: identical captions, a video's several captions)."""
    return 0.5 * (infonce(logits, positive) + infonce(logits.T, positive.T))
