"""Frozen image-text backbones behind one contract."""

from __future__ import annotations

from ..core.registry import BACKBONES
from . import hf_clip, open_clip_backbone  # noqa: F401  (register the families)
from .base import Backbone


def load_backbone(spec: str, pretrained: str | None = None, **kwargs) -> Backbone:
    """Load a frozen backbone from a spec: `open_clip:<name>`, `hf:<id or dir>`, `tiny` or `tiny:<config>`.

    `pretrained`: an open_clip tag or a local checkpoint file (safetensors preferred); for hf, a local
    directory overriding the id. Keyword arguments: precision ("auto" | "fp32" | "bf16"), device,
    chunk_size (frames per backbone call), compile (True or a torch.compile mode: compile the vision tower).
    """
    family, _, name = spec.partition(":")
    loader = BACKBONES.get(family)
    return loader(name, pretrained=pretrained, **kwargs) if name else loader(pretrained=pretrained, **kwargs)


__all__ = ["Backbone", "load_backbone"]
