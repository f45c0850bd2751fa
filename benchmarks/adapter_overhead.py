"""What the three named adapters add to the frozen backbone's per-clip forward (docs/performance.md target 3:
tem_adapter + finsta + trajectory_word together at most 25% of the backbone, 12 frames, ViT-B/32).

The backbone's forward of a batch (B clips x 12 frames through the image tower, B captions through the
text tower) is timed against the wrapped model's training forward on the backbone's features (the
task head's loss included, no backward), for no adapter and for each adapter alone and all three;
an adapter's cost is its forward minus the no-adapter forward. The forward+backward of the adapters is
reported too (a training step also runs it). Times are medians of alternating rounds (ratios side by
side); FLOPs (matmuls, convolutions, attention; torch's FlopCounterMode) are device-independent.
ViT-B/32 has random weights (speed does not depend on their values). Texts arrive as the text store
gives them to a run: token states trimmed to the batch's longest caption.

    python benchmarks/adapter_overhead.py                  # GPU: batch 32, bf16; CPU: batch 8, fp32
    python benchmarks/adapter_overhead.py --batch 8 --threads 1   # the committed CPU figures
    python benchmarks/adapter_overhead.py --backbone tiny --batch 4
"""

from __future__ import annotations

import argparse

import torch

import vl_adapters as vla
from vl_adapters.bench.perf import alternate, default_results_dir, device_name, write_results

NAMED = ["tem_adapter", "finsta", "trajectory_word"]
WORDS = ["a", "red", "car", "turns", "left", "then", "the", "man", "jumps", "over", "blue", "ball", "slowly"]


def captions(count: int) -> list[str]:
    g = torch.Generator().manual_seed(0)
    return [" ".join(WORDS[int(i)] for i in torch.randint(len(WORDS), (int(n),), generator=g))
            for n in torch.randint(6, 16, (count,), generator=g)]


def flops(fn) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        fn()
    return counter.get_total_flops()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbone", default="open_clip:ViT-B-32")
    parser.add_argument("--batch", type=int, default=None, help="clips per batch (default 32 on a GPU, 8 on a CPU)")
    parser.add_argument("--frames", type=int, default=12)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads (default: torch's); on a shared CPU use 1, as the committed figures do: "
                             "small adapter ops slow down far more than the backbone's matmuls when threads wait")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    batch = args.batch or (32 if device.type == "cuda" else 8)
    backbone = vla.load_backbone(args.backbone, pretrained=None if ":" in args.backbone else "", device=device)
    size = backbone.dims.image_size
    frames = torch.randn(batch, args.frames, 3, size, size, generator=torch.Generator().manual_seed(0)).to(device)
    texts = captions(batch)
    cast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else torch.autocast("cpu", enabled=False)

    def backbone_forward():
        backbone.encode_video(frames)
        backbone.encode_text(texts)

    video = backbone.encode_video(frames)
    configs = {"no adapter": [], **{name: [name] for name in NAMED}, "all three": NAMED}
    models = {}
    for label, adapters in configs.items():
        torch.manual_seed(0)
        models[label] = vla.wrap(backbone, adapters, task="retrieval").train()
    text = models["no adapter"].frozen_text(texts)  # trimmed token states, as a run gets them
    batch_in = {"video": video, "text": text}

    def forward(model):
        def run():
            with cast:
                return model(batch_in)
        return run

    def step(model):
        def run():
            with cast:
                out = model(batch_in)
            out.loss.backward()
            model.zero_grad(set_to_none=True)
        return run

    fns = {"backbone forward": backbone_forward}
    for label, model in models.items():
        fns[f"{label} forward"] = forward(model)
        fns[f"{label} forward+backward"] = step(model)
    seconds = alternate(fns, device, rounds=args.rounds, repeats=args.repeats)
    gflop = {"backbone forward": flops(backbone_forward) / 1e9}
    for label, model in models.items():
        gflop[f"{label} forward"] = flops(forward(model)) / 1e9
    base_t, base_f = seconds["backbone forward"], gflop["backbone forward"]
    rows = []
    for label in configs:
        if label == "no adapter":
            continue
        extra = seconds[f"{label} forward"] - seconds["no adapter forward"]
        extra_step = seconds[f"{label} forward+backward"] - seconds["no adapter forward+backward"]
        extra_flops = gflop[f"{label} forward"] - gflop["no adapter forward"]
        rows.append({"adapters": label, "forward_ms": 1e3 * extra, "time_overhead": extra / base_t,
                     "step_overhead": extra_step / base_t, "gflop": extra_flops, "flop_overhead": extra_flops / base_f,
                     "trainable_params": sum(p.numel() for p in models[label].trainable_parameters())})
    table = [f"device: {device_name(device)}; backbone {args.backbone} ({backbone.precision}); {batch} clips x "
             f"{args.frames} frames; backbone forward {1e3 * base_t:.0f} ms, {base_f:.0f} GFLOP per batch; median of "
             f"{args.rounds} alternating rounds; overhead = adapter cost / backbone forward (target for all three: <= 25%)",
             "", "| adapters | trainable | forward time overhead | forward FLOP overhead | forward+backward time "
             "overhead |", "|---|---|---|---|---|"]
    table += [f"| {r['adapters']} | {r['trainable_params']:,} | {100 * r['time_overhead']:.1f}% | "
              f"{100 * r['flop_overhead']:.1f}% | {100 * r['step_overhead']:.1f}% |" for r in rows]
    write_results(args.out or default_results_dir(), "adapter_overhead",
                  {"device": device_name(device), "backbone": args.backbone, "precision": backbone.precision,
                   "batch": batch, "frames": args.frames, "seconds": seconds, "gflop": gflop, "rows": rows}, table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
