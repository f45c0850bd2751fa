"""The synthetic temporal benchmark as a preset of `vl-adapters bench`: it writes its videos and JSONL
(vl_adapters/data/synthetic.py, the generic JSONL format) and a training config over them, and from
there every row runs the same path as a user's own data (`--config`).

Each preset is the data's size plus a training config: the same protocol for every row, fixed before
any result was read (docs/benchmark.md says how it was chosen). `vl-adapters bench` writes the resolved
config to <out>/config.yaml: `vl-adapters bench --config <out>/config.yaml` runs the same grid.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

BACKBONE = "tiny:synthetic"

# data: the generator's arguments; train: the training config over it (the `vl-adapters train` keys)
PRESETS = {
    "default": {
        "data": {"num_train_pairs": 800, "num_val_pairs": 50, "num_test_pairs": 200, "num_frames": 8, "seed": 0,
                 "max_events": 2, "move_fraction": 0.5},
        "train": {"epochs": 3, "data": {"batch_size": 32}, "optim": {"lr": 1e-3}},
        "seeds": [0, 1, 2],
    },
    "full": {
        "data": {"num_train_pairs": 4000, "num_val_pairs": 100, "num_test_pairs": 500, "num_frames": 8, "seed": 0,
                 "max_events": 2, "move_fraction": 0.5},
        "train": {"epochs": 8, "data": {"batch_size": 32}, "optim": {"lr": 1e-3}},
        "seeds": [0, 1, 2],
    },
    "tiny": {  # a miniature grid for CI: a few videos, one short epoch
        "data": {"num_train_pairs": 6, "num_val_pairs": 2, "num_test_pairs": 3, "num_frames": 4, "seed": 0},
        "train": {"epochs": 1, "data": {"batch_size": 4}, "optim": {"lr": 1e-3}, "eval": {"rerank_k": 2}},
        "seeds": [0, 1],
    },
}

SUMMARY = ("Each row is the frozen tiny:synthetic image backbone with one adapter (or none), trained "
           "separately for text-to-video retrieval and for multiple choice on synthetic videos whose "
           "'static' captions any single frame answers and whose 'temporal' captions only the order of "
           "the frames can (every video has a backward twin with the same frames). A model that uses time "
           "beats mean pooling in the temporal columns and loses that lead when its test frames are "
           "shuffled (shuffle drop); order-blind mean pooling drops by exactly 0.")


def synthetic_config(root: Path, preset: str) -> dict:
    """The training config (a mapping, with its `bench:` section) of a synthetic preset over `root`."""
    spec = PRESETS[preset]
    from .jobs import merge

    base = {
        "data": {"dataset": "jsonl", "root": str(root), "train_split": "train", "eval_split": "val",
                 "num_frames": spec["data"]["num_frames"], "sampler": "uniform", "eval_batch_size": 64,
                 "num_workers": 0},
        "model": {"backbone": BACKBONE},
        "optim": {"weight_decay": 0.01, "warmup_ratio": 0.1, "grad_clip": 1.0},
        "eval": {"rerank_k": 10},
        "log_every": 10,
        "bench": {
            "seeds": spec["seeds"],
            "tasks": {"retrieval": {"data": {"options": {"file": "retrieval_{split}.jsonl"}}},
                      "multiple_choice": {"data": {"options": {"file": "mc_{split}.jsonl"}}}},
            "control_metric": "multiple_choice/accuracy/temporal",
            "report": ["multiple_choice/accuracy/temporal", "multiple_choice/shuffle_drop/accuracy/temporal",
                       "multiple_choice/twin", "multiple_choice/accuracy/static",
                       "retrieval/t2v_R@1/temporal", "retrieval/shuffle_drop/t2v_R@1/temporal",
                       "retrieval/twin", "retrieval/t2v_R@1/static"],
        },
    }
    return merge(base, spec["train"])


def prepare_data(root: Path, preset: str, *, workers: int, log=print) -> float:
    """Write the preset's synthetic benchmark to `root` unless it already holds it; returns seconds spent."""
    from vl_adapters.data.synthetic import generate

    wanted = PRESETS[preset]["data"]
    meta = root / "meta.json"
    have = json.loads(meta.read_text())["config"] if meta.exists() else {}
    if all(have.get(k) == v for k, v in wanted.items()):
        return 0.0
    start = time.perf_counter()
    generate(root, workers=workers, **wanted)
    seconds = time.perf_counter() - start
    pairs = wanted["num_train_pairs"] + wanted["num_val_pairs"] + wanted["num_test_pairs"]
    log(f"[bench] generated {2 * pairs} videos in {seconds:.1f}s under {root}")
    return seconds
