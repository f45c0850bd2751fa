"""One training epoch of the same adapter from raw videos and from the feature cache (docs/performance.md
target 2: the cached epoch at least 50x faster, decoding included).

Generates an MSR-VTT-layout fixture of real H.264 files (PyAV), trains temporal_transformer for one
epoch from the videos (decoding and both frozen towers included), extracts the cache (frame features and
the split's text features), trains the same epoch from it (neither tower runs), and prints both times
and their ratio (extraction is reported apart: it is paid once, not per epoch). The cached epoch is
timed --cached-repeats times and its median taken.

    python benchmarks/cache_vs_raw.py                      # tiny backbone, 48 videos, CPU
    python benchmarks/cache_vs_raw.py --videos 512 --workers 8 --backbone open_clip:ViT-B-32   # a GPU
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from vl_adapters.bench.perf import default_results_dir, device_name, write_results

WORDS = ["a", "red", "blue", "ball", "car", "man", "dog", "runs", "jumps", "on", "the", "road", "field", "slowly"]


def write_video(path: Path, *, seconds: float, fps: int, height: int, width: int, seed: int) -> None:
    import av

    rng = np.random.default_rng(seed)
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"preset": "veryfast", "g": str(2 * fps)}
        base = rng.integers(0, 256, (height // 8, width // 8, 3), dtype=np.uint8)
        for i in range(int(seconds * fps)):
            # a moving textured pattern: cheap to make, not trivially compressible
            shifted = np.roll(base, shift=i, axis=1)
            image = np.kron(shifted, np.ones((8, 8, 1), dtype=np.uint8))
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def make_fixture(root: Path, *, videos: int, seconds: float, fps: int, height: int, width: int) -> None:
    """MSR-VTT layout: MSRVTT_data.json, MSRVTT_train.9k.csv, MSRVTT_JSFUSION_test.csv, videos/."""
    rng = np.random.default_rng(0)
    (root / "videos").mkdir(parents=True, exist_ok=True)
    ids = [f"video{i}" for i in range(videos)]
    for i, vid in enumerate(ids):
        write_video(root / "videos" / f"{vid}.mp4", seconds=seconds, fps=fps, height=height, width=width, seed=i)
    sentences = [{"video_id": vid, "caption": " ".join(rng.choice(WORDS, 6))} for vid in ids]
    (root / "MSRVTT_data.json").write_text(json.dumps({"sentences": sentences}))
    (root / "MSRVTT_train.9k.csv").write_text("video_id\n" + "\n".join(ids) + "\n")
    rows = [f"ret{i},{vid},{vid},{s['caption']}" for i, (vid, s) in enumerate(zip(ids, sentences, strict=True))]
    (root / "MSRVTT_JSFUSION_test.csv").write_text("key,vid_key,video_id,sentence\n" + "\n".join(rows) + "\n")


def epoch_seconds(overrides: dict) -> tuple[float, int]:
    """(seconds of one epoch, texts the run's text store sent through the text tower)."""
    from vl_adapters.train.config import load_config
    from vl_adapters.train.trainer import Trainer

    trainer = Trainer(load_config(overrides=overrides))
    start = time.perf_counter()
    trainer.fit()
    return time.perf_counter() - start, trainer.model.text_store.encoded


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", help="an existing MSR-VTT-layout directory (default: generate one)")
    parser.add_argument("--videos", type=int, default=48)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--fps", type=int, default=15)
    parser.add_argument("--height", type=int, default=240)
    parser.add_argument("--width", type=int, default=320)
    parser.add_argument("--frames", type=int, default=12)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--backbone", default="tiny")
    parser.add_argument("--pretrained")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: leave as is)")
    parser.add_argument("--cached-repeats", type=int, default=3)
    parser.add_argument("--cached-workers", type=int, default=None,
                        help="DataLoader workers of the cached epochs (default --workers): memory-mapped reads "
                             "need no decoders, and starting workers is paid every epoch")
    parser.add_argument("--out", default=None, help="results directory (default benchmarks/results/perf-{gpu,cpu})")
    parser.add_argument("--name", default="cache_vs_raw", help="results file name (without extension)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    from vl_adapters import load_backbone
    from vl_adapters.data import build_dataset
    from vl_adapters.data.cache import extract_features

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        root = Path(args.root) if args.root else tmp / "msrvtt"
        if not args.root:
            start = time.perf_counter()
            make_fixture(root, videos=args.videos, seconds=args.seconds, fps=args.fps, height=args.height,
                         width=args.width)
            print(f"fixture: {args.videos} H.264 videos {args.width}x{args.height}, {args.seconds:g} s at "
                  f"{args.fps} fps, written in {time.perf_counter() - start:.1f} s")
        common = {"epochs": 1, "seed": 0, "progress": False, "eval.every_epoch": False, "data.eval_split": "",
                  "data.dataset": "msrvtt", "data.root": str(root), "data.num_frames": args.frames,
                  "data.batch_size": args.batch_size, "data.num_workers": args.workers,
                  "model.backbone": args.backbone, "model.pretrained": args.pretrained,
                  "model.adapters": [{"type": "temporal_transformer", "layers": 4}]}
        raw, raw_texts = epoch_seconds({**common, "run_dir": str(tmp / "raw")})

        backbone = load_backbone(args.backbone, pretrained=args.pretrained)
        dataset = build_dataset("msrvtt", root, "train", num_frames=args.frames, sampler="uniform",
                                size=backbone.dims.image_size)
        start = time.perf_counter()
        extract_features(dataset, backbone, tmp / "cache" / "train", sampler="uniform", num_frames=args.frames,
                         batch_size=args.batch_size, progress=False, num_workers=args.workers)
        extract = time.perf_counter() - start
        cached_workers = args.workers if args.cached_workers is None else args.cached_workers
        runs = [epoch_seconds({**common, "run_dir": str(tmp / f"cached{i}"), "data.cache": str(tmp / "cache"),
                               "data.num_workers": cached_workers}) for i in range(args.cached_repeats)]
    cached = statistics.median(seconds for seconds, _ in runs)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    table = [f"device: {device_name(device)}; backbone {args.backbone}; adapter temporal_transformer (4 layers); "
             f"{args.videos} videos ({args.width}x{args.height}, {args.seconds:g} s at {args.fps} fps), {args.frames} "
             f"frames, batch {args.batch_size}, {args.workers} DataLoader workers ({cached_workers} for the cached "
             f"epochs); cached: median of {args.cached_repeats} epochs", "",
             "| epoch | seconds | texts through the text tower | raw / cached (target >= 50) |", "|---|---|---|---|",
             f"| from raw videos | {raw:.2f} | {raw_texts} | |",
             f"| from the cache | {cached:.2f} | {max(texts for _, texts in runs)} | {raw / cached:.1f}x |",
             f"| extraction (once) | {extract:.2f} | | |"]
    write_results(args.out or default_results_dir(), args.name,
                  {"device": device_name(device), "backbone": args.backbone, "videos": args.videos,
                   "frames": args.frames, "batch_size": args.batch_size, "workers": args.workers,
                   "cached_workers": cached_workers,
                   "raw_epoch_s": raw, "cached_epoch_s": [seconds for seconds, _ in runs], "extract_s": extract,
                   "ratio": raw / cached}, table)


if __name__ == "__main__":
    main()
