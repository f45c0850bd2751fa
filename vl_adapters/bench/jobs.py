"""One job of the grid: one row, one task head, one seed, trained by the library's trainer and evaluated.

A job lives in its own directory, `<out>/jobs/<row>/<task>/seed<k>/`:
  job.json       what the job is: the resolved training config, the row, the evaluation settings, a key
  config.yaml, metrics.jsonl, report.json, checkpoints/   written by the trainer (`vl-adapters train`'s)
  result.json    the evaluation, written last (atomically): a job with a result.json whose key matches
                 its job.json is finished, and a rerun reads it back instead of training again

`run_job(directory)` needs nothing but that directory and the package, so the same function runs in a
worker process, under torchrun (data-parallel) or as a Slurm job through submitit.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from vl_adapters.core.io import load_json, save_json

from .grid import GridRow

JOB_FILE, RESULT_FILE = "job.json", "result.json"


@dataclass(frozen=True)
class Job:
    row_index: int
    row: GridRow
    task: str
    seed: int

    @property
    def slug(self) -> str:
        """The job's directory under <out>/jobs: readable, and unique per row, task and seed."""
        name = re.sub(r"[^A-Za-z0-9_.+-]+", "_", self.row.name).strip("_")
        return f"{name}/{self.task}/seed{self.seed}"

    @property
    def label(self) -> str:
        return f"{self.row.name} / {self.task} / seed {self.seed}"


def merge(base: dict, changes: dict) -> dict:
    """`base` with `changes` applied key by key (nested mappings merged, everything else replaced)."""
    out = copy.deepcopy(base)
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def task_config(base: dict, task: str, overrides: dict) -> dict:
    """The training config of one task head: the base with the task's overrides and the head."""
    config = merge(base, overrides)
    model = config.setdefault("model", {})
    current = model.get("task")
    if not (isinstance(current, dict) and current.get("type") == task):
        model["task"] = task
    return config


def job_spec(config: dict, job: Job, *, run_dir: Path, cache: str | None, evaluation: dict,
             threads: int | None, source: str, validation: bool) -> dict:
    """What job.json holds. `config`: the task's training config (a mapping); the row fixes its adapters
    and training view, the job its seed; rows fed frames (backbone adapters) get no feature cache. Without
    a `validation` split the trainer evaluates nothing per epoch: the bench never selects on the test split."""
    from vl_adapters.train.config import TrainConfig

    config = merge(config, {"seed": job.seed, "run_dir": str(run_dir), "progress": False,
                            "model": {"adapters": list(job.row.adapters)},
                            "data": {"frame_view": job.row.train_view, "cache": cache},
                            **({} if validation else {"eval": {"every_epoch": False}})})
    resolved = TrainConfig.from_dict(config).to_dict()
    spec = {"row": asdict(job.row), "task": job.task, "seed": job.seed, "config": resolved,
            "evaluation": evaluation, "threads": threads, "source": source}
    spec["key"] = hashlib.sha256(json.dumps({k: v for k, v in spec.items() if k != "config"} | {
        "config": {k: v for k, v in resolved.items() if k != "run_dir"}}, sort_keys=True).encode()).hexdigest()[:20]
    return spec


def write_job(directory: Path, spec: dict) -> bool:
    """Write job.json; True when the directory already holds this job's result. A directory that held
    another version of the job (other settings or code) is cleared first, so nothing stale is resumed."""
    directory = Path(directory)
    found = directory / JOB_FILE
    if found.exists() and load_json(found).get("key") != spec["key"]:
        shutil.rmtree(directory)
    directory.mkdir(parents=True, exist_ok=True)
    if not found.exists():
        save_json(found, spec)
    return finished(directory) is not None


def finished(directory: Path) -> dict | None:
    """The job's result when it finished with its current job.json, else None."""
    result, spec = Path(directory) / RESULT_FILE, Path(directory) / JOB_FILE
    if not (result.exists() and spec.exists()):
        return None
    found = load_json(result)
    return found if found.get("key") == load_json(spec)["key"] else None


_BACKBONES: dict = {}  # one frozen backbone per process for every job that runs in it


