"""Fault injection: a training run and an extraction are SIGKILLed after every rename they make and at
random instants; whatever the instant, the checkpoints load, the run resumes to the same weights and
the same metrics.jsonl as an uninterrupted run (no line twice), the extraction resumes to the same
arrays, and no temporary directory is left behind.

Each run to kill is a child forked from a fork server that has imported torch and vl_adapters but run
no torch op (a process forked after OpenMP has started its threads can hang), so a kill costs a fork
rather than an interpreter start. A child kills itself right after its n-th os.replace (every atomic
file write and every step of a checkpoint swap is one), for n = 1, 2, ... until a run ends unkilled.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import random
import signal
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from _toy_data import ToyRetrievalDataset

import vl_adapters as vla
from vl_adapters.core.io import load_tensors

pytestmark = pytest.mark.slow
ADAPTER = {"type": "temporal_transformer", "layers": 1, "heads": 2, "dropout": 0.1}
TALLY = {"train": {"kills": 0, "recovered": 0}, "extract": {"kills": 0, "recovered": 0}}


@pytest.fixture(scope="module")
def context():
    """A fork server that has imported what the children need and started no OpenMP thread."""
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["torch", "vl_adapters", "vl_adapters.train.trainer", "vl_adapters.data.cache",
                                "vl_adapters.adapters.temporal_transformer", "open_clip.model", "open_clip.tokenizer",
                                "_toy_data"])
    yield ctx
    print(f"\nfault injection: {json.dumps(TALLY)}")


# ---- what the children run -------------------------------------------------------------------------
def _die_after_renames(count: int) -> list[int]:
    """From now on, SIGKILL this process right after its `count`-th os.replace (0: never)."""
    import threading

    from tqdm import tqdm

    tqdm.set_lock(threading.RLock())  # not tqdm's multiprocessing lock: a kill would leak its semaphore
    real, done = os.replace, [0]

    def replace(src, dst, *args, **kwargs):
        real(src, dst, *args, **kwargs)
        done[0] += 1
        if done[0] == count:
            os.kill(os.getpid(), signal.SIGKILL)

    os.replace = replace
    return done


def _trainer(run_dir):
    from vl_adapters.train.config import load_config
    from vl_adapters.train.trainer import Trainer

    config = load_config(overrides={
        "run_dir": str(run_dir), "epochs": 2, "seed": 3, "progress": False, "log_every": 1, "device": "cpu",
        "data.batch_size": 4, "data.eval_batch_size": 8, "data.num_workers": 0, "optim.lr": 1e-2,
        "model.adapters": [ADAPTER]})
    torch.manual_seed(config.seed)
    model = vla.wrap(vla.load_backbone("tiny", device="cpu"), config.model.adapters, task="retrieval")
    return Trainer(config, model=model, train_dataset=ToyRetrievalDataset(6),
                   eval_dataset=ToyRetrievalDataset(5, seed=1))


def _train(run_dir, kill_after, counted=None):
    torch.set_num_threads(1)
    done = _die_after_renames(kill_after)
    _trainer(run_dir).fit()
    if counted is not None:
        counted.value = done[0]


def _extract(out, kill_after, counted=None):
    from vl_adapters.data.cache import extract_features

    torch.set_num_threads(1)
    done = _die_after_renames(kill_after)
    extract_features(ToyRetrievalDataset(7), vla.load_backbone("tiny", device="cpu"), out, sampler="uniform",
                     num_frames=4, batch_size=3, progress=False)
    if counted is not None:
        counted.value = done[0]


def _run(ctx, target, *args, kill_at: float | None = None) -> bool:
    """Run target(*args) in a child; True when it was SIGKILLed (by itself, or by us after kill_at s)."""
    child = ctx.Process(target=target, args=args)
    child.start()
    if kill_at is not None:
        child.join(kill_at)
        if child.is_alive():
            os.kill(child.pid, signal.SIGKILL)
    child.join(120)
    assert child.exitcode in (0, -signal.SIGKILL), f"child failed with exit code {child.exitcode}"
    return child.exitcode == -signal.SIGKILL


def _renames(ctx, target, path) -> int:
    counted = ctx.Value("i", -1)
    assert not _run(ctx, target, path, 0, counted)
    assert counted.value > 0
    return counted.value


# ---- checks after a kill ----------------------------------------------------------------------------
def _records(run_dir):
    lines = (Path(run_dir) / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if k != "time"} for line in lines]


def _leftovers(run_dir) -> list[str]:
    names = [p.name for p in Path(run_dir).glob(".*")] + [p.name for p in Path(run_dir, "checkpoints").glob(".*")]
    return sorted(names)


@pytest.fixture(autouse=True)
def one_thread():
    """Recovery runs here with the children's thread count: a different number of threads sums in a
    different order, and the comparison with the reference is bit for bit."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _recover_training(run_dir, reference) -> None:
    """Load every checkpoint as it is, resume the run to its end, compare it with the reference run."""
    for which in ("last", "best"):
        try:
            from vl_adapters.train.checkpoint import find_checkpoint

            find_checkpoint(run_dir / "checkpoints" / which)
        except FileNotFoundError:
            continue
        model = vla.load_adapters(run_dir / "checkpoints" / which)  # loads wherever the swap stood
        assert not model.training
    trainer = _trainer(run_dir)
    if (run_dir / "config.json").exists():
        trainer.resume()
    trainer.fit()
    weights = load_tensors(run_dir / "checkpoints" / "last" / "adapters.safetensors")
    for name, tensor in reference["weights"].items():
        assert torch.equal(weights[name], tensor), f"{name} differs from the uninterrupted run"
    assert _records(run_dir) == reference["records"]  # nothing lost, no line twice
    assert json.loads((run_dir / "report.json").read_text())["finished"]
    assert _leftovers(run_dir) == []  # no .tmp, .new or .old left behind


