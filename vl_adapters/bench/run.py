"""`vl-adapters bench`: an ablation grid (rows x task heads x seeds) on any dataset and backbone.

The run: read the training config (`--config`, or the synthetic preset, which first writes its data),
build the grid from the registry, write the frozen features once (bench/frozen.py), time a few steps of
each row and say how long the grid will take, then run every job through the library's trainer
(bench/jobs.py) wherever the launcher puts it (bench/launch.py), pick the shuffled-training control on
the validation split, run it, and write the report (bench/report.py). Finished jobs are kept under
<out>/jobs and read back, so a stopped run resumes and a finished folder trains nothing.

Jobs on the CPU run at one thread each, so the numbers do not depend on the number of workers or on
thread scheduling: the same command gives the same results.json, bit for bit.
"""

from __future__ import annotations

import hashlib
import os
import sys
import time
from pathlib import Path

import torch

from vl_adapters.core.io import save_text

from .config import BenchSettings, load_bench
from .estimate import duration, job_steps, makespan, measure
from .frozen import prepare_caches, reads_frames
from .grid import GridRow, build_grid, shuffled_control
from .jobs import Job, job_spec, shared_backbone, task_config, write_job

PROGRESS_SECONDS = 600.0  # a job still training says how far it is at most this often
ASK_SECONDS = 3600.0  # a grid estimated longer than this starts only once the user says so


