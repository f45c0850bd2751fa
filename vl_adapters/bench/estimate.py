"""How long a grid will take, said before it starts: a few timed training steps of each row and task.

A row's cost per step spans three orders of magnitude on a CPU (docs/benchmark.md), so the estimate is
measured here, on this machine, with the protocol's own training function. It counts training only (the
evaluation of a job is short beside its training) and not the shuffled-training control, whose row is
chosen after the grid has run; the control costs about as much again as the row it copies.
"""

from __future__ import annotations

import dataclasses
import heapq
import time
from collections import Counter

from .protocol import BenchConfig, train_model

PROBE_STEPS = 3  # timed steps per row and task, after one untimed step (first-call allocations)


def seconds_per_step(backbone, row, task: str, part, cfg: BenchConfig, *, steps: int = PROBE_STEPS) -> float:
    """Seconds per training step of `row` on `task` (this process, its current threads)."""
    import vl_adapters as vla

    model = vla.wrap(backbone, list(row.adapters), task=task)
    marks: list[float] = []
    train_model(model, part, dataclasses.replace(cfg, steps=steps + 1), 0, view=row.train_view,
                on_step=lambda _: marks.append(time.perf_counter()))
    return (marks[-1] - marks[0]) / steps


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


def estimate(backbone, rows, jobs: list[tuple[int, str, int]], part, cfg: BenchConfig, workers: int,
             log=print) -> float:
    """Log each row's measured cost and the grid's estimated wall time for `jobs` (row index, task, seed)
    in their run order; returns that wall time in seconds."""
    wanted = sorted({(i, task) for i, task, _ in jobs if rows[i].train})
    if not wanted:
        return 0.0
    log(f"[bench] timing {PROBE_STEPS} training steps of each row and task to estimate the run ...")
    per_step = {key: seconds_per_step(backbone, rows[key[0]], key[1], part, cfg) for key in wanted}
    costs = [per_step[(i, task)] * cfg.steps if rows[i].train else 0.0 for i, task, _ in jobs]
    total = makespan(costs, workers)
    row_seconds = Counter()
    for (i, _, _), cost in zip(jobs, costs, strict=True):
        row_seconds[i] += cost
    for i in sorted({i for i, _ in wanted}, key=lambda i: -row_seconds[i]):
        steps = ", ".join(f"{task} {per_step[(i, task)]:.3f} s" for j, task in wanted if j == i)
        log(f"[bench]   {rows[i].name}: {steps} per step; {duration(row_seconds[i])} of training for its jobs")
    log(f"[bench] estimate: about {duration(total)} for {len(jobs)} jobs on {workers} worker{'s' * (workers > 1)}, training only, "
        "plus the shuffled-training control (about as long again as the row it copies). "
        "--adapters runs a subset; a stopped run resumes from its finished jobs.")
    return total