def _recover_extraction(out, reference) -> None:
    from vl_adapters.data.cache import FeatureCache, extract_features

    extract_features(ToyRetrievalDataset(7), vla.load_backbone("tiny", device="cpu"), out, sampler="uniform",
                     num_frames=4, batch_size=3, progress=False)
    cache = FeatureCache(out)
    for name in ("frame_emb", "frame_mask", "patch_tokens"):
        assert np.array_equal(getattr(cache, name), reference[name]), name
    assert not [p.name for p in Path(out).iterdir() if p.name.endswith((".tmp", ".partial"))]


@pytest.fixture(scope="module")
def training_reference(context, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("reference") / "run"
    renames = _renames(context, _train, run_dir)
    return {"renames": renames, "records": _records(run_dir),
            "weights": load_tensors(run_dir / "checkpoints" / "last" / "adapters.safetensors"),
            "seconds": _timed(context, _train, tmp_path_factory.mktemp("timed") / "run")}


@pytest.fixture(scope="module")
def extraction_reference(context, tmp_path_factory):
    from vl_adapters.data.cache import FeatureCache

    out = tmp_path_factory.mktemp("reference") / "cache"
    renames = _renames(context, _extract, out)
    cache = FeatureCache(out)
    reference = {name: np.array(getattr(cache, name)) for name in ("frame_emb", "frame_mask", "patch_tokens")}
    return {"renames": renames, **reference,
            "seconds": _timed(context, _extract, tmp_path_factory.mktemp("timed") / "cache")}


def _timed(ctx, target, path) -> float:
    start = time.perf_counter()
    _run(ctx, target, path, 0)
    return time.perf_counter() - start


# ---- the tests ----------------------------------------------------------------------------------------
def _kill_after_every_rename(context, target, recover, reference, tmp_path, kind) -> None:
    for n in range(1, reference["renames"] + 1):
        path = tmp_path / f"kill{n}"
        assert _run(context, target, path, n), f"the {kind} run was not killed at rename {n}"
        TALLY[kind]["kills"] += 1
        recover(path, reference)
        TALLY[kind]["recovered"] += 1


def _kill_at_random_instants(context, target, recover, reference, tmp_path, kind, seed, times=8) -> None:
    rng = random.Random(seed)
    for i in range(times):
        path = tmp_path / f"random{i}"
        killed = _run(context, target, path, 0, kill_at=rng.uniform(0.05, reference["seconds"]))
        TALLY[kind]["kills"] += killed
        recover(path, reference)
        TALLY[kind]["recovered"] += killed


def test_training_killed_after_every_rename_resumes_exactly(context, training_reference, tmp_path):
    assert training_reference["renames"] >= 30  # 4 checkpoints of ~12 renames, config and report files
    _kill_after_every_rename(context, _train, _recover_training, training_reference, tmp_path, "train")


@pytest.mark.determinism
def test_training_killed_at_random_instants_resumes_exactly(context, training_reference, tmp_path):
    _kill_at_random_instants(context, _train, _recover_training, training_reference, tmp_path, "train", seed=13)


def test_extraction_killed_after_every_rename_resumes_to_the_same_arrays(context, extraction_reference, tmp_path):
    assert extraction_reference["renames"] >= 8  # index writes, 3 array renames, the final index
    _kill_after_every_rename(context, _extract, _recover_extraction, extraction_reference, tmp_path, "extract")


@pytest.mark.determinism
def test_extraction_killed_at_random_instants_resumes_to_the_same_arrays(context, extraction_reference, tmp_path):
    _kill_at_random_instants(context, _extract, _recover_extraction, extraction_reference, tmp_path, "extract",
                             seed=17)