def source_fingerprint() -> str:
    """A hash of the package's source: a finished job is reused only by the same code."""
    package = Path(__file__).resolve().parents[1]
    digest = hashlib.sha256()
    for path in sorted(package.rglob("*.py")):
        digest.update(str(path.relative_to(package)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


class Progress:
    """Each job's on_step callback: its step and the time left, at most once per `every` seconds."""

    def __init__(self, every: float = PROGRESS_SECONDS, clock=time.perf_counter) -> None:
        self.every, self.clock = every, clock

    def __call__(self, directory: str):
        from vl_adapters.core.io import load_json

        from .jobs import JOB_FILE

        spec = load_json(Path(directory) / JOB_FILE)
        label = f"{spec['row']['name']} / {spec['task']} / seed {spec['seed']}"
        start = last = self.clock()
        every, clock = self.every, self.clock

        def on_step(step: int, total: int) -> None:
            nonlocal last
            now = clock()
            if now - last >= every and step < total:
                last = now
                left = (now - start) / step * (total - step)
                print(f"[bench] {label}: step {step}/{total}, about {duration(left)} left", flush=True)

        return on_step


def task_configs(base: dict, settings: BenchSettings) -> dict[str, dict]:
    """task head -> its resolved training config (a mapping): the base with the task's overrides, the
    bench's test split, and `data.eval_split: auto` resolved (the dataset's validation split, or the test
    split when it has none)."""
    from vl_adapters.train.config import TrainConfig
    from vl_adapters.train.data import selection_split

    tasks = settings.tasks or {_task_name(base.get("model", {}).get("task", "retrieval")): {}}
    out = {}
    for task, overrides in tasks.items():
        config = TrainConfig.from_dict(task_config(base, task, overrides))
        config.data.test_split = settings.test_split
        config.data.eval_split = selection_split(config.data)[0]
        out[task] = config.to_dict()
    return out


def _task_name(task) -> str:
    return task["type"] if isinstance(task, dict) else task


def run_bench(out: str | Path, *, config: str | Path | None = None, preset: str = "default",
              changes: dict | None = None, data_dir: str | Path | None = None, estimate_only: bool = False,
              yes: bool = False, log=print) -> dict:
    """Run (or resume) the grid into `out`. `config`: a training config file with an optional `bench:`
    section; None runs the synthetic preset (`preset`: default, full, tiny), generating its data in
    `data_dir` (default <out>/data). `changes`: bench settings that override the file's."""
    from vl_adapters.train.config import TrainConfig
    from vl_adapters.train.trainer import resolve_device

    from .presets import prepare_data, synthetic_config

    wall = time.perf_counter()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    stages: dict[str, float] = {}
    synthetic = None
    if config is None:
        root = Path(data_dir) if data_dir else out / "data"
        stages["generate"] = prepare_data(root, preset, workers=min(os.cpu_count() or 1, 4), log=log)
        synthetic = synthetic_config(root, preset)
        import yaml

        save_text(out / "config.yaml", yaml.safe_dump(synthetic, sort_keys=False))
        config = out / "config.yaml"
    base, settings = load_bench(config, changes or {})
    configs = task_configs(base, settings)
    first = TrainConfig.from_dict(next(iter(configs.values())))
    rows, notes = build_grid(settings.adapters or None, all_adapters=settings.all_adapters, controls=settings.controls)
    device = resolve_device(first.device)
    if device.type == "cpu":
        torch.set_num_threads(os.cpu_count() or 1)  # the frozen work uses every core; jobs use one each
    backbone = shared_backbone(first, device)  # loaded before any worker forks: shared copy-on-write
    validation = bool(first.data.eval_split) and first.data.eval_split != settings.test_split
    splits = {task: [c["data"]["train_split"], *([c["data"]["eval_split"]] if validation else []), settings.test_split]
              for task, c in configs.items()}
    start = time.perf_counter()
    caches = prepare_caches({t: TrainConfig.from_dict(c) for t, c in configs.items()}, splits, rows,
                            Path(settings.cache) if settings.cache else out / "cache", backbone, log)
    stages["frozen_features"] = time.perf_counter() - start
    if not validation:
        notes.append(f"no validation split (data.eval_split is {first.data.eval_split!r}): every job reports its "
                     "last epoch, QB-Norm uses its default beta (20) and there is no shuffled-training control")
    grid = Grid(out, settings, configs, caches, device, source_fingerprint(), validation)
    jobs = grid.jobs(rows)
    start = time.perf_counter()
    todo = [job for job in jobs if not grid.is_done(job)]
    costs = grid.estimate(todo, backbone, log) if todo else {}
    stages["estimate"] = time.perf_counter() - start
    seconds = makespan([costs[j] for j in grid.order(todo, costs)], grid.parallel)
    if todo:
        log(f"[bench] estimate: about {duration(seconds)} for {len(todo)} jobs on {grid.parallel} "
            f"worker{'s' * (grid.parallel > 1)}" + (f" ({len(jobs) - len(todo)} finished before: read back)"
                                                     if len(jobs) > len(todo) else "")
            + (", plus the shuffled-training control" if settings.controls and validation else ""))
    if estimate_only:
        return {"estimate_seconds": seconds, "rows": [row.name for row in rows], "jobs": len(todo)}
    if todo and seconds > ASK_SECONDS and not yes:
        _confirm(seconds, log)
    start = time.perf_counter()
    results, failed = grid.run(grid.order(todo, costs), jobs, costs, log)
    if settings.controls and validation:
        control = shuffled_control(rows, grid.validation_scores(rows, results))
        if control is not None:
            rows.append(control)
            log(f"[bench] shuffled-training control: {control.name} (best validation {grid.control_metric})")
            more = grid.jobs([control], index=len(rows) - 1)
            found, lost = grid.run([j for j in more if not grid.is_done(j)], more, {}, log)
            results.update(found)
            failed += lost
    stages["train_and_evaluate"] = time.perf_counter() - start
    from .report import summarise, write_results

    summary = summarise(rows, results, settings, configs, grid, notes, synthetic=synthetic is not None)
    stages["total"] = time.perf_counter() - wall
    paths = write_results(out, summary, grid.timing(rows, results, stages), log=log)
    if failed:
        log(f"[bench] {len(failed)} job(s) failed: {', '.join(failed)}; their errors are in <job>/error.txt. "
            "Run the same command again to retry them.")
    log(f"[bench] wall time {duration(stages['total'])}; wrote {', '.join(str(p) for p in paths.values())}")
    return {"summary": summary, "paths": {k: str(v) for k, v in paths.items()}, "failed": failed}


def _confirm(seconds: float, log) -> None:
    message = (f"the grid is estimated at {duration(seconds)}; run it with --yes (or fewer rows with --adapters, "
               "or --estimate to see the cost per row)")
    if not sys.stdin.isatty():
        from .config import BenchError

        raise BenchError(message)
    answer = input(f"[bench] {message}. Start now? [y/N] ").strip().lower()
    if answer not in ("y", "yes"):
        raise SystemExit(0)


class Grid:
    """The jobs of one bench run: their directories, specs, estimate, order and results."""

    def __init__(self, out: Path, settings: BenchSettings, configs: dict, caches: dict, device, source: str,
                 validation: bool) -> None:
        self.out, self.settings, self.configs, self.caches = out, settings, configs, caches
        self.device, self.source, self.validation = device, source, validation
        self.parallel = len(settings.devices) if settings.devices else (
            1 if settings.nproc_per_job > 1 else settings.workers)
        self.control_metric = settings.control_metric or f"{next(iter(configs))}/{_default_metric(next(iter(configs)))}"
        self.specs: dict[Job, dict] = {}
        self.rows: list[GridRow] = []

    def jobs(self, rows: list[GridRow], index: int = 0) -> list[Job]:
        """Every (row, task, seed) job of `rows` (zero-shot rows: the first seed only), written to disk."""
        found = []
        for seed in self.settings.seeds:
            for i, row in enumerate(rows, start=index):
                if not row.train and seed != self.settings.seeds[0]:
                    continue
                for task, config in self.configs.items():
                    job = Job(i, row, task, seed)
                    directory = self.directory(job)
                    evaluation = {"test_split": self.settings.test_split, "shuffle_test": self.settings.shuffle_test,
                                  "normalise": list(self.settings.normalise),
                                  "querybank_size": self.settings.querybank_size}
                    cache = None if reads_frames(row) else self.caches[task]
                    spec = job_spec(config, job, run_dir=directory, cache=cache, evaluation=evaluation,
                                    threads=1 if self.device.type == "cpu" else None, source=self.source,
                                    validation=self.validation)
                    write_job(directory, spec)
                    self.specs[job] = spec
                    found.append(job)
        return found

    def directory(self, job: Job) -> Path:
        return self.out / "jobs" / job.slug

    def is_done(self, job: Job) -> bool:
        from .jobs import finished

        return finished(self.directory(job)) is not None

    def estimate(self, jobs: list[Job], backbone, log) -> dict[Job, float]:
        """Seconds per job: a few timed steps of each (row, task), times the job's steps, plus evaluation."""
        from vl_adapters.train.trainer import build_split

        probes = {}
        for job in jobs:
            if job.row.train and (job.row.name, job.task) not in probes:
                probes[(job.row.name, job.task)] = self.specs[job]["config"]
        per_step = measure(probes, backbone, log, workers=self.parallel if self.device.type == "cpu" else 1)
        sizes = {}
        for task, config in self.configs.items():
            from vl_adapters.train.config import TrainConfig

            cfg = TrainConfig.from_dict(config)
            count = {split: len(build_split(cfg, split, size=backbone.dims.image_size, train=False))
                     for split in {cfg.data.train_split, cfg.data.eval_split, self.settings.test_split} if split}
            evals = count.get(cfg.data.eval_split, 0) * (cfg.epochs + 1) + 2 * count[self.settings.test_split]
            sizes[task] = (count[cfg.data.train_split], evals)
        costs = {}
        for job in jobs:
            steps, eval_units = job_steps(self.specs[job]["config"], *sizes[job.task])
            step = per_step.get((job.row.name, job.task))
            if step is None:  # zero-shot: evaluation only, at the cheapest trained row's speed
                step = min(per_step.values(), default=0.01)
                steps = 0
            costs[job] = step * (steps + eval_units)
        rows = {}
        for job, cost in costs.items():
            rows.setdefault(job.row.name, [0.0, {}])[0] += cost
            if (job.row.name, job.task) in per_step:
                rows[job.row.name][1][job.task] = per_step[(job.row.name, job.task)]
        for name, (total, steps) in sorted(rows.items(), key=lambda item: -item[1][0]):
            shown = ", ".join(f"{task} {s:.3f} s" for task, s in steps.items())
            log(f"[bench]   {name}: {shown + ' per step; ' if shown else ''}{duration(total)} for its jobs")
        return costs

    def order(self, jobs: list[Job], costs: dict[Job, float]) -> list[Job]:
        """Seed by seed, cheapest first: a stop keeps whole seeds of the cheap rows, and every row's first
        seed comes before any row's second. The last seed goes dearest first, so the workers finish
        together instead of one running the dearest job alone (the shuffled-training control waits for
        every job)."""
        last = max((self.settings.seeds.index(j.seed) for j in jobs), default=0)

        def key(job: Job):
            seed, cost = self.settings.seeds.index(job.seed), costs.get(job, 0.0)
            return seed, -cost if seed == last else cost, job.row_index, job.task

        return sorted(jobs, key=key)

    def run(self, todo: list[Job], jobs: list[Job], costs: dict[Job, float], log) -> tuple[dict, list[str]]:
        from tqdm.auto import tqdm

        from .jobs import finished
        from .launch import run_jobs

        results = {job: finished(self.directory(job)) for job in jobs if job not in todo}
        results = {job: found for job, found in results.items() if found is not None}
        by_dir = {str(self.directory(job)): job for job in todo}
        failed: list[str] = []
        left = sum(costs.get(j, 0.0) for j in todo)
        bar = tqdm(total=len(todo), unit="job", desc="bench", disable=not sys.stderr.isatty() or os.environ.get("CI"))
        say = bar.write if not bar.disable else log

        count = 0

        def on_done(directory, result, error):
            nonlocal left, count
            job = by_dir[directory]
            left -= costs.get(job, 0.0)
            count += 1
            bar.update(1)
            if result is None:
                failed.append(job.label)
                save_text(Path(directory) / "error.txt", (error or "") + "\n")
                say(f"[bench] {job.label}: FAILED ({(error or '').strip().splitlines()[-1:] or ['?']})")
                return
            results[job] = result
            remaining = f"; about {duration(left / self.parallel)} left" if left > 0 else ""
            say(f"[bench] {job.label}: {_headline(job.task, result['metrics'])} "
                f"({result['seconds']['total']:.1f}s; {count}/{len(todo)} jobs done{remaining})")

        run_jobs([str(self.directory(j)) for j in todo], self.settings, out=self.out, on_done=on_done,
                 progress=Progress())
        bar.close()
        return results, failed

    def validation_scores(self, rows: list[GridRow], results: dict) -> dict[str, float]:
        """row name -> the control metric on the validation split, mean over the seeds that finished."""
        task, _, metric = self.control_metric.partition("/")
        scores = {}
        for row in rows:
            found = [r["metrics"].get(f"val/{metric}") for j, r in results.items() if j.row == row and j.task == task]
            if found and None not in found:
                scores[row.name] = sum(found) / len(found)
        return scores

    def timing(self, rows: list[GridRow], results: dict, stages: dict) -> dict:
        return {"workers": self.parallel, "cpu_count": os.cpu_count(), "device": str(self.device),
                "stages_seconds": stages,
                "jobs": [{"row": j.row.name, "task": j.task, "seed": j.seed, **r["seconds"], "cost": r["cost"]}
                         for j, r in sorted(results.items(), key=lambda item: (item[0].row_index, item[0].task,
                                                                               item[0].seed))]}


def _default_metric(task: str) -> str:
    from vl_adapters.train.evaluate import default_metric

    return default_metric(task)


def _headline(task: str, metrics: dict) -> str:
    for key in ("accuracy/temporal", "t2v_R@1/temporal", "accuracy", "t2v_R@1"):
        if key in metrics:
            return f"{key} {metrics[key]:.1f}"
    return ""

