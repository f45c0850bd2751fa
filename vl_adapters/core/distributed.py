"""torch.distributed helpers: contrastive negatives gathered across ranks, with gradients (ranks may hold
different numbers of rows: a run skips bad videos)."""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.distributed.nn  # noqa: F401  (the autograd-aware collectives are a submodule)
import torch.nn.functional as F
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


def batch_sizes(local: int, device) -> list[int]:
    """Every rank's row count, in rank order ([local] without a process group)."""
    if not is_distributed():
        return [local]
    sizes = [torch.zeros(1, dtype=torch.long, device=device) for _ in range(dist.get_world_size())]
    dist.all_gather(sizes, torch.tensor([local], device=device))
    return [int(n) for n in sizes]


def gather_rows(tensor: Tensor, sizes: list[int]) -> Tensor:
    """Rows of every rank concatenated in rank order (`sizes`: each rank's row count, from batch_sizes), with
    gradients for floating tensors. Ranks may differ in rows and in the length of axis 1 (tokens, frames): for
    the collective, axis 1 is zero-padded to the longest rank's (a padded token or frame is masked out, its
    mask padded False) and the batch axis to the largest batch, whose padding rows are dropped again.
    Without a process group: unchanged."""
    if not is_distributed():
        return tensor
    if tensor.ndim > 1:
        length = torch.tensor([tensor.shape[1]], device=tensor.device)
        dist.all_reduce(length, op=dist.ReduceOp.MAX)
        tensor = F.pad(tensor, [0, 0] * (tensor.ndim - 2) + [0, int(length) - tensor.shape[1]])
    longest = max(sizes)
    if tensor.shape[0] < longest:
        tensor = torch.cat([tensor, tensor.new_zeros(longest - tensor.shape[0], *tensor.shape[1:])])
    if tensor.is_floating_point():
        gathered = all_gather_with_grad(tensor.contiguous())
    else:
        parts = [torch.empty_like(tensor) for _ in sizes]
        dist.all_gather(parts, tensor.contiguous())
        gathered = torch.cat(parts)
    keep = torch.cat([torch.arange(n) + r * longest for r, n in enumerate(sizes)]).to(gathered.device)
    return gathered.index_select(0, keep)
