"""Checkpoints without pickle: tensors in safetensors, everything else in JSON, one directory each.

<run>/checkpoints/{last,best}/
  adapters.safetensors + adapters.json     model.save_adapters (loadable with vla.load_adapters)
  optimizer.safetensors + optimizer.json   per-parameter state tensors; param groups
  scheduler.json, state.json               schedule position; step, epoch, batch in epoch, best metric
  rng.safetensors + rng.json               torch (CPU and CUDA), numpy and python RNG states

A checkpoint is written to a temporary sibling directory and swapped in with renames
(core/io.py swap_directory), so a crash at any instant leaves a whole checkpoint: `find_checkpoint`
reads it wherever the swap stood, and `recover_checkpoints` (run when training starts) finishes the
swap and removes orphaned temporary directories.
"""

from __future__ import annotations

import random
import shutil
from pathlib import Path

import numpy as np
import torch

from ..core.io import (
    load_json,
    load_tensors,
    readable_directory,
    recover_directory,
    save_json,
    save_tensors,
    swap_directory,
    temp_directory,
)

CHECKPOINTS = ("last", "best")
MARKER = "state.json"  # written last: a directory holding it is a whole checkpoint


def optimizer_state(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    state = optimizer.state_dict()
    tensors, scalars = {}, {}
    for index, values in state["state"].items():
        for key, value in values.items():
            if isinstance(value, torch.Tensor):
                tensors[f"state.{index}.{key}"] = value
            else:
                scalars[f"{index}.{key}"] = value
    groups = [{k: (list(v) if isinstance(v, tuple) else v) for k, v in g.items()} for g in state["param_groups"]]
    return tensors, {"param_groups": groups, "scalars": scalars}


def load_optimizer_state(optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], meta: dict) -> None:
    state: dict[int, dict] = {}
    for name, value in tensors.items():
        _, index, key = name.split(".", 2)
        state.setdefault(int(index), {})[key] = value
    for name, value in meta["scalars"].items():
        index, key = name.split(".", 1)
        state.setdefault(int(index), {})[key] = value
    groups = [{k: (tuple(v) if k == "betas" else v) for k, v in g.items()} for g in meta["param_groups"]]
    optimizer.load_state_dict({"state": state, "param_groups": groups})


def rng_state() -> tuple[dict[str, torch.Tensor], dict]:
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    tensors = {"torch": torch.get_rng_state(), "numpy_keys": torch.from_numpy(keys.astype(np.int64))}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"cuda.{i}"] = s
    version, internal, gauss_next = random.getstate()
    meta = {"numpy": {"kind": kind, "pos": int(pos), "has_gauss": int(has_gauss), "gauss": float(gauss)},
            "python": {"version": version, "state": list(internal), "gauss_next": gauss_next}}
    return tensors, meta


def set_rng_state(tensors: dict[str, torch.Tensor], meta: dict) -> None:
    torch.set_rng_state(tensors["torch"].to(torch.uint8))
    n = meta["numpy"]
    np.random.set_state((n["kind"], tensors["numpy_keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["gauss"]))
    p = meta["python"]
    random.setstate((p["version"], tuple(p["state"]), p["gauss_next"]))
    cuda = [tensors[f"cuda.{i}"] for i in range(len(tensors)) if f"cuda.{i}" in tensors]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.to(torch.uint8) for s in cuda[: torch.cuda.device_count()]])


def save_checkpoint(directory: str | Path, *, model, optimizer, scheduler, state: dict) -> None:
    """Write the checkpoint atomically into `directory` (replacing any previous one)."""
    directory = Path(directory)
    tmp = temp_directory(directory)
    try:
        model.save_adapters(tmp)
        opt_tensors, opt_meta = optimizer_state(optimizer)
        save_tensors(tmp / "optimizer.safetensors", opt_tensors)
        save_json(tmp / "optimizer.json", opt_meta)
        save_json(tmp / "scheduler.json", scheduler.state_dict())
        rng_tensors, rng_meta = rng_state()
        save_tensors(tmp / "rng.safetensors", rng_tensors)
        save_json(tmp / "rng.json", rng_meta)
        save_json(tmp / MARKER, state)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    swap_directory(tmp, directory)


def recover_checkpoints(checkpoints: str | Path) -> None:
    """Finish any checkpoint swap a crash interrupted under `checkpoints/` and remove orphaned
    temporary directories (call once, on one process, before reading or writing checkpoints)."""
    for name in CHECKPOINTS:
        recover_directory(Path(checkpoints) / name)


def find_checkpoint(directory: str | Path) -> Path:
    """The whole checkpoint at `directory`, wherever a crash left its swap (see core/io.py)."""
    directory = Path(directory)
    found = readable_directory(directory, MARKER)
    if (found / MARKER).exists():
        return found
    raise FileNotFoundError(f"{directory}: no checkpoint here (expected {MARKER} from a training run)")


def load_checkpoint(directory: str | Path, *, model, optimizer, scheduler, device: str = "cpu") -> dict:
    """Restore model adapters, optimiser, scheduler and RNG states; returns state.json."""
    directory = find_checkpoint(directory)
    model.load_adapter_state_dict(load_tensors(directory / "adapters.safetensors", device=device))
    load_optimizer_state(optimizer, load_tensors(directory / "optimizer.safetensors", device=device),
                         load_json(directory / "optimizer.json"))
    scheduler.load_state_dict(load_json(directory / "scheduler.json"))
    set_rng_state(load_tensors(directory / "rng.safetensors"), load_json(directory / "rng.json"))
    return load_json(directory / "state.json")
