"""Where the jobs run. Every launcher calls the same `run_job(directory)` (bench/jobs.py) and reads the
same result.json back, so a grid gives the same results.json wherever it ran.

- CPU workers: `workers` forked processes with one thread each (the frozen backbone is loaded once,
  before the fork, and shared copy-on-write); one worker runs the jobs in this process.
- GPUs (`devices`): one process per device (spawned: CUDA cannot be forked), each taking the next job.
- data-parallel jobs (`nproc_per_job` > 1): each job in turn under torchrun on that many devices.
- Slurm (`launcher: slurm`): every job submitted through submitit (its `slurm` parameters; `cluster:
  local` runs them as local processes, which is how it is tested), then waited for.
A job that fails is reported with its error and the others go on; finished jobs are never rerun.
"""

from __future__ import annotations

import os
import subprocess
import sys
import traceback
from collections.abc import Callable
from pathlib import Path

import torch

from .jobs import run_job

# set in each worker process before it takes jobs
_WORKER: dict = {}


def _guarded(directory: str) -> tuple[str, dict | None, str | None]:
    """run_job in a worker: (directory, result or None, the error's last lines or None)."""
    try:
        on_step = _WORKER.get("progress", lambda _d: None)(directory)
        return directory, run_job(directory, device=_WORKER.get("device"), on_step=on_step), None
    except Exception:  # one failing job never stops the grid; the report names it
        return directory, None, "".join(traceback.format_exc().splitlines(keepends=True)[-6:])


def _cpu_worker(progress) -> None:
    torch.set_num_threads(1)
    _WORKER.update(progress=progress)


def _device_worker(devices, progress) -> None:
    device = devices.get()
    if device.startswith("cuda"):
        torch.cuda.set_device(torch.device(device))
    _WORKER.update(device=device, progress=progress)


def run_jobs(directories: list[str], settings, *, out: Path, on_done: Callable | None = None,
             progress=None) -> dict[str, dict | None]:
    """Run every job directory; returns directory -> result (None for a job that failed). `on_done(
    directory, result, error)` after each; `progress(directory) -> on_step` gives each job its step
    callback (local launchers). Slurm's logs go to <out>/submitit."""
    results: dict[str, dict | None] = {}

    def done(directory, result, error):
        results[directory] = result
        if on_done is not None:
            on_done(directory, result, error)

    if not directories:
        return results
    if settings.launcher == "slurm":
        _submitit(directories, settings, Path(out) / "submitit", done)
    elif settings.nproc_per_job > 1:
        for directory in directories:
            done(*_torchrun(directory, settings))
    elif settings.devices:
        _pool(directories, "spawn", len(settings.devices), _device_worker, (_queue(settings.devices), progress), done)
    elif settings.workers == 1 or "fork" not in __import__("multiprocessing").get_all_start_methods():
        _cpu_worker(progress)
        for directory in directories:
            done(*_guarded(directory))
    else:
        _pool(directories, "fork", settings.workers, _cpu_worker, (progress,), done)
    return results


def _queue(devices):
    import multiprocessing as mp

    queue = mp.get_context("spawn").Manager().Queue()
    for device in devices:
        queue.put(str(device) if not str(device).isdigit() else f"cuda:{device}")
    return queue


def _serve(initializer, initargs, todo, finished) -> None:
    """A worker process: set up, then run job directories from `todo` until it hands out None."""
    initializer(*initargs)
    for directory in iter(todo.get, None):
        finished.put(_guarded(directory))


def _pool(directories, context: str, processes: int, initializer, initargs, done) -> None:
    """`processes` workers that each take the next job. They are not daemons (a Pool's are), so a job may
    start its own DataLoader decode workers."""
    import multiprocessing as mp

    ctx = mp.get_context(context)
    todo, finished = ctx.Queue(), ctx.Queue()
    for directory in directories:
        todo.put(directory)
    workers = [ctx.Process(target=_serve, args=(initializer, initargs, todo, finished), daemon=False)
               for _ in range(min(processes, len(directories)))]
    for worker in workers:
        todo.put(None)
        worker.start()
    try:
        for _ in directories:
            done(*_next_result(finished, workers))
    finally:
        for worker in workers:
            worker.join(timeout=5)
            if worker.is_alive():
                worker.terminate()


def _next_result(finished, workers):
    """The next (directory, result, error) a worker sends; a worker that died (killed, out of memory)
    without sending one stops the wait with an error rather than a hang."""
    import queue

    while True:
        try:
            return finished.get(timeout=5)
        except queue.Empty:
            if not any(w.is_alive() for w in workers):
                raise RuntimeError("every bench worker process has exited with jobs left; "
                                   "run the same command again to resume") from None


def _torchrun(directory: str, settings) -> tuple[str, dict | None, str | None]:
    """One data-parallel job: `torchrun --nproc-per-node N -m vl_adapters.bench.jobs DIR`."""
    from .jobs import finished

    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               f"--nproc-per-node={settings.nproc_per_job}", "-m", "vl_adapters.bench.jobs", directory]
    env = dict(os.environ)
    if settings.devices:
        env["CUDA_VISIBLE_DEVICES"] = ",".join(str(d).removeprefix("cuda:") for d in settings.devices)
    found = subprocess.run(command, env=env, capture_output=True, text=True)
    result = finished(Path(directory))
    error = None if result is not None else (found.stderr or found.stdout)[-2000:]
    return directory, result, error


def _submitit(directories: list[str], settings, folder: Path, done) -> None:
    try:
        import submitit
    except ImportError:
        raise RuntimeError("launcher slurm needs submitit: pip install 'vl-adapters[slurm]'") from None
    parameters = dict(settings.slurm)
    cluster = parameters.pop("cluster", None)
    executor = submitit.AutoExecutor(folder=folder, cluster=cluster)
    if parameters:
        executor.update_parameters(**parameters)
    with executor.batch():
        submitted = [(directory, executor.submit(_guarded, directory)) for directory in directories]
    for directory, handle in submitted:
        try:
            done(*handle.result())
        except Exception as error:  # the job itself died (killed, out of time): submitit raises here
            done(directory, None, f"{type(error).__name__}: {error}"[-2000:])

