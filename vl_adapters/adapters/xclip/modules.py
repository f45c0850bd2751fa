"""Attention over similarity matrices (AOSM), X-CLIP's aggregation of fine-grained scores."""

from __future__ import annotations

import torch
from torch import Tensor


def aosm(sims: Tensor, mask: Tensor, dim: int, temperature: float, mixing: Tensor | None = None) -> Tensor:
    """Aggregate `sims` over axis `dim`: sum_i a_i s_i with a = softmax(s / temperature) over the real
    entries (mask, broadcastable to sims). `mixing` [n_max, n_max] re-weights the attention across
    positions (a'_j = sum_i a_i M_ij; identity-initialised in X-CLIP). A very high temperature gives
    uniform attention, i.e. the masked mean; a low one approaches the maximum."""
    mask = mask.expand_as(sims)
    logits = (sims / temperature).masked_fill(~mask, torch.finfo(sims.dtype).min)
    attention = logits.softmax(dim)
    if mixing is not None:
        n = sims.shape[dim]
        attention = (attention.movedim(dim, -1) @ mixing[:n, :n]).movedim(-1, dim)
    return (attention * sims).masked_fill(~mask, 0.0).sum(dim)
