"""Two gloo processes on the CPU give the same retrieval loss and adapter gradients as one process on
the same global batch: negatives are all-gathered with gradients and DDP averages the gradients."""

from __future__ import annotations

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import vl_adapters as vla
from vl_adapters.core.io import load_tensors, save_tensors

ADAPTERS = [{"type": "temporal_transformer", "layers": 1, "heads": 2, "dropout": 0.0}]
GLOBAL_BATCH = 6


def _global_batch():
    g = torch.Generator().manual_seed(0)
    frames = torch.randn(GLOBAL_BATCH, 3, 3, 32, 32, generator=g)
    texts = [f"caption number {i} of a moving {c} shape" for i, c in enumerate("abcdef")]
    return frames, texts


def _model():
    torch.manual_seed(0)
    model = vla.wrap(vla.load_backbone("tiny", device="cpu"), ADAPTERS, task="retrieval")
    # Move away from identity so every adapter weight gets a gradient.
    with torch.no_grad():
        for p in model.trainable_parameters():
            p.add_(0.02 * torch.randn_like(p))
    return model


def _grads(model) -> dict[str, torch.Tensor]:
    return {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.requires_grad and p.grad is not None}


def _worker(rank: int, world: int, port: int, out_dir: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        torch.set_num_threads(1)
        model = _model()
        ddp = torch.nn.parallel.DistributedDataParallel(model)
        frames, texts = _global_batch()
        local = slice(rank * GLOBAL_BATCH // world, (rank + 1) * GLOBAL_BATCH // world)
        out = ddp({"video": frames[local], "text": texts[local]})
        out.loss.backward()
        loss = out.loss.detach().reshape(1)
        dist.all_reduce(loss)
        if rank == 0:
            save_tensors(os.path.join(out_dir, "ddp.safetensors"),
                         {"loss": loss / world, **{f"grad.{k}": v for k, v in _grads(model).items()}})
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(), reason="needs torch.distributed with gloo")
def test_two_gloo_ranks_match_one_process(tmp_path):
    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    got = load_tensors(tmp_path / "ddp.safetensors")
    model = _model()
    frames, texts = _global_batch()
    out = model({"video": frames, "text": texts})
    out.loss.backward()
    torch.testing.assert_close(got["loss"][0], out.loss.detach(), rtol=1e-5, atol=1e-6)
    expected = _grads(model)
    assert set(expected) == {k.removeprefix("grad.") for k in got if k.startswith("grad.")}
    assert any(v.abs().sum() > 0 for v in expected.values())
    for name, grad in expected.items():
        torch.testing.assert_close(got[f"grad.{name}"], grad, rtol=1e-4, atol=1e-6, msg=f"gradient of {name}")
