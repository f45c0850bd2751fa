"""Frozen image-tower throughput on one GPU: vl-adapters' Backbone.encode_video against open_clip's own
encode_image, eager and compiled, same GPU, same frames, in one run (docs/performance.md target 1).

For each of ViT-B/32, B/16 and L/14 with random weights (speed does not depend on weight values), a
batch of normalised frames already on the GPU goes through:

  open_clip eager        fp32 weights, torch.autocast(bf16): open_clip's documented way
  open_clip compiled     the same under torch.compile
  open_clip bf16 comp.   bf16 weights, compiled (a reference: how much is the weights' dtype alone)
  ours eager             load_backbone(precision="bf16"): bf16 weights, no autocast, SDPA (flash)
  ours compiled          the same with compile=<mode>
  ours from host uint8   compiled, frames as pinned uint8 on the host: transfer + transform included

The contenders run in alternation (A B C ... A B C ...) and each figure is the median. Ours returns more
than open_clip's encode_image (every patch token, as fp32, beside the pooled embedding). The GPU's bf16
matmul limit is measured in the same run (the best of square matmuls), and each model's GFLOP per frame is
counted by torch's FlopCounterMode. Targets: ours compiled >= 1.2x open_clip compiled; ViT-B/16 at >= 35%
of the matmul limit. With --profile, the top kernels of ours compiled on ViT-B/16 are written too.

    python benchmarks/gpu_encode.py                      # writes benchmarks/results/perf-gpu/gpu_encode.{json,md}
    python benchmarks/gpu_encode.py --models ViT-B-32 --compile-mode max-autotune --profile
"""

from __future__ import annotations

import argparse
import copy
import time

import torch

import vl_adapters as vla
from vl_adapters.bench.perf import alternate, default_results_dir, device_name, write_results


def matmul_limit_tflops(device, sizes=(4096, 8192, 16384), repeats=20) -> float:
    """The best bf16 matmul throughput of square products (what 'the GPU's limit' means here)."""
    best = 0.0
    for n in sizes:
        a = torch.randn(n, n, device=device, dtype=torch.bfloat16)
        b = torch.randn(n, n, device=device, dtype=torch.bfloat16)
        for _ in range(3):
            a @ b
        torch.cuda.synchronize(device)
        start = time.perf_counter()
        for _ in range(repeats):
            a @ b
        torch.cuda.synchronize(device)
        best = max(best, 2 * n**3 * repeats / (time.perf_counter() - start) / 1e12)
        del a, b
    return best


def gflop_per_frame(visual, size: int, device) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        visual(torch.randn(1, 3, size, size, device=device, dtype=next(visual.parameters()).dtype))
    return counter.get_total_flops() / 1e9


def contenders(name: str, frames: torch.Tensor, clips: int, mode: str | None, device):
    """(name -> zero-argument call, the open_clip vision tower, our compiled backbone)."""
    import open_clip

    reference = open_clip.create_model(name, pretrained=None, device=device).eval().requires_grad_(False)
    flat = frames.flatten(0, 1)

    def open_clip_eager():
        with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
            return reference.encode_image(flat)

    compiled_ref = torch.compile(reference.encode_image, mode=mode)

    def open_clip_compiled():
        with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
            return compiled_ref(flat)

    bf16_ref = copy.deepcopy(reference).to(torch.bfloat16)
    compiled_bf16 = torch.compile(bf16_ref.encode_image, mode=mode)
    flat_bf16 = flat.to(torch.bfloat16)

    def open_clip_bf16_compiled():
        with torch.no_grad():
            return compiled_bf16(flat_bf16)

    chunk = frames.shape[0] * frames.shape[1]
    ours = vla.load_backbone(f"open_clip:{name}", pretrained=None, device=device, precision="bf16",
                             chunk_size=chunk)
    ours_compiled = vla.load_backbone(f"open_clip:{name}", pretrained=None, device=device, precision="bf16",
                                      chunk_size=chunk, compile=mode or True)
    size = ours.dims.image_size
    host = torch.randint(0, 256, (clips, frames.shape[1], 3, size, size), dtype=torch.uint8).pin_memory()
    return {
        "open_clip eager": open_clip_eager,
        "open_clip compiled": open_clip_compiled,
        "open_clip bf16 compiled": open_clip_bf16_compiled,
        "ours eager": lambda: ours.encode_video(frames),
        "ours compiled": lambda: ours_compiled.encode_video(frames),
        "ours compiled, uint8 from host": lambda: ours_compiled.encode_video(host),
    }, reference.visual, ours_compiled


