"""Does an adapter learn frame order? Temporal multiple choice on the synthetic benchmark, frozen `tiny:synthetic`.

    .venv/bin/python benchmarks/temporal_fit.py [--pairs 64 --test-pairs 32 --frames 16 --steps 300 --batch 32
                                                 --lr 1e-3 --seeds 0 --data DIR --adapters A B ...]

Protocol, the same for every row and never tuned per row: the synthetic generator's "temporal" multiple-choice
rows (mc_{train,test}.jsonl: the true event caption against the backward twin's caption, the events in the
other order and the moves flipped; every video comes with its backward twin, so order-free pooling is at
chance by construction). Frames are encoded once by the frozen backbone (the engine's feature cache) and
every candidate string once by the frozen text tower (the answer alone: all rows share one question).
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
from vl_adapters.bench.run import BenchConfig, Split, shuffled
from vl_adapters.core.features import concat_text_features

DEFAULT_ROWS = ["mean", "temporal_transformer", "tem_temporal_aligner"]


class Questions:
    """The temporal multiple-choice rows of one split as index tensors into cached video and text features."""

    def __init__(self, split: Split, text_row: dict[str, int]) -> None:
        rows = [r for r in split.mc if r["question_type"] == "temporal"]
        k = max(len(r["candidates"]) for r in rows)
        self.video = torch.tensor([split.video_index[r["video_id"]] for r in rows])
        self.text = torch.tensor([[text_row[c] for c in r["candidates"]] + [text_row[""]] * (k - len(r["candidates"]))
                                  for r in rows])
        self.mask = torch.tensor([[i < len(r["candidates"]) for i in range(k)] for r in rows])
        self.answer = torch.tensor([r["answer"] for r in rows])
        self.features = split.video

    def __len__(self) -> int:
        return len(self.answer)

    def batch(self, rows: torch.Tensor, text, video=None, *, with_answer: bool = True) -> dict:
        video = self.features if video is None else video
        out = {"video": video.index(self.video[rows]), "text": text.index(self.text[rows].flatten()),
               "candidate_mask": self.mask[rows]}
        if with_answer:
            out["answer"] = self.answer[rows]
        return out


def encode_strings(backbone, strings: list[str], chunk: int = 256):
    with torch.no_grad():
        return concat_text_features([backbone.encode_text(strings[i:i + chunk]).float()
                                     for i in range(0, len(strings), chunk)])


@torch.no_grad()
def accuracy(model, questions: Questions, text, video=None, chunk: int = 256) -> float:
    model.eval()
    correct = 0
    for rows in torch.arange(len(questions)).split(chunk):
        scores = model(questions.batch(rows, text, video, with_answer=False)).scores
        correct += int((scores.argmax(1) == questions.answer[rows]).sum())
    return correct / len(questions)


def train(model, questions: Questions, text, *, steps: int, batch: int, lr: float, seed: int) -> float:
    params = model.trainable_parameters()
    optimiser = torch.optim.AdamW(params, lr=lr, weight_decay=0.01)
    generator = torch.Generator().manual_seed(seed)
    model.train()
    start = time.time()
    for _ in range(steps):
        rows = torch.randperm(len(questions), generator=generator)[:batch]
        loss = model(questions.batch(rows, text)).loss
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

    from vl_adapters.data.synthetic import generate

    root = Path(args.data)
    wanted = {"num_train_pairs": args.pairs, "num_test_pairs": args.test_pairs, "num_frames": args.frames, "seed": 0}
    meta = root / "meta.json"
    if not meta.exists() or any(json.loads(meta.read_text())["config"].get(k) != v for k, v in wanted.items()):
        generate(root, **wanted)
    backbone = vla.load_backbone("tiny:synthetic", device="cpu")
    cfg = BenchConfig(num_train_pairs=args.pairs, num_test_pairs=args.test_pairs, num_frames=args.frames)
    cache = root / f"cache-{backbone.fingerprint()}-{args.frames}f"
    splits = {part: Split(root, part, backbone, cfg, cache, log=lambda *_: None) for part in ("train", "test")}
    strings = sorted({c for s in splits.values() for r in s.mc for c in r["candidates"]} | {""})
    text = encode_strings(backbone, strings)
    text_row = {s: i for i, s in enumerate(strings)}
    train_q, test_q = (Questions(splits[p], text_row) for p in ("train", "test"))
    test_shuffled = shuffled(test_q.features, seed=1234)
    print(f"temporal MC: {len(train_q)} training / {len(test_q)} held-out questions, {args.frames} frames, "
          f"{args.steps} steps x {args.batch}, AdamW lr {args.lr}, seeds {args.seeds}")
    print("| row | trainable | train acc | held-out acc | held-out, frames shuffled | seconds |")
    print("|---|---:|---:|---:|---:|---:|")
    for spec in args.adapters:
        results = []
        for seed in args.seeds:
            torch.manual_seed(seed)
            model = vla.wrap(backbone, parse_row(spec), task="multiple_choice")
            seconds = train(model, train_q, text, steps=args.steps, batch=args.batch, lr=args.lr, seed=seed)
            results.append((accuracy(model, train_q, text), accuracy(model, test_q, text),
                            accuracy(model, test_q, text, test_shuffled), seconds))
        trainable = sum(p.numel() for a in model.adapters for p in a.parameters() if p.requires_grad)
        mean = [sum(r[i] for r in results) / len(results) for i in range(4)]
        print(f"| {spec} | {trainable:,} | {100 * mean[0]:.1f} | {100 * mean[1]:.1f} | {100 * mean[2]:.1f} | "
              f"{mean[3]:.0f} |", flush=True)


if __name__ == "__main__":
    main()
