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
    """One spawn for both checks (starting Python processes is the slow part on a small machine)."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        torch.set_num_threads(1)
        _gradient_part(rank, world, out_dir)
        _trainer_part(rank, world, out_dir)
    finally:
        dist.destroy_process_group()


def _gradient_part(rank: int, world: int, out_dir: str) -> None:
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


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory):
    if not dist.is_available() or not dist.is_gloo_available():
        pytest.skip("needs torch.distributed with gloo")
    out = tmp_path_factory.mktemp("ddp")
    # fork (where there is one) reuses the loaded modules: re-importing torch in each child is the
    # slow part of this test on a small machine.
    method = "fork" if "fork" in mp.get_all_start_methods() else "spawn"
    mp.start_processes(_worker, args=(2, _free_port(), str(out)), nprocs=2, join=True, start_method=method)
    return out


def test_two_gloo_ranks_match_one_process(two_ranks):
    got = load_tensors(two_ranks / "ddp.safetensors")
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


def _trainer_part(rank: int, world: int, out_dir: str) -> None:
    import sys

    sys.path.insert(0, os.path.dirname(__file__))
    from _toy_data import ToyRetrievalDataset

    from vl_adapters.train.config import load_config
    from vl_adapters.train.trainer import Trainer

    config = load_config(overrides={"run_dir": os.path.join(out_dir, "run"), "epochs": 1, "progress": False,
                                    "data.batch_size": 2, "data.num_workers": 0, "model.adapters": ADAPTERS})
    trainer = Trainer(config, model=_model(), train_dataset=ToyRetrievalDataset(8),
                      eval_dataset=ToyRetrievalDataset(4, seed=1))
    metrics = trainer.fit()
    weights = torch.cat([p.detach().flatten() for p in trainer.model.trainable_parameters()])
    save_tensors(os.path.join(out_dir, f"rank{rank}.safetensors"),
                 {"weights": weights, "r1": torch.tensor([metrics["t2v_R@1"]]),
                  "steps": torch.tensor([trainer.state["step"]])})


def test_trainer_under_two_gloo_ranks(two_ranks):
    tmp_path = two_ranks
    a, b = load_tensors(tmp_path / "rank0.safetensors"), load_tensors(tmp_path / "rank1.safetensors")
    assert torch.equal(a["weights"], b["weights"])  # DDP keeps the replicas identical
    assert a["steps"].item() == 2  # 8 samples / (2 ranks x 2) per step
    assert torch.equal(a["r1"], b["r1"])  # both ranks evaluate the whole split
    assert (tmp_path / "run" / "checkpoints" / "last" / "adapters.safetensors").exists()
    assert len(list((tmp_path / "run").glob("metrics.jsonl"))) == 1
