"""The protocol every row of the grid goes through: one training function, one evaluation, one config.

Per row and seed, each task is trained with its own head: a fresh `vla.wrap(backbone, adapters,
task=...)` trained on that task's training rows (retrieval: each training video with one of its
captions; multiple choice: the multiple-choice training questions, candidates encoded once), then
evaluated on the test part, in order and with each video's frames shuffled. The only thing that
differs between rows is what they are: their adapters, and the frames their view picks. The input
form follows from the adapters, by one documented switch: a row with an adapter inside the backbone
(stage "backbone") is fed frames and strings every step; every other row the frozen features of the
same frames and strings.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from .data import Part, frame_order, mc_batch, retrieval_batch

TASKS = ("retrieval", "multiple_choice")


@dataclass(frozen=True)
class BenchConfig:
    num_train_pairs: int = 2000  # each pair is a video and its backward twin
    num_val_pairs: int = 50
    num_test_pairs: int = 200
    num_frames: int = 8
    # optimiser steps per task, the same for every row: benchmarks/results/budget (600 was a false plateau)
    steps: int = 4800
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 0.01
    warmup_fraction: float = 0.1
    grad_clip: float = 1.0
    rerank_k: int = 10  # cross adapters re-rank each text's top-k (exhaustive scoring is too slow on CPU)
    qb_bank_size: int = 128  # QB-Norm's querybank: this many training captions of the pool's kind
    curve_window: int = 10  # the loss curve keeps the mean of each window of steps
    seeds: tuple[int, ...] = (0, 1, 2)
    data_seed: int = 0


# ---------------------------------------------------------------- training
class EpochSampler:
    """Batches of distinct indices, drawn epoch by epoch from `gen` (a batch never spans two epochs)."""

    def __init__(self, size: int, batch_size: int, gen: torch.Generator) -> None:
        if size < 2:
            raise ValueError(f"the training part needs at least 2 items, got {size}")
        self.size, self.batch_size, self.gen = size, min(batch_size, size), gen
        self.order, self.position = torch.randperm(size, generator=gen), 0

    def next(self) -> torch.Tensor:
        if self.position + self.batch_size > self.size:
            self.order, self.position = torch.randperm(self.size, generator=self.gen), 0
        batch = self.order[self.position:self.position + self.batch_size]
        self.position += self.batch_size
        return batch


def schedule(step: int, steps: int, warmup_fraction: float) -> float:
    """Linear warm-up, then cosine decay to zero."""
    warmup = max(int(steps * warmup_fraction), 1)
    return min(1.0, (step + 1) / warmup) * 0.5 * (1.0 + math.cos(math.pi * step / steps))


def train_model(model, part: Part, cfg: BenchConfig, seed: int, *, view: str = "all",
                on_step: Callable[[int], None] | None = None) -> list[float]:
    """Train `model`'s adapters and task head on `part` with the model's own head, `cfg.steps` AdamW
    steps (`on_step(step)` after each, from 1). Returns the loss curve (the mean of each window of
    `cfg.curve_window` steps)."""
    frames = model.uses_backbone_adapters  # the one input switch (see the module docstring)
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)  # dropout and any sampling inside adapters draw from the global RNG
    task = model.task.name
    if task == "retrieval":
        items = part.num_videos
        captions_of = [[] for _ in range(part.num_videos)]
        for caption, video in enumerate(part.caption_video.tolist()):
            captions_of[video].append(caption)
    elif task == "multiple_choice":
        items = len(part.questions)
    else:
        raise ValueError(f"the bench trains the retrieval and multiple_choice heads, not {task!r}")
    sampler = EpochSampler(items, cfg.batch_size, gen)
    params = model.trainable_parameters()
    optimiser = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimiser, lambda s: schedule(s, cfg.steps, cfg.warmup_fraction))
    num_frames = part.frames.shape[1]
    curve, window = [], []
    model.train()
    for step in range(1, cfg.steps + 1):
        index = sampler.next()
        order = frame_order(len(index), num_frames, view, gen)
        if task == "retrieval":
            picks = torch.randint(0, 1 << 30, (len(index),), generator=gen).tolist()
            captions = torch.tensor([captions_of[v][p % len(captions_of[v])]
                                     for v, p in zip(index.tolist(), picks, strict=True)])
            batch = retrieval_batch(part, captions, order, frames=frames)
        else:
            batch = mc_batch(part, index, order, frames=frames)
        loss = model(batch).loss
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
        optimiser.step()
        scheduler.step()
        window.append(loss.item())
        if len(window) == cfg.curve_window:
            curve.append(sum(window) / len(window))
            window = []
        if on_step is not None:
            on_step(step)
    if window:
        curve.append(sum(window) / len(window))
    model.eval()
    return curve


def run_task(backbone, row, task: str, data: dict[str, Part], cfg: BenchConfig, seed: int, *,
             normalise=None, on_step: Callable[[int], None] | None = None) -> dict:
    """One row, one task, one seed: wrap, train (unless the row is zero-shot), evaluate on test, and
    on the validation part (temporal multiple choice) for the choice of the shuffled-training control."""
    import vl_adapters as vla

    from .evaluate import evaluate, evaluate_mc, test_order

    torch.manual_seed(seed)  # the adapters' initialisation
    model = vla.wrap(backbone, list(row.adapters), task=task)
    start, cpu = time.perf_counter(), time.process_time()
    curve = train_model(model, data["train"], cfg, seed, view=row.train_view, on_step=on_step) if row.train else []
    train_seconds, train_cpu = time.perf_counter() - start, time.process_time() - cpu
    model.eval()
    metrics = evaluate(model, data["test"], cfg, row.test_view,
                       normalise=None if normalise is None else normalise(model))
    if task == "multiple_choice" and "val" in data:
        val = data["val"]
        metrics["val/mc/temporal"] = evaluate_mc(model, val, test_order(val, row.test_view), kinds=("temporal",))["mc/temporal"]
    return {"metrics": metrics, "loss_curve": curve,
            "trainable_params": sum(p.numel() for p in model.trainable_parameters()) if row.train else 0,
            "inputs": "frames" if model.uses_backbone_adapters else "features",
            "seconds": {"train": train_seconds, "total": time.perf_counter() - start,
                        "train_cpu": train_cpu, "total_cpu": time.process_time() - cpu}}
