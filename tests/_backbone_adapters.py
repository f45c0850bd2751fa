"""Helpers shared by the backbone-stage adapter tests (lora, st_adapter)."""

from __future__ import annotations

import torch

import vl_adapters as vla


def fresh_backbone(kind: str, hf_clip_dir=None):
    """A backbone of its own: backbone adapters change it in place, so never the session one."""
    if kind == "tiny":
        return vla.load_backbone("tiny", device="cpu", pretrained="")
    return vla.load_backbone(f"hf:{hf_clip_dir[2]}", device="cpu")


def paired_batch():
    generator = torch.Generator().manual_seed(1)
    video = torch.randn(3, 4, 3, 32, 32, generator=generator)
    mask = torch.ones(3, 4, dtype=torch.bool)
    mask[1, 2:] = False
    return video, mask, ["a red circle moves left", "a blue square appears", "green turns yellow"]


def base_snapshot(backbone):
    """A copy of the backbone's own parameters, by name, before any adapter."""
    return {name: p.detach().clone() for name, p in backbone.model.named_parameters()}


def assert_base_bit_identical(backbone, snapshot):
    """Every base weight is still in the model (peft renames it `<layer>.base_layer.<name>`), frozen,
    and bit-identical; the only new parameters are the adapter's."""
    base = {name.replace(".base_layer", ""): p for name, p in backbone.model.named_parameters() if ".lora_" not in name}
    assert sorted(base) == sorted(snapshot)
    for name, param in base.items():
        assert not param.requires_grad, name
        assert torch.equal(param, snapshot[name]), name


def train_steps(model, video, mask, texts, steps=3, lr=1e-2):
    optimizer = torch.optim.AdamW(model.trainable_parameters(), lr=lr)
    model.train()
    for _ in range(steps):
        out = model({"video": video, "frame_mask": mask, "text": texts})
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
    model.eval()
    return out
