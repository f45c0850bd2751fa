"""Time a 1000 x 1000 text-to-video evaluation with top-50 trajectory_word re-ranking (docs/performance.md
target 5: under 10 s on one H100).

Random features stand in for encoded videos and texts (the backbone's towers are not timed: only the dual scores and
the 50,000 cross-encoded pairs, through model.similarity as `eval` runs them, bf16 autocast on a GPU).
Texts are shaped as the text store hands them to a run: token states trimmed to the longest caption
(6-20 tokens) instead of the context length. --dims vitb32 uses ViT-B/32's sizes (the target's setting),
--dims tiny the tiny backbone's. Also prints the adapter's trainable parameters at ViT-B/32 dims and, with
--vitb32-chunk, the peak memory of one chunk there; --profile writes the top operators of a 1,000-pair run.

    python benchmarks/rerank_speed.py                       # GPU: ViT-B/32 dims; CPU: tiny dims
    python benchmarks/rerank_speed.py --dims tiny --videos 1000 --texts 1000 --k 50 --frames 12
"""

from __future__ import annotations

import argparse
import contextlib
import resource
import time

import torch

import vl_adapters as vla
from vl_adapters.bench.perf import default_results_dir, device_name, sync, write_results

VIT_B32 = vla.BackboneDims(embed_dim=512, vision_width=768, text_width=512, grid=(7, 7), context_length=77, image_size=224)


def random_features(dims, num_videos: int, num_texts: int, frames: int, seed: int = 0, device="cpu"):
    g = torch.Generator().manual_seed(seed)
    n = dims.grid[0] * dims.grid[1]
    lengths = torch.randint(6, 20, (num_texts,), generator=g)  # caption lengths in tokens
    longest = int(lengths.max())  # the store trims token axes to the longest real text
    token_mask = torch.arange(longest)[None] < lengths[:, None]
    text = vla.TextFeatures(
        text_emb=torch.randn(num_texts, dims.embed_dim, generator=g),
        token_states=torch.randn(num_texts, longest, dims.text_width, generator=g),
        token_mask=token_mask,
    )
    video = vla.VideoFeatures(
        frame_emb=torch.randn(num_videos, frames, dims.embed_dim, generator=g),
        frame_mask=torch.ones(num_videos, frames, dtype=torch.bool),
        patch_tokens=torch.randn(num_videos, frames, n, dims.vision_width, generator=g),
        grid=dims.grid,
    )
    return text.to(device), video.to(device)


def trainable(dims, **config) -> int:
    adapter = vla.build_adapter({"type": "trajectory_word", **config}, dims)
    return sum(p.numel() for p in adapter.parameters() if p.requires_grad)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--videos", type=int, default=1000)
    parser.add_argument("--texts", type=int, default=1000)
    parser.add_argument("--k", type=int, default=50)
    parser.add_argument("--frames", type=int, default=12)
    parser.add_argument("--depth", type=int, default=2)
    parser.add_argument("--dims", choices=["vitb32", "tiny"], default=None,
                        help="feature sizes (default: vitb32 on a GPU, tiny on a CPU)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--vitb32-chunk", action="store_true", help="also run one 256-pair chunk at ViT-B/32 dims")
    parser.add_argument("--profile", action="store_true", help="write the top operators of a 1,000-pair run")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    spec = "open_clip:ViT-B-32" if (args.dims or ("vitb32" if device.type == "cuda" else "tiny")) == "vitb32" else "tiny"
    backbone = vla.load_backbone(spec, pretrained=None if spec != "tiny" else "", device=device)  # random weights
    dims = backbone.dims
    torch.manual_seed(0)
    model = vla.wrap(backbone, [{"type": "trajectory_word", "depth": args.depth}]).eval()
    text, video = random_features(dims, args.videos, args.texts, args.frames, device=device)
    cast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else contextlib.nullcontext()

    def evaluate(t=text, v=video):
        with cast:
            return model.similarity(t, v, rerank_k=args.k)

    evaluate(text.index(torch.arange(4, device=device)), video.index(torch.arange(4, device=device)))  # warm-up
    sync(device)
    start = time.perf_counter()
    scores = evaluate()
    sync(device)
    seconds = time.perf_counter() - start
    pairs = args.texts * min(args.k, args.videos)
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:  # the cross encoder's work per pair (matmuls and attention), on 4 pairs
        model.score_pairs(text.index(torch.arange(4, device=device)), video.index(torch.arange(4, device=device)))
    gflop_per_pair = counter.get_total_flops() / 4 / 1e9
    print(f"dims {dims.embed_dim}/{dims.vision_width}/{dims.text_width}, grid {dims.grid}, {args.frames} frames, "
          f"depth {args.depth}, {device_name(device)}")
    print(f"tiny dims: trajectory_word trainable parameters at depth {args.depth}: "
          f"{trainable(vla.load_backbone('tiny', device='cpu').dims, depth=args.depth):,}")
    print(f"ViT-B/32 dims (embed 512, vision 768, text 512, grid 7x7), width 512, 8 heads: trainable parameters "
          f"at depth 2: {trainable(VIT_B32, depth=2):,} (untied: {trainable(VIT_B32, depth=2, tie_weights=False):,}); "
          f"fine_grained_alignment: "
          f"{sum(p.numel() for p in vla.build_adapter('fine_grained_alignment', VIT_B32).parameters()):,}")
    out = args.out or default_results_dir()
    label = "ViT-B/32" if spec != "tiny" else "tiny"
    table = [f"device: {device_name(device)}; {label} dims; {args.frames} frames; trajectory_word depth {args.depth}"
             f"{'; bf16 autocast' if device.type == 'cuda' else ''}", "",
             "| evaluation | pairs re-ranked | GFLOP per pair | seconds | ms per pair | target |",
             "|---|---|---|---|---|---|",
             f"| {args.texts} x {args.videos}, top-{args.k} | {pairs:,} | {gflop_per_pair:.2f} | {seconds:.1f} | "
             f"{1e3 * seconds / pairs:.3f} | < 10 s on one H100 |"]
    write_results(out, f"rerank_speed_{label.replace('/', '').lower()}",
                  {"device": device_name(device), "dims": label, "texts": args.texts, "videos": args.videos,
                   "k": args.k, "frames": args.frames, "depth": args.depth, "seconds": seconds, "pairs": pairs,
                   "gflop_per_pair": gflop_per_pair,
                   "scores_shape": list(scores.shape)}, table)
    if args.profile:
        from pathlib import Path

        from torch.profiler import ProfilerActivity, profile

        few = text.index(torch.arange(min(20, args.texts), device=device))
        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
        with profile(activities=activities) as prof:
            evaluate(few, video)
        key = "cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
        Path(out, f"rerank_profile_{label.replace('/', '').lower()}.txt").write_text(
            prof.key_averages().table(sort_by=key, row_limit=20) + "\n")

    if args.vitb32_chunk:
        adapter = vla.build_adapter({"type": "trajectory_word", "depth": 2}, VIT_B32).eval()
        chunk = adapter.config.pair_chunk
        text, video = random_features(VIT_B32, chunk, chunk, args.frames, seed=1)
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        start = time.perf_counter()
        with torch.no_grad():
            adapter(video, text, vla.AdapterContext())
        seconds = time.perf_counter() - start
        grown = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 2**20
        print(f"ViT-B/32 dims, one chunk of {chunk} pairs, {args.frames} frames: {seconds:.1f} s, "
              f"peak resident memory grew by {grown:.2f} GiB")


if __name__ == "__main__":
    main()
