"""The training loop: AdamW over the adapters, warm-up + cosine, clipping, accumulation, bf16 autocast
on CUDA, evaluation each epoch, atomic best/last checkpoints, exact resume, DDP (torchrun)."""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from ..core import distributed
from ..core.config import ConfigError
from ..core.io import load_json, load_tensors, remove_orphans, save_json, save_text
from ..core.model import CacheRefusedError
from .checkpoint import find_checkpoint, load_checkpoint, recover_checkpoints, save_checkpoint
from .config import TrainConfig
from .data import (
    BadVideoError,
    CachedDataset,
    batch_size_of,
    batches_per_epoch,
    dropped_rows,
    make_loader,
    nothing_left,
    selection_split,
    skipped_of,
    skipped_report,
)
from .evaluate import default_metric, evaluate
from .resources import StepClock, peak_memory_bytes, peak_memory_note, reset_peak_memory
from .run_log import RunLog
from .schedule import WarmupCosine

# A run that skipped more than this fraction of the optimiser steps it tried (on non-finite losses or
# gradients, nonfinite_loss: skip) diverged rather than met a few bad batches: it ends as failed.
MOST_SKIPPED = 0.5


class NonFiniteError(RuntimeError):
    """The loss, the gradients or the adapter weights stopped being finite numbers."""


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


def show_progress(setting: bool | None) -> bool:
    if setting is not None:
        return setting and distributed.rank() == 0
    return sys.stderr.isatty() and not os.environ.get("CI") and distributed.rank() == 0


