"""Does an adapter learn time? Multiple-choice training on the synthetic temporal benchmark, one protocol.

Every row is trained the same way, fixed before any result was seen: the multiple-choice task head
(cross-entropy over the candidates "question answer"), AdamW lr 1e-3, weight decay 0.01, batch 32 of
training questions (static and temporal mixed), a fixed number of steps, warm-up then cosine, on the
feature cache of the frozen `tiny:synthetic` backbone (uniform 16 frames). Evaluation on the test
split: multiple-choice accuracy per question type (temporal candidates: the true narration, the
backward twin's, the order-swapped and the direction-flipped one, none refutable from a single frame),
temporal text-to-video R@1 over both twins, and the same with each video's frames shuffled.

    python benchmarks/temporal_alignment.py                                   # the rows below, seed 0
    python benchmarks/temporal_alignment.py --rows mean multi_level_alignment --seeds 0 1 2 --steps 600

Rows are adapter names (a+b for a combination, name:key=value,key=value for config values, e.g.
multi_level_alignment:weight_segment=0); "mean" is mean pooling with its temperature trained.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from vl_adapters.bench.run import BenchConfig, Split, _encode_texts, shuffled

TEMPLATE = "{question} {answer}"


def row_adapters(row: str) -> list:
    if row == "mean":
        return []
    specs = []
    for part in row.split("+"):
        name, _, settings = part.partition(":")
        values = dict(item.split("=", 1) for item in settings.split(",")) if settings else {}
        specs.append({"type": name, **{k: json.loads(v) for k, v in values.items()}})
    return specs


def candidate_table(split: Split, backbone):
    """Every multiple-choice row's candidates as one TextFeatures table, and each row's slice of it."""
    texts, spans = [], []
    for row in split.mc:
        spans.append((len(texts), len(row["candidates"])))
        texts += [TEMPLATE.format(question=row["question"], answer=a) for a in row["candidates"]]
    return _encode_texts(backbone, texts), spans


def mc_batch(split: Split, table, spans, rows: list[int], video=None) -> dict:
    k = max(spans[r][1] for r in rows)
    index, mask = [], []
    for r in rows:
        start, n = spans[r]
        index += [start + j if j < n else start for j in range(k)]  # padding slots are masked out
        mask.append([j < n for j in range(k)])
    videos = torch.tensor([split.video_index[split.mc[r]["video_id"]] for r in rows])
    video = video if video is not None else split.video
    return {"video": video.index(videos), "text": table.index(torch.tensor(index)),
            "candidate_mask": torch.tensor(mask), "answer": torch.tensor([split.mc[r]["answer"] for r in rows])}


def train(model, split: Split, table, spans, *, steps: int, batch_size: int, seed: int) -> float:
    params = model.trainable_parameters()
    optimiser = torch.optim.AdamW(params, lr=1e-3, weight_decay=0.01)
    warmup = max(steps // 10, 1)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimiser, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + np.cos(np.pi * s / steps)))
    gen = torch.Generator().manual_seed(seed)
    model.train()
    start, running = time.time(), []
    for step in range(steps):
        rows = torch.randint(len(split.mc), (batch_size,), generator=gen).tolist()
        out = model(mc_batch(split, table, spans, rows))
        optimiser.zero_grad(set_to_none=True)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimiser.step()
        schedule.step()
        running.append({k: v.item() for k, v in out.losses.items()})
        if (step + 1) % 100 == 0:  # the training curve, to see where it plateaus
            means = {k: round(float(np.mean([r[k] for r in running if k in r])), 3) for k in running[-1]}
            print(f"  step {step + 1}: {means} ({time.time() - start:.0f}s)", flush=True)
            running = []
    model.eval()
    return time.time() - start


@torch.no_grad()
def evaluate(model, split: Split, table, spans, video=None) -> dict[str, float]:
    from vl_adapters.tasks.metrics import retrieval_metrics

    split_video = video if video is not None else split.video
    metrics = {}
    for kind in ("static", "temporal"):
        rows = [i for i, r in enumerate(split.mc) if r["question_type"] == kind]
        correct = 0
        for start in range(0, len(rows), 64):
            chunk = rows[start:start + 64]
            out = model(mc_batch(split, table, spans, chunk, split_video))
            correct += int((out.scores.argmax(1) == torch.tensor([split.mc[r]["answer"] for r in chunk])).sum())
        metrics[f"mc_{kind}"] = correct / len(rows)
    idx = [i for i, q in enumerate(split.text_type) if q == "temporal"]
    vids = sorted({int(split.text_video[i]) for i in idx})
    column = {v: j for j, v in enumerate(vids)}
    sims = model.similarity(split.text.index(torch.tensor(idx)), split_video.index(torch.tensor(vids)))
    metrics["temporal_t2v_R1"] = retrieval_metrics(sims, [column[int(split.text_video[i])] for i in idx])["t2v_R@1"] / 100
    return metrics


def main() -> None:
    import vl_adapters as vla
    from vl_adapters.backbones import load_backbone
    from vl_adapters.data.synthetic import generate

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", nargs="+", default=["mean", "temporal_transformer", "multi_level_alignment"])
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--train-pairs", type=int, default=96)
    parser.add_argument("--test-pairs", type=int, default=100)
    parser.add_argument("--data-dir", default="temporal-alignment-data")
    parser.add_argument("--out", default=None, help="write the results as JSON here")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    cfg = BenchConfig(num_train_pairs=args.train_pairs, num_test_pairs=args.test_pairs)
    root = Path(args.data_dir)
    if not (root / "meta.json").exists():
        generate(root, num_train_pairs=cfg.num_train_pairs, num_test_pairs=cfg.num_test_pairs,
                 num_frames=cfg.num_frames, seed=cfg.data_seed)
    backbone = load_backbone("tiny:synthetic", device="cuda" if torch.cuda.is_available() else "cpu")
    cache = root / f"cache-{backbone.fingerprint()}-{cfg.num_frames}f"
    train_split, test_split = (Split(root, part, backbone, cfg, cache, print) for part in ("train", "test"))
    tables = {name: candidate_table(s, backbone) for name, s in (("train", train_split), ("test", test_split))}
    shuffled_video = shuffled(test_split.video, seed=1234)
    results = []
    for row in args.rows:
        adapters = row_adapters(row)
        for seed in args.seeds:
            torch.manual_seed(seed)
            model = vla.wrap(backbone, adapters, task="multiple_choice")
            seconds = train(model, train_split, *tables["train"], steps=args.steps, batch_size=args.batch_size,
                            seed=seed)
            metrics = evaluate(model, test_split, *tables["test"])
            for key, value in evaluate(model, test_split, *tables["test"], video=shuffled_video).items():
                metrics[f"shuffled_{key}"] = value
            metrics.update(row=row, seed=seed, train_seconds=round(seconds, 1))
            results.append(metrics)
            print(json.dumps(metrics))
    print(f"\n| row | MC temporal | MC static | temporal t2v R@1 | shuffled MC temporal | shuffled t2v R@1 |\n"
          f"|---|---|---|---|---|---|")
    for row in args.rows:
        runs = [r for r in results if r["row"] == row]
        cell = lambda key: f"{100 * np.mean([r[key] for r in runs]):.1f} ± {100 * np.std([r[key] for r in runs]):.1f}"  # noqa: E731
        print(f"| {row} | {cell('mc_temporal')} | {cell('mc_static')} | {cell('temporal_t2v_R1')} | "
              f"{cell('shuffled_mc_temporal')} | {cell('shuffled_temporal_t2v_R1')} |")
    if args.out:
        Path(args.out).write_text(json.dumps({"args": vars(args), "results": results}, indent=2))


if __name__ == "__main__":
    main()
