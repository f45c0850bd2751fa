"""How long a grid will take, said before it starts: a few timed training steps of each row and task,
through the same trainer the jobs use, on this machine.

A row's cost per step spans orders of magnitude (docs/benchmark.md), so it is measured, not guessed. A
job's estimate is its optimiser steps times the measured step, plus its evaluation, counted as
EVAL_STEP_FRACTION of a training step per batch of evaluated samples (a forward pass without the
backward; evaluation runs over the validation split each epoch and over the test split twice, in order
and shuffled). The shuffled-training control comes on top: about as long again as the row it copies.
"""

from __future__ import annotations

import heapq
import tempfile
import time

import torch

PROBE_STEPS = 3  # timed steps per row and task, after one untimed step (first-call allocations)
EVAL_STEP_FRACTION = 0.4  # an evaluation batch against a training step (forward only)


def seconds_per_step(config: dict, backbone, *, steps: int = PROBE_STEPS) -> float:
    """Seconds per optimiser step of the job whose training config is `config` (a mapping)."""
    from vl_adapters.train.config import TrainConfig
    from vl_adapters.train.trainer import Trainer

    marks: list[float] = []
    with tempfile.TemporaryDirectory(prefix="vla-estimate-") as run_dir:
        # as many epochs as steps: a split smaller than a batch still gives every step
        probe = TrainConfig.from_dict({**config, "run_dir": run_dir, "max_steps": steps + 1, "epochs": steps + 1,
                                       "eval": {**config["eval"], "every_epoch": False}})
        trainer = Trainer(probe, backbone=backbone, on_step=lambda *_: marks.append(time.perf_counter()), echo=False,
                          test_best=False)
        trainer.fit()
    if len(marks) < 2:
        skipped = len({e["video_id"] for e in trainer.skipped})
        from .config import BenchError

        raise BenchError(f"{probe.data.dataset} under {probe.data.root}: training took {len(marks)} step(s) where "
                         f"{steps + 1} were asked for" + (f"; {skipped} training video(s) could not be read"
                                                          if skipped else "") + " (the split is too small or unreadable)")
    return (marks[-1] - marks[0]) / (len(marks) - 1)


def job_steps(config: dict, train_samples: int, eval_samples: int) -> tuple[int, float]:
    """(optimiser steps, evaluation batches counted in training-step units) of a job."""
    data, epochs = config["data"], config["epochs"]
    per_epoch = -(-train_samples // data["batch_size"])
    steps = min(per_epoch * epochs, config["max_steps"] or per_epoch * epochs)
    eval_batches = -(-eval_samples // data["batch_size"])
    return steps, EVAL_STEP_FRACTION * eval_batches


def makespan(costs: list[float], workers: int) -> float:
    """Wall time of `costs` (seconds per job, in the order they start) on `workers` processes that each
    take the next job when they finish one (how the pool hands them out)."""
    free = [0.0] * max(workers, 1)
    for cost in costs:
        heapq.heapreplace(free, free[0] + cost)
    return max(free)


def duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 2 * 3600:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def measure(probes: dict, backbone, log=print, *, workers: int = 1) -> dict:
    """probe key -> seconds per step, for each (row, task) -> training config to time; timed at one
    thread, as the workers run. workers > 1 (CPU jobs): that many forked processes time the probes side
    by side, as the jobs will run (two jobs on two cores each run slower than one alone)."""
    log(f"[bench] timing {PROBE_STEPS} training steps of each row and task to estimate the run ...")
    import multiprocessing as mp

    items = list(probes.items())
    if workers > 1 and len(items) > 1 and "fork" in mp.get_all_start_methods():
        _PROBE["backbone"] = backbone  # inherited by the forked workers, as the jobs' backbone is
        try:
            with mp.get_context("fork").Pool(min(workers, len(items)), initializer=torch.set_num_threads,
                                             initargs=(1,)) as pool:
                return dict(zip(probes, pool.map(_probe, [config for _, config in items], chunksize=1), strict=True))
        finally:
            _PROBE.clear()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return {key: seconds_per_step(config, backbone) for key, config in items}
    finally:
        torch.set_num_threads(threads)


_PROBE: dict = {}


def _probe(config: dict) -> float:
    return seconds_per_step(config, _PROBE["backbone"])
