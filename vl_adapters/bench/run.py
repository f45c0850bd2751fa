"""`vl-adapters bench`: the ablation grid on the synthetic temporal benchmark, feature cache on.

Protocol (fixed; the same for every row, never tuned per adapter):
- data: `vl_adapters.data.synthetic` (seed 0), videos decoded by the generic JSONL dataset (PyAV/decord),
  encoded once by the frozen `tiny:synthetic` backbone into the engine's feature cache (data/cache.py);
  text features are computed once (the text tower is frozen too).
- training: the retrieval task head of the model (symmetric InfoNCE, + matching loss for cross adapters),
  AdamW lr 1e-3, weight decay 0.01, batch of 32 train videos each with one of its captions (temporal or
  static, drawn at random), the same number of epochs for every row. Multiple-choice is not trained: it
  is scored zero-shot by the retrieval-trained model (candidate with the highest score wins).
- evaluation on the test pairs: "static" retrieval = forward videos with their static captions (the
  backward twin shares the static caption, so it is not in that pool); "temporal" retrieval = every test
  video (both twins) with its event caption. MC accuracy per question type. Shuffle test: the same
  evaluation with each video's frames permuted (fixed seed); reported as the drop.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from .grid import GridRow, build_grid

BACKBONE = "tiny:synthetic"


@dataclass
class BenchConfig:
    num_train_pairs: int = 64
    num_test_pairs: int = 32
    num_frames: int = 16
    epochs: int = 8
    rerank_k: int = 10  # cross adapters re-rank each text's top-k (exhaustive scoring is too slow on CPU)
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 0.01
    seeds: tuple[int, ...] = (0,)
    data_seed: int = 0
    threads: int = 2


PRESETS = {
    "default": BenchConfig(),
    "full": BenchConfig(num_train_pairs=192, num_test_pairs=64, epochs=16, rerank_k=20, seeds=(0, 1, 2)),
    "tiny": BenchConfig(num_train_pairs=4, num_test_pairs=2, num_frames=8, epochs=1, batch_size=8, rerank_k=4),
}


# ---------------------------------------------------------------- data and cache
class Split:
    """One part (train/test) of the benchmark as cached features + row metadata."""

    def __init__(self, root: Path, part: str, backbone, cfg: BenchConfig, cache_dir: Path, log) -> None:
        from vl_adapters.data import build_dataset
        from vl_adapters.data.cache import FeatureCache, cache_fingerprint, extract_features

        self.rows = [json.loads(line) for line in (root / f"retrieval_{part}.jsonl").read_text().splitlines()]
        self.mc = [json.loads(line) for line in (root / f"mc_{part}.jsonl").read_text().splitlines()]
        dataset = build_dataset("jsonl", root, part, file=f"retrieval_{part}.jsonl", num_frames=cfg.num_frames,
                                sampler="uniform", size=None, on_bad_video="raise")
        start = time.time()
        directory = extract_features(dataset, backbone, cache_dir / part, sampler="uniform",
                                     num_frames=cfg.num_frames, progress=False, on_bad_video="raise")
        cache = FeatureCache(directory)
        cache.check(cache_fingerprint(backbone, sampler="uniform", num_frames=cfg.num_frames, dataset=dataset))
        log(f"[bench] {part}: {len(dataset.video_ids)} videos cached in {time.time() - start:.1f}s ({directory})")
        self.video_ids = [str(v) for v in dataset.video_ids]
        self.video_index = {v: i for i, v in enumerate(self.video_ids)}
        self.video = cache.features(list(range(len(self.video_ids))))
        texts = [r["text"] for r in self.rows]
        self.text = _encode_texts(backbone, texts)
        self.text_video = torch.tensor([self.video_index[r["video_id"]] for r in self.rows])
        self.text_type = [r["question_type"] for r in self.rows]


@torch.no_grad()
def _encode_texts(backbone, texts: list[str], chunk: int = 256):
    from vl_adapters.core.features import TextFeatures

    parts = [backbone.encode_text(texts[i:i + chunk]) for i in range(0, len(texts), chunk)]
    if len(parts) == 1:
        return parts[0]
    return TextFeatures(text_emb=torch.cat([p.text_emb for p in parts]),
                        token_states=torch.cat([p.token_states for p in parts]),
                        token_mask=torch.cat([p.token_mask for p in parts]),
                        input_ids=torch.cat([p.input_ids for p in parts]), texts=list(texts))


# ---------------------------------------------------------------- train and evaluate
def train_row(model, train: Split, cfg: BenchConfig, seed: int) -> float:
    """The smallest loop: the engine's Trainer reads datasets from configs, while the bench trains on
    features it already holds in memory; it uses the model's own task head (same loss as the Trainer)."""
    params = model.trainable_parameters()
    optimiser = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    gen = torch.Generator().manual_seed(seed)
    captions_of: dict[int, list[int]] = {}
    for i, v in enumerate(train.text_video.tolist()):
        captions_of.setdefault(v, []).append(i)
    n = len(train.video_ids)
    steps = cfg.epochs * max(n // cfg.batch_size, 1)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimiser, lambda s: min(1.0, (s + 1) / max(steps // 10, 1)) * 0.5 * (1 + np.cos(np.pi * s / steps)))
    model.train()
    start = time.time()
    for _ in range(cfg.epochs):
        order = torch.randperm(n, generator=gen)
        for b in range(max(n // cfg.batch_size, 1)):
            vids = order[b * cfg.batch_size:(b + 1) * cfg.batch_size]
            if len(vids) < 2:
                continue
            texts = torch.tensor([captions_of[v][int(torch.randint(len(captions_of[v]), (1,), generator=gen))]
                                  for v in vids.tolist()])
            out = model({"video": train.video.index(vids), "text": train.text.index(texts)})
            optimiser.zero_grad(set_to_none=True)
            out.loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimiser.step()
            schedule.step()
    model.eval()
    return time.time() - start


def shuffled(video, seed: int):
    """Each video's frames in a random order (fixed seed): order-blind models are unaffected."""
    gen = torch.Generator().manual_seed(seed)
    b, t = video.frame_emb.shape[:2]
    perm = torch.stack([torch.randperm(t, generator=gen) for _ in range(b)])
    rows = torch.arange(b)[:, None]
    patches = video.patch_tokens[rows, perm] if video.patch_tokens is not None else None
    return video.replace(frame_emb=video.frame_emb[rows, perm], frame_mask=video.frame_mask[rows, perm],
                         patch_tokens=patches)


@torch.no_grad()
def evaluate_row(model, test: Split, backbone, video=None, rerank_k: int = 10) -> dict[str, float]:
    from vl_adapters.tasks.metrics import retrieval_metrics

    video = video if video is not None else test.video
    metrics: dict[str, float] = {}
    for part in ("static", "temporal"):
        idx = [i for i, q in enumerate(test.text_type) if q == part]
        if part == "static":  # one twin per pair: the backward twin shares the static caption
            idx = [i for i in idx if test.rows[i]["direction"] == "forward"]
        vids = sorted({int(test.text_video[i]) for i in idx})
        column = {v: j for j, v in enumerate(vids)}
        sims = model.similarity(test.text.index(torch.tensor(idx)), video.index(torch.tensor(vids)),
                                rerank_k=rerank_k)
        owner = [column[int(test.text_video[i])] for i in idx]
        for k, v in retrieval_metrics(sims, owner).items():
            if k.endswith(("R@1", "R@5")):  # the engine's metrics are percentages; the bench keeps fractions
                metrics[f"{part}/{k.replace('@', '')}"] = v / 100.0
    # multiple choice, scored by the same model: dual similarity, or the cross adapters' pair score
    for part in ("static", "temporal"):
        rows = [r for r in test.mc if r["question_type"] == part]
        if not rows:
            continue
        texts = [c for r in rows for c in r["candidates"]]
        owners = torch.tensor([test.video_index[r["video_id"]] for r in rows for _ in r["candidates"]])
        text = model.encode_text(_encode_texts(backbone, texts))
        vfeat = model.encode_video(video.index(owners))
        if model.cross_adapters:
            scores = model.score_pairs(text, vfeat)
        else:
            scores = model.dual_similarity(text, vfeat).diagonal()
        correct, start = 0, 0
        for r in rows:
            k = len(r["candidates"])
            correct += int(scores[start:start + k].argmax()) == r["answer"]
            start += k
        metrics[f"mc/{part}"] = correct / len(rows)
    return metrics


def run_row(row: GridRow, backbone, train: Split, test: Split, cfg: BenchConfig, seed: int) -> dict:
    import vl_adapters as vla

    torch.manual_seed(seed)
    model = vla.wrap(backbone, list(row.adapters), task="retrieval")
    train_seconds = train_row(model, train, cfg, seed) if row.train else 0.0
    metrics = evaluate_row(model, test, backbone, rerank_k=cfg.rerank_k)
    shuffled_metrics = evaluate_row(model, test, backbone, video=shuffled(test.video, seed=1234), rerank_k=cfg.rerank_k)
    for key, value in shuffled_metrics.items():
        metrics[f"shuffled/{key}"] = value
    metrics["shuffle_drop/temporal_t2v_R1"] = metrics["temporal/t2v_R1"] - shuffled_metrics["temporal/t2v_R1"]
    metrics["shuffle_drop/mc_temporal"] = metrics["mc/temporal"] - shuffled_metrics["mc/temporal"]
    metrics["trainable_params"] = sum(p.numel() for p in model.trainable_parameters()) if row.train else 0
    metrics["train_seconds"] = train_seconds
    metrics["seed"] = seed
    return metrics


def run_bench(out: str | Path, cfg: BenchConfig, *, adapters: list[str] | None = None,
              data_dir: str | Path | None = None, pretrained: str | None = None, log=print) -> dict:
    from vl_adapters.backbones import load_backbone
    from vl_adapters.data.synthetic import generate

    torch.set_num_threads(cfg.threads)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    data_root = Path(data_dir) if data_dir else out / "data"
    meta_path = data_root / "meta.json"
    wanted = {"num_train_pairs": cfg.num_train_pairs, "num_test_pairs": cfg.num_test_pairs,
              "num_frames": cfg.num_frames, "seed": cfg.data_seed}
    have = json.loads(meta_path.read_text())["config"] if meta_path.exists() else {}
    if any(have.get(k) != v for k, v in wanted.items()):
        start = time.time()
        generate(data_root, **wanted)
        log(f"[bench] generated {2 * (cfg.num_train_pairs + cfg.num_test_pairs)} videos in "
            f"{time.time() - start:.1f}s under {data_root}")
    rows, notes = build_grid(adapters)
    for note in notes:
        log(f"[bench] note: {note}")
    backbone = load_backbone(BACKBONE, pretrained=pretrained, device="cuda" if torch.cuda.is_available() else "cpu")
    cache_dir = data_root / f"cache-{backbone.fingerprint()}-{cfg.num_frames}f"
    train, test = (Split(data_root, part, backbone, cfg, cache_dir, log) for part in ("train", "test"))
    results = []
    for row in rows:
        runs = []
        for seed in (cfg.seeds if row.train else cfg.seeds[:1]):
            metrics = run_row(row, backbone, train, test, cfg, seed)
            runs.append(metrics)
            log(f"[bench] {row.name} seed {seed}: temporal t2v R@1 {100 * metrics['temporal/t2v_R1']:.1f} "
                f"static t2v R@1 {100 * metrics['static/t2v_R1']:.1f} MC temporal {100 * metrics['mc/temporal']:.1f} "
                f"({metrics['train_seconds']:.1f}s)")
        results.append({"name": row.name, "adapters": list(row.adapters), "trained": row.train, "runs": runs})
    meta = {"backbone": BACKBONE, "config": asdict(cfg), "notes": notes, "torch": torch.__version__,
            "chance": {"static_R1": 1 / cfg.num_test_pairs, "temporal_R1": 1 / (2 * cfg.num_test_pairs)}}
    from .report import markdown_table, write_results

    paths = write_results(out, results, meta)
    print(markdown_table(results))
    log(f"[bench] wrote {', '.join(str(p) for p in paths.values())}")
    return {"results": results, "meta": meta, "paths": {k: str(v) for k, v in paths.items()}}


def add_cli(subparsers) -> None:
    p = subparsers.add_parser("bench", help="adapter ablations on the synthetic temporal benchmark (or --suite perf)")
    p.add_argument("--out", default="bench-results", help="results directory (tables, JSON, CSV, PNG, data, cache)")
    p.add_argument("--suite", choices=("ablation", "perf"), default="ablation")
    size = p.add_mutually_exclusive_group()
    size.add_argument("--full", action="store_true", help="larger data, more epochs, 3 seeds (mean ± std)")
    size.add_argument("--tiny", action="store_true", help="a miniature grid for CI (seconds)")
    p.add_argument("--adapters", nargs="+", default=None,
                   help="adapters to run instead of the registry's (a+b for a combination); the two "
                        "mean-pooling baselines always run")
    p.add_argument("--epochs", type=int, default=None, help="override the preset's epochs")
    p.add_argument("--seeds", type=int, nargs="+", default=None, help="override the preset's training seeds")
    p.add_argument("--data-dir", default=None, help="where the synthetic data and its cache live (default OUT/data)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default 2)")
    p.set_defaults(func=_run_cli)


def _run_cli(args) -> int:
    import dataclasses

    cfg = PRESETS["full" if args.full else "tiny" if args.tiny else "default"]
    changes = {}
    if args.epochs is not None:
        changes["epochs"] = args.epochs
    if args.seeds is not None:
        changes["seeds"] = tuple(args.seeds)
    if args.threads is not None:
        changes["threads"] = args.threads
    cfg = dataclasses.replace(cfg, **changes)
    if args.suite == "perf":
        from .perf import run_perf

        run_perf(args.out, adapters=args.adapters, tiny=args.tiny)
        return 0
    run_bench(args.out, cfg, adapters=args.adapters, data_dir=args.data_dir)
    return 0
