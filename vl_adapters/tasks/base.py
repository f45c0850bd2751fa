"""Task heads turn adapted features into scores, a loss and metrics."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import ClassVar

import torch
from torch import Tensor, nn

from ..core.config import TaskConfig
from ..core.registry import TASKS

# The bound CLIP puts on its own temperature; a learnable scale beyond it makes training unstable.
MAX_LOGIT_SCALE = 100.0


@dataclass
class TaskOutput:
    """loss: task loss + the adapters' weighted auxiliary losses; losses: every named term."""

    loss: Tensor
    scores: Tensor
    losses: dict[str, Tensor] = field(default_factory=dict)


class TaskHead(nn.Module):
    config_class: ClassVar[type[TaskConfig]] = TaskConfig
    name: ClassVar[str] = ""

    def __init__(self, config: TaskConfig, *, logit_scale: float) -> None:
        super().__init__()
        self.config = config
        # Learnable temperature, initialised from the backbone's own (CLIP stores it as a log), within the bound.
        self.max_log_scale = math.log(MAX_LOGIT_SCALE)
        self.log_scale = nn.Parameter(torch.tensor(min(math.log(logit_scale), self.max_log_scale)))

    @property
    def scale(self) -> Tensor:
        """exp(log_scale), at most MAX_LOGIT_SCALE. CLIP backbones start exactly at the bound (log 100 in fp32),
        where a plain clamp has a zero gradient: the temperature would never learn. `_UpperBound` lets
        through every gradient that moves the value back inside, so it learns from there."""
        return _UpperBound.apply(self.log_scale, self.max_log_scale).exp()

    def forward(self, model, batch: dict) -> TaskOutput:
        raise NotImplementedError


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


def register_task(name: str):
    def decorate(cls):
        cls.name = name
        cls.config_class.type_name = name
        TASKS.register(name, cls)
        return cls

    return decorate


def build_task(spec, *, logit_scale: float) -> TaskHead:
    """A task head from a name, a TaskConfig, or a {"type": name, ...} dict."""
    if isinstance(spec, str):
        cls = TASKS.get(spec)
        config = cls.config_class()
    elif isinstance(spec, TaskConfig):
        cls, config = TASKS.get(spec.type_name), spec
    elif isinstance(spec, dict):
        cls = TASKS.get(spec.get("type", ""))
        config = cls.config_class.from_dict(spec)
    else:
        raise TypeError(f"task must be a name, a TaskConfig or a dict, got {type(spec).__name__}")
    return cls(config, logit_scale=logit_scale)
