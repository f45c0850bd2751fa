"""torch.distributed helpers: contrastive negatives gathered across ranks, with gradients."""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.distributed.nn  # noqa: F401  (the autograd-aware collectives are a submodule)
from torch import Tensor


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def all_gather_with_grad(tensor: Tensor) -> Tensor:
    """Concatenate `tensor` [B, ...] from every rank along dim 0 (rank order); gradients flow back to
    each rank's own slice. Without a process group it returns the tensor unchanged."""
    if not is_distributed():
        return tensor
    return torch.cat(torch.distributed.nn.functional.all_gather(tensor), dim=0)


def rank_offset(local_batch: int) -> int:
    """Index of this rank's first row in a gathered batch (all ranks hold `local_batch` rows)."""
    return rank() * local_batch
