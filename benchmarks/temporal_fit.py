"""Does an adapter learn frame order? Temporal multiple choice on the synthetic benchmark, frozen `tiny:synthetic`.

    .venv/bin/python benchmarks/temporal_fit.py [--pairs 64 --test-pairs 32 --frames 16 --steps 300 --batch 32
                                                 --lr 1e-3 --seeds 0 --data DIR --adapters A B ...]

Protocol, the same for every row and never tuned per row: the synthetic generator's "temporal" multiple-choice
rows (mc_{train,test}.jsonl: the true event caption against the backward twin's caption, the events in the
other order and the moves flipped; every video comes with its backward twin, so order-free pooling is at
chance by construction). Frames are decoded and encoded once by the frozen backbone and every candidate string once
by the frozen text tower (the bench's data module, bench/data.py); accuracy is the bench's tie-aware one.
Each row wraps the backbone with its adapters and the multiple-choice head (cross-entropy) and trains
`steps` steps of `batch` random training questions with AdamW (lr, weight decay 0.01, constant lr, gradient
norm clipped at 1). Reported: accuracy on the training questions, on the held-out ones, and on the held-out
ones with each video's frames shuffled (an order-blind model loses nothing).

`--adapters` takes names or JSON dicts ('{"type": "temporal_transformer", "dropout": 0.0}'); "mean" is the
model without adapters (CLIP4Clip's meanP, nothing to learn but the temperature).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

import vl_adapters as vla
from vl_adapters.bench.data import Part, frame_order, load_part, mc_batch
from vl_adapters.bench.evaluate import evaluate_mc, questions, test_order
from vl_adapters.bench.protocol import BenchConfig
from vl_adapters.bench.run import prepare_data

DEFAULT_ROWS = ["mean", "temporal_transformer", "tem_temporal_aligner"]


def load_parts(root: str | Path, cfg: BenchConfig, names: tuple[str, ...] = ("train", "test"), *,
               workers: int = 1) -> tuple:
    """(backbone, *parts named `names`): the synthetic data of `cfg` written under `root` unless it is already
    there with this configuration, decoded and encoded once by the frozen `tiny:synthetic` (bench/data.py)."""
    root = Path(root)
    prepare_data(root, cfg, workers=workers, log=lambda *_: None)
    backbone = vla.load_backbone("tiny:synthetic", device="cpu")
    return (backbone, *(load_part(root, name, backbone, num_frames=cfg.num_frames) for name in names))


def fit_config(args) -> BenchConfig:
    """The data of a temporal_fit run (no validation part)."""
    return BenchConfig(num_train_pairs=args.pairs, num_val_pairs=0, num_test_pairs=args.test_pairs,
                       num_frames=args.frames)


def accuracy(model, part: Part, view: str = "all") -> float:
    """Tie-aware accuracy (fraction) on the part's temporal questions, frames in order or shuffled."""
    model.eval()
    return evaluate_mc(model, part, test_order(part, view), kinds=("temporal",))["mc/temporal"] / 100.0


def train(model, part: Part, *, steps: int, batch: int, lr: float, seed: int) -> float:
    """`steps` AdamW steps of `batch` random temporal training questions (constant lr, clip 1); seconds."""
    rows = questions(part, "temporal")
    params = model.trainable_parameters()
    optimiser = torch.optim.AdamW(params, lr=lr, weight_decay=0.01)
    generator = torch.Generator().manual_seed(seed)
    order = frame_order(batch, part.frames.shape[1], "all", None)
    model.train()
    start = time.time()
    for _ in range(steps):
        chosen = rows[torch.randperm(len(rows), generator=generator)[:batch]]
        loss = model(mc_batch(part, chosen, order[:len(chosen)], frames=False)).loss
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimiser.step()
    return time.time() - start


def parse_row(spec: str):
    if spec == "mean":
        return []
    return [json.loads(spec) if spec.lstrip().startswith("{") else spec]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=64, help="training scene pairs (each: a video and its backward twin)")
    parser.add_argument("--test-pairs", type=int, default=32)
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--data", default="bench-results/temporal-fit-data", help="synthetic data and feature cache")
    parser.add_argument("--adapters", nargs="+", default=DEFAULT_ROWS, help="rows: 'mean', names or JSON dicts")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    backbone, train_part, test_part = load_parts(args.data, fit_config(args))
    num_train, num_test = (len(questions(p, "temporal")) for p in (train_part, test_part))
    print(f"temporal MC: {num_train} training / {num_test} held-out questions, {args.frames} frames, "
          f"{args.steps} steps x {args.batch}, AdamW lr {args.lr}, seeds {args.seeds}")
    print("| row | trainable | train acc | held-out acc | held-out, frames shuffled | seconds |")
    print("|---|---:|---:|---:|---:|---:|")
    for spec in args.adapters:
        results = []
        for seed in args.seeds:
            torch.manual_seed(seed)
            model = vla.wrap(backbone, parse_row(spec), task="multiple_choice")
            seconds = train(model, train_part, steps=args.steps, batch=args.batch, lr=args.lr, seed=seed)
            results.append((accuracy(model, train_part), accuracy(model, test_part),
                            accuracy(model, test_part, "shuffled"), seconds))
        trainable = sum(p.numel() for a in model.adapters for p in a.parameters() if p.requires_grad)
        mean = [sum(r[i] for r in results) / len(results) for i in range(4)]
        print(f"| {spec} | {trainable:,} | {100 * mean[0]:.1f} | {100 * mean[1]:.1f} | {100 * mean[2]:.1f} | "
              f"{mean[3]:.0f} |", flush=True)


if __name__ == "__main__":
    main()