def shared_backbone(config, device: torch.device):
    from vl_adapters import load_backbone

    m = config.model
    key = (m.backbone, m.pretrained, m.precision, str(device))
    if key not in _BACKBONES:
        _BACKBONES[key] = load_backbone(m.backbone, pretrained=m.pretrained, precision=m.precision, device=device)
    return _BACKBONES[key]


def run_job(directory: str | Path, *, device: str | None = None, on_step=None, log=None) -> dict:
    """Train and evaluate the job in `directory` (resuming a stopped one), write result.json, return it."""
    from vl_adapters.core import distributed
    from vl_adapters.train.config import TrainConfig
    from vl_adapters.train.trainer import Trainer, init_distributed, resolve_device, seed_everything

    directory = Path(directory)
    done = finished(directory)
    if done is not None:
        return done
    spec = load_json(directory / JOB_FILE)
    if spec["threads"]:
        torch.set_num_threads(spec["threads"])
    config = TrainConfig.from_dict({**spec["config"], "run_dir": str(directory),
                                    **({"device": device} if device else {})})
    init_distributed()
    row = GridRow(**{**spec["row"], "adapters": tuple(spec["row"]["adapters"])})
    backbone = shared_backbone(config, resolve_device(config.device))
    start = time.perf_counter()
    trainer = None
    if row.train:
        trainer = Trainer(config, backbone=backbone, on_step=on_step, echo=False, test_best=False)
        if (directory / "checkpoints").exists():
            trainer.resume()
        trainer.fit()
        model = trainer.model
        chosen = _choose_checkpoint(trainer)
    else:
        from vl_adapters import wrap

        seed_everything(config.seed)
        model, chosen = wrap(backbone, config.model.adapters, task=config.model.task), "none (zero-shot)"
    train_seconds = time.perf_counter() - start
    if distributed.is_distributed():  # under torchrun: every rank trained; rank 0 alone evaluates
        import torch.distributed as dist

        rank = distributed.rank()
        dist.barrier()
        dist.destroy_process_group()
        if rank != 0:
            return {}
    from .evaluate import evaluate_job

    metrics = evaluate_job(model, config, spec["evaluation"], row=row, trainer=trainer, log=log)
    result = {"key": spec["key"], "metrics": metrics, "checkpoint": chosen,
              "trainable_params": sum(p.numel() for p in model.trainable_parameters()) if row.train else 0,
              "loss_curve": _loss_curve(directory), "steps": trainer.state["step"] if trainer else 0,
              "cost": trainer.cost() if trainer else {},
              "seconds": {"train": train_seconds, "total": time.perf_counter() - start}}
    save_json(directory / RESULT_FILE, result)
    return result


def _choose_checkpoint(trainer) -> str:
    """The model a job reports: the best checkpoint by the validation metric when the run selects on a
    validation split, else the last one (already in memory)."""
    from vl_adapters.core.io import load_tensors
    from vl_adapters.train.checkpoint import find_checkpoint

    best = trainer.run_dir / "checkpoints" / "best"
    if trainer.eval_dataset is None or trainer.config.data.eval_split == "test" or not best.exists():
        return "last"
    weights = load_tensors(find_checkpoint(best) / "adapters.safetensors", device=str(trainer.device))
    trainer.model.load_adapter_state_dict(weights)
    return f"best ({trainer.state['best_metric']} on {trainer.config.data.eval_split})"


def _loss_curve(directory: Path) -> list[list[float]]:
    """[[step, mean training loss since the previous point], ...] from the trainer's metrics.jsonl."""
    from vl_adapters.train.trainer import read_metrics_log

    path = directory / "metrics.jsonl"
    if not path.exists():
        return []
    return [[r["step"], r.get("loss_mean", r["loss"])] for r in read_metrics_log(directory) if r.get("kind") == "train"]


def main(argv: list[str] | None = None) -> int:
    """`python -m vl_adapters.bench.jobs DIR`: run one job (how torchrun starts a data-parallel job)."""
    import argparse

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("directory")
    parser.add_argument("--device", default=None)
    args = parser.parse_args(argv)
    run_job(args.directory, device=args.device)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