def init_distributed() -> None:
    """Join the torchrun process group (NCCL on GPU, gloo on CPU) when WORLD_SIZE > 1."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend)
        if torch.cuda.is_available():
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        return torch.device("cpu")
    return torch.device(name)


class Trainer:
    """Build with a TrainConfig; datasets and a model may be passed in (tests, notebooks), otherwise
    they are built from the config (build_dataset, load_backbone, wrap). `on_step(step, total)` is called
    after each optimiser step (progress reports, timing probes); `echo=False` keeps the epoch lines off
    stdout and `test_best=False` leaves the best checkpoint's test evaluation to the caller (a grid's jobs,
    which report per job and evaluate the test split their own way)."""

    def __init__(self, config: TrainConfig, *, model=None, backbone=None, train_dataset=None, eval_dataset=None,
                 train_cache: str | Path | None = None, eval_cache: str | Path | None = None,
                 on_step=None, echo: bool = True, test_best: bool = True) -> None:
        self.config = config
        self.on_step = on_step
        init_distributed()
        self.is_main = distributed.rank() == 0
        self.device = resolve_device(config.device)
        seed_everything(config.seed)
        self.run_dir = Path(config.run_dir)
        self.skipped: list[dict] = []
        self._querybank_texts: list[str] | None = None  # QB-Norm bank, read on the first evaluation
        self.cache_note = "off"
        self.run_log = RunLog(self.run_dir, tensorboard=config.tensorboard, enabled=self.is_main, echo=echo)
        if backbone is None:  # a caller that runs many jobs on one frozen backbone passes it in
            backbone = model.backbone if model is not None else self._build_backbone()
        size = backbone.dims.image_size
        d = config.data
        self.eval_split, self.selection_note = selection_split(d)
        if eval_dataset is not None or not (config.eval.every_epoch and d.eval_split):
            self.selection_note = None  # the caller chose what to select on, or nothing is selected
        if train_dataset is None:
            train_dataset = self._build_dataset(d.train_split, size=size, train=True)
        test_dataset = None  # the best checkpoint's test split, when the trainer builds its evaluation itself
        if eval_dataset is None and config.eval.every_epoch and d.eval_split:
            eval_dataset = self._build_dataset(self.eval_split, size=size, train=False)
            if self.eval_split != d.test_split and test_best:
                test_dataset = self._build_dataset(d.test_split, size=size, train=False)
        self.model = model if model is not None else self._build_model(backbone, train_dataset)
        base = d.cache
        train_cache = train_cache or (Path(base) / d.train_split if base else None)
        eval_cache = eval_cache or (Path(base) / self.eval_split if base else None)
        self.train_dataset = self._with_cache(train_dataset, train_cache)
        self.eval_dataset = self._with_cache(eval_dataset, eval_cache) if eval_dataset is not None else None
        self.test_dataset = (self._with_cache(test_dataset, Path(base) / d.test_split if base else None)
                             if test_dataset is not None else None)
        self.test_result: dict | None = None
        params = self.model.trainable_parameters()
        if not params:
            raise ValueError("the model has no trainable parameters: add at least one adapter")
        o = config.optim
        # The fused kernel: one call for every tensor instead of a dozen per tensor (a step of Finsta's 181
        # tensors: 1.5 ms against 12 ms on one CPU thread); same update rule.
        fused = all(p.device.type in ("cpu", "cuda") for p in params)
        self.optimizer = torch.optim.AdamW(params, lr=o.lr, betas=o.betas, eps=o.eps, weight_decay=o.weight_decay,
                                           fused=fused or None)
        self.drop_last = distributed.is_distributed()
        self.batches = batches_per_epoch(self.train_dataset, config.data.batch_size, self.drop_last)
        self.steps_per_epoch = max(1, -(-self.batches // o.accumulation))
        total = self.steps_per_epoch * config.epochs
        self.total_steps = min(total, config.max_steps) if config.max_steps else total
        self.scheduler = WarmupCosine(self.optimizer, total_steps=total, warmup_steps=round(o.warmup_ratio * total),
                                      min_lr_ratio=o.min_lr_ratio)
        self.ddp = None
        if distributed.is_distributed():
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.ddp = torch.nn.parallel.DistributedDataParallel(self.model, device_ids=ids)
        self.state = {"step": 0, "epoch": 0, "batch_in_epoch": 0, "best_metric": None, "best_value": None,
                      "skipped": [], "nonfinite_skipped": [], "metrics_bytes": 0,
                      "clock": {"seconds": 0.0, "cpu_seconds": 0.0, "steps": 0}}
        if self.is_main:  # finish a checkpoint swap that a crash interrupted, drop orphaned temporaries
            recover_checkpoints(self.run_dir / "checkpoints")
            remove_orphans(self.run_dir)
        if distributed.is_distributed():
            dist.barrier()

    # ---- building ------------------------------------------------------------------------
    def split_dataset(self, split: str):
        """Another split of the run's dataset for evaluation, read from the feature cache when the run
        uses one (<data.cache>/<split>)."""
        return open_split(self.config, split, self.model)

    def _build_dataset(self, split: str, *, size: int, train: bool):
        return build_split(self.config, split, size=size, train=train)

    def _build_backbone(self):
        from .. import load_backbone

        m = self.config.model
        return load_backbone(m.backbone, pretrained=m.pretrained, precision=m.precision, device=self.device)

    def _build_model(self, backbone, dataset):
        from .. import wrap

        task = self.config.model.task
        if (task == "open_qa" or (isinstance(task, dict) and task.get("type") == "open_qa")) and \
                getattr(dataset, "answer_vocab", None):
            task = {**({"type": "open_qa"} if isinstance(task, str) else task),
                    "num_answers": len(dataset.answer_vocab), "answers": list(dataset.answer_vocab)}
        return wrap(backbone, self.config.model.adapters, task=task)

    def _with_cache(self, dataset, directory):
        if directory is None:
            return dataset
        self.cache_note = f"used ({Path(directory).parent})"
        return with_cache(dataset, directory, self.model, self.config)

    # ---- the loop ------------------------------------------------------------------------
    def resume(self, checkpoint: str | Path | None = None) -> None:
        """Continue from a checkpoint (default: <run_dir>/checkpoints/last). A run that died before its
        first checkpoint (its run directory has config.json, but no checkpoint) starts again from step 0.
        metrics.jsonl is cut back to what it held when the checkpoint was written, so the steps done
        again are not logged twice."""
        try:
            directory = find_checkpoint(checkpoint or self.run_dir / "checkpoints" / "last")
        except FileNotFoundError:
            if checkpoint is not None or not (self.run_dir / "config.json").exists():
                raise
            self._truncate_metrics(0)
            return
        self.state = {**self.state, **load_checkpoint(directory, model=self.model, optimizer=self.optimizer,
                                                      scheduler=self.scheduler, device=str(self.device))}
        self.skipped = list(self.state.get("skipped", []))
        if checkpoint is None or Path(checkpoint).resolve().parent == (self.run_dir / "checkpoints").resolve():
            self._truncate_metrics(self.state.get("metrics_bytes"))

    def _truncate_metrics(self, size: int | None) -> None:
        path = self.run_dir / "metrics.jsonl"
        if self.is_main and size is not None and path.exists() and path.stat().st_size > size:
            os.truncate(path, size)

    def _forward(self, batch):
        module = self.ddp if self.ddp is not None else self.model
        if self.device.type == "cuda":
            with torch.autocast("cuda", dtype=torch.bfloat16):
                return module(batch)
        return module(batch)

    def _note_skipped(self, batch, split: str) -> None:
        for entry in skipped_of(batch):
            if self.config.on_bad_video == "raise":
                raise BadVideoError(f"{split}: video {entry['video_id']!r} could not be read: {entry['reason']}")
            self.skipped.append({**entry, "split": split})

    def fit(self) -> dict:
        """Train to the end (or to max_steps); returns the last evaluation's metrics."""
        from tqdm.auto import tqdm

        cfg = self.config
        if self.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            save_json(self.run_dir / "config.json", cfg.to_dict())
            import yaml

            save_text(self.run_dir / "config.yaml", yaml.safe_dump(cfg.to_dict(), sort_keys=False))
        metrics: dict = {}
        stopped = False
        accumulation = cfg.optim.accumulation
        clock = StepClock(self.device, **self.state["clock"])
        self.peak_reset = reset_peak_memory(self.device)
        window: list[float] = []  # step losses since the last logged record
        while self.state["epoch"] < cfg.epochs and not stopped:
            epoch, skip = self.state["epoch"], self.state["batch_in_epoch"]
            loader = make_loader(self.train_dataset, batch_size=cfg.data.batch_size, shuffle=True, seed=cfg.seed,
                                 epoch=epoch, num_workers=cfg.data.num_workers, skip_batches=skip,
                                 drop_last=self.drop_last)
            self.model.train()
            self.run_log.start_epoch()
            evaluated: dict = {}
            bar = tqdm(total=self.batches, initial=skip, desc=f"epoch {epoch + 1}/{cfg.epochs}",
                       disable=not show_progress(cfg.progress), unit="batch")
            pending, had_data = 0, False
            first_step = self.state["step"]
            clock.start()
            for batch in loader:
                self.state["batch_in_epoch"] += 1
                bar.update(1)
                self._note_skipped(batch, "train")
                batch = self._view(batch)
                last_of_epoch = self.state["batch_in_epoch"] == self.batches
                if self._every_rank_has_data(batch):
                    had_data = True
                    sync = pending + 1 == accumulation or last_of_epoch
                    context = self.ddp.no_sync() if (self.ddp is not None and not sync) else _null()
                    with context:
                        out = self._forward(batch)
                        loss_value = out.loss.detach().float().item()
                        if self._all_ranks_finite(loss_value, "loss"):
                            (out.loss / accumulation).backward()
                            pending += 1
                if pending and (pending == accumulation or last_of_epoch):
                    stepped = self._optimizer_step()
                    pending = 0
                    if not stepped:
                        continue
                    window.append(loss_value)
                    self.run_log.step(loss_value)
                    if self.state["step"] % cfg.log_every == 0 or self.state["step"] == 1:
                        self._log({"kind": "train", "step": self.state["step"], "epoch": epoch,
                                   "loss": loss_value, "loss_mean": sum(window) / len(window),
                                   "lr": self.scheduler.get_last_lr()[0]})
                        window = []
                        bar.set_postfix(loss=f"{loss_value:.4f}")
                    if self.on_step is not None:
                        self.on_step(self.state["step"], self.total_steps)
                    if cfg.max_steps and self.state["step"] >= cfg.max_steps:
                        stopped = True
                        break
            clock.stop(self.state["step"] - first_step)
            self.state["clock"] = clock.state()
            bar.close()
            if not had_data and not skip:
                raise nothing_left(self.train_dataset, [e for e in self.skipped if e["split"] == "train"], "train on")
            if not stopped:
                self.state["epoch"] += 1
                self.state["batch_in_epoch"] = 0
                if cfg.eval.every_epoch and self.eval_dataset is not None:
                    metrics = evaluated = self.evaluate()
                    self._log({"kind": "eval", "step": self.state["step"], "epoch": epoch, **metrics})
                    self._maybe_best(metrics)
            self._save("last")
            self.run_log.end_epoch(epoch=epoch + 1, epochs=cfg.epochs, step=self.state["step"], metrics=evaluated,
                                   stopped=stopped)
        self._stop_if_diverged()
        if not stopped:
            self._test_best()
        self._write_report(metrics, stopped)
        self.run_log.close()
        return metrics

    def _view(self, batch: dict) -> dict:
        """The training batch through data.frame_view; a shuffle is a pure function of (seed, epoch,
        batch), so a resumed run draws the same orders."""
        view = self.config.data.frame_view
        if view == "all":
            return batch
        from ..data.views import apply_view

        generator = torch.Generator().manual_seed(
            hash((self.config.seed, self.state["epoch"], self.state["batch_in_epoch"])) % 2**63)
        return apply_view(batch, view, generator=generator)

    def eval_view(self) -> str:
        """Evaluation sees every frame in order, except after training on the middle frame alone."""
        return "middle" if self.config.data.frame_view == "middle" else "all"

    def _test_best(self) -> None:
        """The best checkpoint's metrics on the test split, when the best was chosen on another split
        (logged as kind "test", in report.json's "test"); the model keeps its last weights."""
        if self.test_dataset is None or self.state["best_value"] is None:
            return
        if distributed.is_distributed():
            dist.barrier()  # rank 0 has written the best checkpoint
        last = {name: tensor.clone() for name, tensor in self.model.adapter_state_dict().items()}
        best = find_checkpoint(self.run_dir / "checkpoints" / "best")
        self.model.load_adapter_state_dict(load_tensors(best / "adapters.safetensors", device=str(self.device)))
        try:
            metrics = self.evaluate(self.test_dataset)
        finally:
            self.model.load_adapter_state_dict(last)
        split = self.config.data.test_split
        self.test_result = {"split": split, "checkpoint": "best", "metrics": metrics}
        self._log({"kind": "test", "split": split, "checkpoint": "best", "step": self.state["step"], **metrics})

    def _stop_if_diverged(self) -> None:
        """A run (nonfinite_loss: skip) that skipped most of what it tried did not train: stop it as failed."""
        skipped = len(self.state["nonfinite_skipped"])
        tried = self.state["step"] + skipped
        if skipped and skipped > MOST_SKIPPED * tried:
            self._stop_nonfinite(
                f"the run skipped {skipped} of its {tried} optimiser steps on non-finite losses or gradients "
                f"(nonfinite_loss: skip), more than {MOST_SKIPPED:.0%}: it diverged; lower optim.lr. The "
                "checkpoints were written; 'best' holds only an evaluation with finite scores, if any")

    def _every_rank_has_data(self, batch) -> bool:
        """False when this batch (or, under DDP, any rank's batch) lost every video: all ranks skip it
        together, since DDP's gradient all-reduce needs every rank to run backward."""
        has = batch_size_of(batch) > 0
        if self.ddp is None:
            return has
        flag = torch.tensor([int(has)], device=self.device)
        dist.all_reduce(flag, op=dist.ReduceOp.MIN)
        return bool(flag.item())

    def _optimizer_step(self) -> bool:
        """Clip and step; False when the gradients are not finite and the step is skipped."""
        params = self.model.trainable_parameters()
        clip = self.config.optim.grad_clip if self.config.optim.grad_clip > 0 else float("inf")
        norm = torch.nn.utils.clip_grad_norm_(params, clip).item()
        if not self._all_ranks_finite(norm, "gradient norm"):
            self.optimizer.zero_grad(set_to_none=True)
            return False
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.state["step"] += 1
        return True

    def _all_ranks_finite(self, value: float, what: str) -> bool:
        """True when `value` is finite on every rank. Otherwise stop (nonfinite_loss: stop) with an error
        naming the step, or record the skipped step and return False (skip)."""
        finite = math.isfinite(value)
        if self.ddp is not None:
            flag = torch.tensor([int(finite)], device=self.device)
            dist.all_reduce(flag, op=dist.ReduceOp.MIN)
            finite = bool(flag.item())
        if finite:
            return True
        where = {"step": self.state["step"] + 1, "epoch": self.state["epoch"],
                 "batch_in_epoch": self.state["batch_in_epoch"], "what": what, "value": str(value)}
        if self.config.nonfinite_loss == "stop":
            self._stop_nonfinite(
                f"the {what} is {value} (non-finite) at step {where['step']} (epoch {where['epoch'] + 1}, batch "
                f"{where['batch_in_epoch']}); lower optim.lr, check the inputs for NaN, or set "
                "nonfinite_loss: skip to drop such batches")
        self.state["nonfinite_skipped"].append(where)
        self._log({"kind": "skipped", **where})
        return False

    def _stop_nonfinite(self, message: str) -> None:
        """Record why the run stopped in report.json (the checkpoints keep their last finite state)."""
        self._write_report({}, stopped=True, error=message)
        raise NonFiniteError(message)

    def evaluate(self, dataset=None) -> dict:
        """Metrics of the model as it is on `dataset` (default: the evaluation split)."""
        e = self.config.eval
        dataset = self.eval_dataset if dataset is None else dataset
        return evaluate(self.model, dataset, batch_size=self.config.data.eval_batch_size,
                        num_workers=self.config.data.num_workers, rerank_k=e.rerank_k,
                        on_bad_video=self.config.on_bad_video, skipped=self.skipped,
                        progress=show_progress(self.config.progress), autocast=self.device.type == "cuda",
                        normalise=e.normalise, normalise_options=e.normalise_options, querybank=self._querybank(),
                        frame_view=self.eval_view())

    def _querybank(self) -> list[str] | None:
        """QB-Norm's bank queries (eval.normalise qb_norm), read once per run: the training captions or a file."""
        if self.config.eval.normalise != "qb_norm":
            return None
        if self._querybank_texts is None:
            from ..tasks.normalise import parse_options, querybank_texts

            bank = parse_options("qb_norm", self.config.eval.normalise_options)
            self._querybank_texts = querybank_texts(bank.querybank, train_dataset=self.train_dataset,
                                                    size=bank.querybank_size)
        return self._querybank_texts

    def _maybe_best(self, metrics: dict) -> None:
        name = self.config.eval.metric or default_metric(self.model.task.name)
        if name not in metrics:
            raise KeyError(f"eval.metric {name!r} is not among the evaluation's metrics {sorted(metrics)}")
        value = metrics[name]
        if not math.isfinite(value) or metrics.get("nan_scores"):  # a model scoring NaN is never the best
            return
        lower_is_better = name.endswith(("MdR", "MnR"))
        best = self.state["best_value"]
        if best is None or (value < best if lower_is_better else value > best):
            self.state["best_metric"], self.state["best_value"] = name, value
            self._save("best")

    # ---- writing (rank 0 only) ----------------------------------------------------------
    def _save(self, which: str) -> None:
        if not self.is_main:
            return
        broken = [n for n, p in self.model.named_parameters() if p.requires_grad and not torch.isfinite(p).all()]
        if broken:
            self._stop_nonfinite(
                f"the adapter weights {broken[:3]}{' ...' if len(broken) > 3 else ''} are non-finite "
                f"at step {self.state['step']}; lower optim.lr. The {which!r} checkpoint was not written, "
                "so the checkpoints keep their last finite state")
        self.state["skipped"] = self.skipped
        log = self.run_dir / "metrics.jsonl"
        self.state["metrics_bytes"] = log.stat().st_size if log.exists() else 0
        save_checkpoint(self.run_dir / "checkpoints" / which, model=self.model, optimizer=self.optimizer,
                        scheduler=self.scheduler, state=dict(self.state))

    def _log(self, record: dict) -> None:
        if not self.is_main:
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        with open(self.run_dir / "metrics.jsonl", "a") as log:
            log.write(json.dumps({"time": round(time.time(), 3), **record}) + "\n")
        self.run_log.record(record)

    def cost(self) -> dict:
        """Optimiser steps timed, seconds per step (wall and CPU), and the peak memory of this run."""
        clock = self.state["clock"]
        steps = max(clock["steps"], 1)
        reset = getattr(self, "peak_reset", False)
        return {"device": str(self.device), "steps_timed": clock["steps"], "train_seconds": clock["seconds"],
                "train_cpu_seconds": clock["cpu_seconds"], "seconds_per_step": clock["seconds"] / steps,
                "cpu_seconds_per_step": clock["cpu_seconds"] / steps,
                "peak_memory_bytes": peak_memory_bytes(self.device),
                "peak_memory": peak_memory_note(self.device, reset)}

    def _write_report(self, metrics: dict, stopped: bool, error: str | None = None) -> None:
        if not self.is_main:
            return
        unique = {(e["video_id"], e.get("split")): e for e in self.skipped}
        self.skipped = list(unique.values())
        report = {
            "finished": not stopped, "step": self.state["step"], "epoch": self.state["epoch"],
            "train_samples": len(self.train_dataset),
            "eval_samples": len(self.eval_dataset) if self.eval_dataset is not None else 0,
            "dropped_annotation_rows": {split: dropped_rows(dataset) for split, dataset in
                                        (("train", self.train_dataset), ("eval", self.eval_dataset))
                                        if dataset is not None and dropped_rows(dataset)["count"]},
            "feature_cache": self.cache_note,
            "trainable_parameters": sum(p.numel() for p in self.model.trainable_parameters()),
            "cost": self.cost(),
            "best": {"metric": self.state["best_metric"], "value": self.state["best_value"]},
            "model_selection": {"split": self.eval_split, "note": self.selection_note},
            "test": self.test_result,
            "last_metrics": metrics,
            "skipped_videos": skipped_report(self.skipped),
            "nonfinite_skipped": {"count": len(self.state["nonfinite_skipped"]),
                                  "steps": self.state["nonfinite_skipped"]},
        }
        if error is not None:
            report["error"] = error
        save_json(self.run_dir / "report.json", report)


