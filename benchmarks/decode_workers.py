"""Decoding throughput of extraction's loader per number of DataLoader workers (docs/performance.md: decoding,
not the GPU, bounds uncached work).

Encodes fixture clips (H.264, 320x240, 10 s at 30 fps by default, like MSR-VTT's), then runs
`vl_adapters.data.cache.decode_loader` (what `vl-adapters extract` decodes with: T uniform frames at the
backbone's size, batches of clips) over every clip with 0, 1, 2, 4, ... workers and prints clips/s for
each, and the speed-up over 0 workers (decoding in the main process). Under torchrun each rank runs its
own loader, so a node's decode rate is the per-rank rate times the ranks, up to its cores.

    python benchmarks/decode_workers.py                    # writes benchmarks/results/perf-{gpu,cpu}/decode_workers.*
    python benchmarks/decode_workers.py --clips 128 --workers 0 1 2 4 8 16
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import torch

from vl_adapters.bench.perf import default_results_dir, write_results


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", type=int, default=32)
    parser.add_argument("--workers", type=int, nargs="+", default=None,
                        help="worker counts (default 0, 1, 2, 4, ... up to the cores)")
    parser.add_argument("--frames", type=int, default=12)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=4, help="clips per loader batch")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--fps", type=int, default=30)
    parser.add_argument("--reader", default="auto", choices=["auto", "decord", "pyav"])
    parser.add_argument("--rounds", type=int, default=2, help="passes over the worker counts, alternating")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    cores = os.cpu_count() or 1
    workers = args.workers or [0] + [2**i for i in range(0, 8) if 2**i <= cores]

    from loader_speed import clips_dataset, encode_clips

    from vl_adapters.data.cache import decode_loader

    with tempfile.TemporaryDirectory() as tmp:
        paths = encode_clips(Path(tmp), args.clips, args.seconds, args.fps, 320, 240, 250)
        dataset = clips_dataset(paths, num_frames=args.frames, size=args.size, sampler="uniform", reader=args.reader)
        batches = [list(range(i, min(i + args.batch_size, len(paths)))) for i in range(0, len(paths), args.batch_size)]
        seconds: dict[int, list[float]] = {w: [] for w in workers}
        for _ in range(args.rounds):
            for w in workers:
                start = time.perf_counter()
                decoded = sum(len(b["rows"]) for b in decode_loader(dataset, batches, on_bad_video="raise",
                                                                     num_workers=w, pin=False))
                seconds[w].append(time.perf_counter() - start)
                assert decoded == len(paths)
    best = {w: len(paths) / min(s) for w, s in seconds.items()}  # worker start-up is paid once per pass
    table = [f"{args.clips} clips of 320x240, {args.seconds:g} s at {args.fps} fps -> {args.frames} frames at "
             f"{args.size}x{args.size}; {cores} cores; torch threads {torch.get_num_threads()}; best of {args.rounds} "
             "alternating passes (worker start-up included)", "",
             "| workers | clips/s | x over 0 workers |", "|---|---|---|"]
    table += [f"| {w} | {best[w]:.1f} | {best[w] / best[workers[0]]:.2f} |" for w in workers]
    write_results(args.out or default_results_dir(), "decode_workers",
                  {"cores": cores, "clips": args.clips, "frames": args.frames, "size": args.size,
                   "clips_per_s": {str(w): v for w, v in best.items()},
                   "seconds": {str(w): s for w, s in seconds.items()}}, table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
