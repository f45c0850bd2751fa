"""token_masking: training step time and activation memory with and without masking, side by side.

    python benchmarks/token_masking_cost.py                 # tiny and ViT-B/32, 12 frames
    python benchmarks/token_masking_cost.py --backbones tiny --repeats 5

For each backbone and each backbone-stage adapter (lora, st_adapter) ONE model is built with
token_masking; the same weights are stepped with masking off (the masking adapter in eval mode) and with
ratio 0.5 and 0.75, interleaved round by round, so the ratios compare like with like on a loaded machine.
A step is the retrieval task's forward (video and text towers, symmetric InfoNCE), backward and AdamW.

Memory: "saved activations" are the bytes autograd keeps for the backward pass (tensors packed by
saved_tensors_hooks, each storage counted once, frozen weights excluded); it is what masking shrinks and
it is exact on any device. On CUDA the peak allocated memory of the step is printed too.
ViT-B/32 is open_clip's with random weights (pretrained=None: nothing is downloaded); speed does not
depend on weight values.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

import vl_adapters as vla
from vl_adapters.adapters.token_masking.modules import kept_count

SPECS = {"tiny": "tiny", "vit-b32": "open_clip:ViT-B-32"}
RATIOS = (0.0, 0.5, 0.75)


def set_ratio(masking, ratio: float) -> None:
    """The same model with another masking ratio (0: masking off, the adapter in eval mode)."""
    masking.train(ratio > 0)
    if ratio > 0:
        masking.config.ratio = ratio
        masking.keep = kept_count(masking.num_patches, ratio)


def saved_activation_bytes(model, step) -> int:
    frozen = {p.untyped_storage().data_ptr() for p in model.parameters()}
    storages: dict[int, int] = {}

    def pack(tensor):
        ptr = tensor.untyped_storage().data_ptr()
        if ptr not in frozen:
            storages[ptr] = tensor.untyped_storage().nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        step()
    return sum(storages.values())


def run(backbone_name: str, adapter: str, *, videos: int, frames: int, repeats: int, device: str) -> list[dict]:
    backbone = vla.load_backbone(SPECS[backbone_name], pretrained="" if backbone_name == "tiny" else None,
                                 device=device)
    model = vla.wrap(backbone, [adapter, "token_masking"])
    masking = next(a for a in model.adapters if a.name == "token_masking")
    size = backbone.dims.image_size
    generator = torch.Generator().manual_seed(0)
    video = torch.randn(videos, frames, 3, size, size, generator=generator).to(device)
    texts = [f"a video number {i} of something happening" for i in range(videos)]
    optimiser = torch.optim.AdamW(model.trainable_parameters(), lr=1e-5)
    model.train()

    def loss():
        return model({"video": video, "text": texts}).loss

    def step():
        out = loss()
        optimiser.zero_grad(set_to_none=True)
        out.backward()
        optimiser.step()

    def synced():
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    times: dict[float, list[float]] = {r: [] for r in RATIOS}
    peaks: dict[float, int] = {}
    for ratio in RATIOS:  # warm-up, once per ratio
        set_ratio(masking, ratio)
        step()
    for _ in range(repeats):
        for ratio in RATIOS:
            set_ratio(masking, ratio)
            if device.startswith("cuda"):
                torch.cuda.reset_peak_memory_stats()
            synced()
            start = time.perf_counter()
            step()
            synced()
            times[ratio].append(time.perf_counter() - start)
            if device.startswith("cuda"):
                peaks[ratio] = torch.cuda.max_memory_allocated()
    rows = []
    for ratio in RATIOS:
        set_ratio(masking, ratio)
        saved = saved_activation_bytes(model, lambda: loss().backward())
        patches = masking.num_patches
        rows.append({"backbone": backbone_name, "adapter": adapter, "ratio": ratio,
                     "tokens": 1 + (kept_count(patches, ratio) if ratio > 0 else patches),
                     "step_s": statistics.median(times[ratio]), "saved_bytes": saved, "peak_bytes": peaks.get(ratio)})
    base = rows[0]
    for row in rows:
        row["time_ratio"] = row["step_s"] / base["step_s"]
        row["memory_ratio"] = row["saved_bytes"] / base["saved_bytes"]
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backbones", nargs="+", default=list(SPECS), choices=list(SPECS))
    parser.add_argument("--adapters", nargs="+", default=["lora", "st_adapter"])
    parser.add_argument("--frames", type=int, default=12)
    parser.add_argument("--videos", type=int, nargs="+", default=None,
                        help="videos per step, one per backbone (default: tiny 16, vit-b32 2 on CPU / 32 on CUDA)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    default_videos = {"tiny": 16, "vit-b32": 32 if device == "cuda" else 2}
    videos = dict(zip(args.backbones, args.videos, strict=True)) if args.videos else default_videos
    print(f"device {device}, torch {torch.__version__}, {args.frames} frames, median of {args.repeats} steps; "
          "ratios are against the same model with masking off")
    print("| backbone | adapter | videos | mask ratio | tokens into blocks | step (s) | time ratio | saved activations (MiB) | memory ratio | peak CUDA (MiB) |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name in args.backbones:
        for adapter in args.adapters:
            for row in run(name, adapter, videos=videos[name], frames=args.frames, repeats=args.repeats, device=device):
                peak = f"{row['peak_bytes'] / 2**20:.0f}" if row["peak_bytes"] else "-"
                print(f"| {name} | {adapter} | {videos[name]} | {row['ratio']} | {row['tokens']} | {row['step_s']:.3f} | "
                      f"{row['time_ratio']:.2f} | {row['saved_bytes'] / 2**20:.0f} | {row['memory_ratio']:.2f} | {peak} |",
                      flush=True)


if __name__ == "__main__":
    main()