def build_split(config: TrainConfig, split: str, *, size: int, train: bool):
    """A split of the config's dataset, decoded straight to the backbone's input size `size` unless the
    data options say otherwise."""
    from ..data import build_dataset

    d = config.data
    options = {"size": size, "seed": config.seed, **d.options}
    return build_dataset(d.dataset, d.root, split, num_frames=d.num_frames, sampler=d.sampler, train=train,
                         on_bad_video=config.on_bad_video, **options)


def with_cache(dataset, directory: str | Path, model, config: TrainConfig):
    """`dataset` read back from the feature cache `directory` (checked against the model's backbone and
    the config's sampling), with the split's text features opened in the model's text store."""
    from ..data.cache import FeatureCache, cache_fingerprint

    if model.uses_backbone_adapters:
        names = [a.name for a in model.backbone_adapters]
        raise CacheRefusedError(
            f"the feature cache {directory} is refused: backbone adapter(s) {names} change the backbone's "
            "forward, so cached backbone features would be wrong. Drop `data.cache` to train from videos.")
    cache = FeatureCache(directory)
    cache.check(cache_fingerprint(model.backbone, sampler=config.data.sampler, num_frames=config.data.num_frames,
                                  patch_tokens=cache.fingerprint.get("patch_tokens", True), dataset=dataset))
    model.text_store.open(cache.text_directory, model.backbone)  # the split's texts, if extracted
    return CachedDataset(dataset, cache)


