"""`vl-adapters bench`: the ablation grid on the synthetic temporal benchmark (docs/benchmark.md).

The run: generate the data (once per data directory), decode and encode it once (bench/data.py),
then every (row, task, seed) job through the same protocol (bench/protocol.py), spread over worker
processes that each use one thread, so the numbers do not depend on the number of workers or on
thread scheduling: the same command gives the same results.json, bit for bit.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
import time
from pathlib import Path

import torch

from .estimate import duration, estimate
from .evaluate import normalisation
from .grid import GridRow, build_grid, shuffled_control
from .protocol import TASKS, BenchConfig, run_task

BACKBONE = "tiny:synthetic"

PRESETS = {
    "default": BenchConfig(),
    "full": BenchConfig(num_train_pairs=4000, num_val_pairs=100, num_test_pairs=500, steps=9600, rerank_k=20),
    "tiny": BenchConfig(num_train_pairs=6, num_val_pairs=2, num_test_pairs=3, num_frames=4, steps=3, batch_size=4,
                        rerank_k=2, qb_bank_size=4, curve_window=1, seeds=(0, 1)),
}

# The state a forked worker reads (set by run_bench before the pool starts; copy-on-write).
_STATE: dict = {}
PROGRESS_SECONDS = 600.0  # a job still training says how far it is at most this often


def prepare_data(root: Path, cfg: BenchConfig, workers: int, log) -> None:
    """Write the synthetic benchmark to `root` unless it already holds the same configuration."""
    from vl_adapters.data.synthetic import generate

    # videos as long as the frames the bench feeds: sampling fewer frames than a video has would give a
    # video and its backward twin different frames, and order-blind pooling a way to tell them apart
    wanted = {"num_train_pairs": cfg.num_train_pairs, "num_val_pairs": cfg.num_val_pairs,
              "num_test_pairs": cfg.num_test_pairs, "num_frames": cfg.num_frames, "seed": cfg.data_seed}
    meta = root / "meta.json"
    have = json.loads(meta.read_text())["config"] if meta.exists() else {}
    if any(have.get(k) != v for k, v in wanted.items()):
        start = time.perf_counter()
        generate(root, workers=workers, **wanted)
        pairs = cfg.num_train_pairs + cfg.num_val_pairs + cfg.num_test_pairs
        log(f"[bench] generated {2 * pairs} videos in {time.perf_counter() - start:.1f}s under {root}")


def source_fingerprint() -> str:
    """A hash of the package's source: a finished job is reused only by the same code."""
    package = Path(__file__).resolve().parents[1]
    digest = hashlib.sha256()
    for path in sorted(package.rglob("*.py")):
        digest.update(str(path.relative_to(package)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def _job_file(row: GridRow, task: str, seed: int) -> Path:
    """Where a finished job is kept: a long run that stops resumes from the jobs it finished."""
    state = _STATE
    key = json.dumps({"row": dataclasses.asdict(row), "task": task, "seed": seed, "run": state["run_key"]},
                     sort_keys=True)
    return state["jobs_dir"] / f"{hashlib.sha256(key.encode()).hexdigest()[:20]}.json"


def progress(label: str, steps: int, log, *, every: float = PROGRESS_SECONDS, clock=time.perf_counter):
    """An on_step callback that logs `label`'s step and the time left, at most once per `every` seconds."""
    start = clock()
    last = start

    def on_step(step: int) -> None:
        nonlocal last
        now = clock()
        if now - last >= every and step < steps:
            last = now
            log(f"[bench] {label}: step {step}/{steps}, about {duration((now - start) / step * (steps - step))} left")

    return on_step


def _job(job: tuple[int, str, int]) -> tuple[tuple[int, str, int], dict]:
    row_index, task, seed = job
    state = _STATE
    row = state["rows"][row_index]
    on_step = progress(f"{row.name} / {task} / seed {seed}", state["cfg"].steps, state["log"])
    result = run_task(state["backbone"], row, task, state["data"], state["cfg"], seed, normalise=state["normalise"],
                      on_step=on_step)
    path = _job_file(row, task, seed)
    path.with_suffix(".partial").write_text(json.dumps(result))
    path.with_suffix(".partial").replace(path)
    return job, result


def _finished(jobs: list[tuple[int, str, int]]) -> dict:
    """The jobs an earlier run of the same command on the same code finished, read back."""
    rows = _STATE["rows"]
    paths = {job: _job_file(rows[job[0]], job[1], job[2]) for job in jobs}
    return {job: json.loads(path.read_text()) for job, path in paths.items() if path.exists()}


def _run_jobs(jobs: list[tuple[int, str, int]], workers: int, log, done: dict | None = None) -> dict:
    """Run jobs in `workers` forked processes (one thread each), or here when workers is 1; a job
    finished by an earlier run of the same command on the same code is read back instead (`done`: those
    already read, when the caller has)."""
    rows = _STATE["rows"]
    done = _finished(jobs) if done is None else dict(done)
    if done:
        log(f"[bench] {len(done)} jobs finished by an earlier run of this command: read back")
    jobs = [job for job in jobs if job not in done]
    total = len(done) + len(jobs)

    def report(job, result):
        row, task, seed = job
        done[job] = result
        m = result["metrics"]
        shown = (f"temporal t2v R@1 {m['temporal/t2v_R@1']:.1f}" if task == "retrieval"
                 else f"MC temporal {m['mc/temporal']:.1f}")
        log(f"[bench] {rows[row].name} / {task} / seed {seed}: {shown} ({result['seconds']['total']:.1f}s; "
            f"{len(done)}/{total} jobs done)")

    if workers == 1:
        for job in jobs:
            report(*_job(job))
        return done
    import multiprocessing as mp

    with mp.get_context("fork").Pool(workers, initializer=torch.set_num_threads, initargs=(1,)) as pool:
        for job, result in pool.imap_unordered(_job, jobs):
            report(job, result)
    return done


def run_bench(out: str | Path, cfg: BenchConfig, *, adapters: list[str] | None = None,
              data_dir: str | Path | None = None, workers: int = 2, pretrained: str | None = None,
              estimate_only: bool = False, log=print) -> dict:
    from vl_adapters.backbones import load_backbone

    from .data import load_part
    from .report import SUMMARY, write_results

    wall = time.perf_counter()
    torch.set_num_threads(1)  # before any parallel work: the workers are forked from this process
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    if workers > 1 and "fork" not in __import__("multiprocessing").get_all_start_methods():
        log("[bench] note: no fork on this platform; running in one process")
        workers = 1
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    root = Path(data_dir) if data_dir else out / "data"
    stages = {}
    start = time.perf_counter()
    prepare_data(root, cfg, workers, log)
    stages["generate"] = time.perf_counter() - start
    rows, notes = build_grid(adapters)
    backbone = load_backbone(BACKBONE, pretrained=pretrained, device="cpu")
    start = time.perf_counter()
    parts = ("train", "val", "test") if cfg.num_val_pairs else ("train", "test")
    data = {name: load_part(root, name, backbone, num_frames=cfg.num_frames) for name in parts}
    stages["decode_and_encode"] = time.perf_counter() - start
    log(f"[bench] decoded and encoded {sum(p.num_videos for p in data.values())} videos and their texts in "
        f"{stages['decode_and_encode']:.1f}s")
    normalise, note = normalisation(data, cfg)
    if note:
        notes.append(note)
    for line in notes:
        log(f"[bench] note: {line}")
    run_key = {"cfg": dataclasses.asdict(cfg), "backbone": backbone.fingerprint(), "source": source_fingerprint(),
               "normalise": normalise is not None, "torch": torch.__version__}
    jobs_dir = out / "jobs"
    jobs_dir.mkdir(exist_ok=True)
    _STATE.update(rows=rows, backbone=backbone, data=data, cfg=cfg, normalise=normalise, run_key=run_key,
                  jobs_dir=jobs_dir, log=log)
    jobs = [(i, task, seed) for i, row in enumerate(rows) for seed in (cfg.seeds if row.train else cfg.seeds[:1])
            for task in TASKS][::-1]  # the heaviest rows are last in the grid: start them first
    finished = _finished(jobs)
    start = time.perf_counter()
    seconds = estimate(backbone, rows, [job for job in jobs if job not in finished], data["train"], cfg, workers, log)
    stages["estimate"] = time.perf_counter() - start
    if estimate_only:
        return {"estimate_seconds": seconds, "rows": [row.name for row in rows]}
    start = time.perf_counter()
    done = _run_jobs(jobs, workers, log, finished)
    control = shuffled_control(rows, _validation_scores(rows, done, cfg)) if "val" in data else None
    if control is not None:
        rows.append(control)
        log(f"[bench] shuffled-training control: {control.name} (best validation temporal MC)")
        done.update(_run_jobs([(len(rows) - 1, task, seed) for seed in cfg.seeds for task in TASKS], workers, log))
    stages["train_and_evaluate"] = time.perf_counter() - start
    results = [_row_result(i, row, done, cfg) for i, row in enumerate(rows)]
    meta = {"backbone": BACKBONE, "config": dataclasses.asdict(cfg), "notes": notes, "torch": torch.__version__,
            "counts": _counts(data), "chance": _chance(data["test"]), "summary": SUMMARY}
    stages["total"] = time.perf_counter() - wall
    timing = {"workers": workers, "cpu_count": os.cpu_count(), "stages_seconds": stages,
              "jobs": [{"row": rows[r].name, "task": t, "seed": s, **done[(r, t, s)]["seconds"]}
                       for r, t, s in sorted(done)]}
    paths = write_results(out, results, meta, timing, log=log)
    log(f"[bench] wall time {stages['total']:.0f}s; wrote {', '.join(str(p) for p in paths.values())}")
    return {"results": results, "meta": meta, "timing": timing, "paths": {k: str(v) for k, v in paths.items()}}


def _validation_scores(rows: list[GridRow], done: dict, cfg: BenchConfig) -> dict[str, float]:
    scores = {}
    for i, row in enumerate(rows):
        found = [done[(i, "multiple_choice", s)]["metrics"].get("val/mc/temporal") for s in cfg.seeds
                 if (i, "multiple_choice", s) in done]
        if found and None not in found:
            scores[row.name] = sum(found) / len(found)
    return scores


def _row_result(index: int, row: GridRow, done: dict, cfg: BenchConfig) -> dict:
    runs = []
    for seed in cfg.seeds if row.train else cfg.seeds[:1]:
        parts = {task: done[(index, task, seed)] for task in TASKS}
        metrics = {f"{task}/{k}": v for task, part in parts.items() for k, v in part["metrics"].items()}
        runs.append({"seed": seed, "metrics": metrics,
                     "trainable_params": {t: p["trainable_params"] for t, p in parts.items()},
                     "loss_curve": {t: p["loss_curve"] for t, p in parts.items()}})
    inputs = {done[(index, task, runs[0]["seed"])]["inputs"] for task in TASKS}
    return {"name": row.name, "adapters": list(row.adapters), "trained": row.train, "control": row.control,
            "train_view": row.train_view, "test_view": row.test_view, "inputs": inputs.pop(), "runs": runs}


def _chance(part) -> dict[str, float]:
    """Expected accuracy (percent) of a uniform guess per question kind."""
    from .evaluate import questions

    mask = part.questions.mask
    return {f"mc_{kind}": 100.0 * (1.0 / mask[questions(part, kind)].sum(1).float()).mean().item()
            for kind in ("static", "temporal")}


def _counts(data: dict) -> dict:
    from .evaluate import pool, questions

    counts = {}
    for name, part in data.items():
        counts[name] = {"videos": part.num_videos, "mc_static": len(questions(part, "static")),
                        "mc_temporal": len(questions(part, "temporal")),
                        "static_pool_videos": len(pool(part, "static")[1]),
                        "temporal_pool_videos": len(pool(part, "temporal")[1])}
    return counts


def add_cli(subparsers) -> None:
    p = subparsers.add_parser("bench", help="adapter ablations on the synthetic temporal benchmark (or --suite perf)")
    p.add_argument("--out", default="bench-results", help="results directory (tables, JSON, CSV, PNG, data)")
    p.add_argument("--suite", choices=("ablation", "perf"), default="ablation")
    size = p.add_mutually_exclusive_group()
    size.add_argument("--full", action="store_true", help="larger data and more steps (3 seeds, like the default)")
    size.add_argument("--tiny", action="store_true", help="a miniature grid for CI (seconds)")
    p.add_argument("--adapters", nargs="+", default=None,
                   help="adapters to run instead of the registry's (a+b for a combination); the mean-pooling "
                        "baselines and the controls always run")
    p.add_argument("--steps", type=int, default=None, help="override the preset's optimiser steps per task")
    p.add_argument("--seeds", type=int, nargs="+", default=None, help="override the preset's training seeds")
    p.add_argument("--data-dir", default=None, help="where the synthetic videos live (default OUT/data)")
    p.add_argument("--workers", type=int, default=2,
                   help="worker processes, one thread each (default 2); results do not depend on it")
    p.add_argument("--estimate", action="store_true",
                   help="time a few training steps of each row, print how long the run would take, and stop")
    p.set_defaults(func=_run_cli)


def _run_cli(args) -> int:
    cfg = PRESETS["full" if args.full else "tiny" if args.tiny else "default"]
    changes = {}
    if args.steps is not None:
        changes["steps"] = args.steps
    if args.seeds is not None:
        changes["seeds"] = tuple(args.seeds)
    cfg = dataclasses.replace(cfg, **changes)
    if args.suite == "perf":
        from .perf import run_perf

        run_perf(args.out, adapters=args.adapters, tiny=args.tiny)
        return 0
    # flushed at once: a run's output is often a pipe or a file, and a worker's lines would otherwise wait
    # in its buffer for hours
    run_bench(args.out, cfg, adapters=args.adapters, data_dir=args.data_dir, workers=args.workers,
              estimate_only=args.estimate, log=functools.partial(print, flush=True))
    return 0
