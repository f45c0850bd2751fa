"""Task heads turn adapted features into scores, a loss and metrics."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import ClassVar

import torch
from torch import Tensor, nn

from ..core.config import TaskConfig
from ..core.registry import TASKS


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
        # Learnable temperature, initialised from the backbone's own (CLIP stores it as a log).
        self.log_scale = nn.Parameter(torch.tensor(math.log(logit_scale)))

    @property
    def scale(self) -> Tensor:
        return self.log_scale.clamp(max=math.log(100.0)).exp()

    def forward(self, model, batch: dict) -> TaskOutput:
        raise NotImplementedError


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