def open_split(config: TrainConfig, split: str, model):
    """A split for evaluating `model`: built from the config, through its feature cache when it has one."""
    dataset = build_split(config, split, size=model.backbone.dims.image_size, train=False)
    base = config.data.cache
    return with_cache(dataset, Path(base) / split, model, config) if base else dataset


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


RUN_FILES = ("checkpoints", "metrics.jsonl", "report.json", "config.json", "config.yaml")  # what a run writes


def train(config: TrainConfig, *, resume: bool | str = False, overwrite: bool = False, **kwargs) -> Trainer:
    """Build a Trainer and fit it. A run directory that already holds a run is refused unless `resume`
    (continue it) or `overwrite` (its run files, RUN_FILES, are removed first and the run starts afresh)."""
    run_dir = Path(config.run_dir)
    held = [name for name in RUN_FILES if (run_dir / name).exists()]
    if held and not resume:
        if not overwrite:
            raise ConfigError(f"run_dir {str(run_dir)!r} already holds a run ({', '.join(held)}); pass --resume to "
                              "continue it, --overwrite to replace it, or choose another --run-dir")
        init_distributed()
        if distributed.rank() == 0:
            for name in held:
                path = run_dir / name
                shutil.rmtree(path) if path.is_dir() else path.unlink()
        if distributed.is_distributed():
            dist.barrier()
    trainer = Trainer(config, **kwargs)
    if resume:
        trainer.resume(None if resume is True else resume)
    trainer.fit()
    return trainer


def read_metrics_log(run_dir: str | Path) -> list[dict]:
    path = Path(run_dir) / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


__all__ = ["Trainer", "read_metrics_log", "train", "load_json"]