def profile_top_kernels(fn, path, rows: int = 20) -> None:
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        for _ in range(3):
            fn()
        torch.cuda.synchronize()
    path.write_text(prof.key_averages().table(sort_by="cuda_time_total", row_limit=rows) + "\n")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["ViT-B-32", "ViT-B-16", "ViT-L-14"])
    parser.add_argument("--clips", type=int, default=42, help="clips per batch (x frames = frames per batch)")
    parser.add_argument("--frames", type=int, default=12)
    parser.add_argument("--compile-mode", default=None, help="torch.compile mode for every compiled contender")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--profile", action="store_true", help="also write the top kernels of ours compiled")
    parser.add_argument("--out", default=None, help="results directory (default benchmarks/results/perf-gpu)")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        parser.error("needs a CUDA GPU (the figures are GPU throughput); none is present")
    device = torch.device("cuda")
    out = args.out or default_results_dir()
    limit = matmul_limit_tflops(device)
    print(f"bf16 matmul limit: {limit:.0f} TFLOP/s on {device_name(device)}")
    rows = []
    for name in args.models:
        size = vla.load_backbone(f"open_clip:{name}", pretrained=None, device="cpu").dims.image_size
        frames = torch.randn(args.clips, args.frames, 3, size, size, device=device)
        fns, visual, ours = contenders(name, frames, args.clips, args.compile_mode, device)
        gflop = gflop_per_frame(visual, size, device)
        seconds = alternate(fns, device, rounds=args.rounds, repeats=args.repeats, warmup=2)
        per_batch = args.clips * args.frames
        fps = {k: per_batch / v for k, v in seconds.items()}
        row = {"model": name, "gflop_per_frame": gflop, "frames_per_batch": per_batch, "frames_per_s": fps,
               "ours_compiled_vs_open_clip_compiled": fps["ours compiled"] / fps["open_clip compiled"],
               "ours_compiled_fraction_of_matmul_limit": fps["ours compiled"] * gflop / 1e3 / limit,
               "limit_frames_per_s": limit * 1e3 / gflop}
        rows.append(row)
        print(f"{name}: " + ", ".join(f"{k} {v:,.0f}" for k, v in fps.items()) + " frames/s")
        if args.profile and name == "ViT-B-16":
            from pathlib import Path

            Path(out).mkdir(parents=True, exist_ok=True)
            profile_top_kernels(fns["ours compiled"], Path(out) / "gpu_encode_profile_vit_b16.txt")
        del fns, visual, ours, frames
        torch.cuda.empty_cache()
    names = list(rows[0]["frames_per_s"])
    table = [f"device: {device_name(device)}; torch {torch.__version__}; bf16 matmul limit {limit:.0f} TFLOP/s; "
             f"{args.clips} clips x {args.frames} frames per batch; compile mode {args.compile_mode or 'default'}; "
             f"median of {args.rounds} alternating rounds", "",
             "| model | GFLOP/frame | " + " | ".join(names) + " | ours comp. / open_clip comp. (target >= 1.2) "
             "| ours comp. % of limit (B/16 target >= 35%) |",
             "|---|---|" + "---|" * len(names) + "---|---|"]
    for r in rows:
        table.append(f"| {r['model']} | {r['gflop_per_frame']:.1f} | "
                     + " | ".join(f"{r['frames_per_s'][k]:,.0f}" for k in names)
                     + f" | {r['ours_compiled_vs_open_clip_compiled']:.2f}x | "
                       f"{100 * r['ours_compiled_fraction_of_matmul_limit']:.0f}% |")
    write_results(out, "gpu_encode", {"device": device_name(device), "torch": torch.__version__,
                                      "matmul_limit_tflops": limit, "compile_mode": args.compile_mode,
                                      "rows": rows}, table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
