"""Time a 1000 x 1000 text-to-video evaluation with top-50 trajectory_word re-ranking on the CPU.

Random features with the tiny backbone's dims stand in for encoded videos and texts (the backbone
is not timed: only the dual scores and the 50,000 cross-encoded pairs). Also prints the adapter's
trainable parameters at ViT-B/32 dims and, with --vitb32-chunk, the peak memory of one chunk there.

    .venv/bin/python benchmarks/rerank_speed.py [--videos 1000 --texts 1000 --k 50 --frames 12]
"""

from __future__ import annotations

import argparse
import resource
import time

import torch

import vl_adapters as vla

VIT_B32 = vla.BackboneDims(embed_dim=512, vision_width=768, text_width=512, grid=(7, 7), context_length=77, image_size=224)


def random_features(dims, num_videos: int, num_texts: int, frames: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    n = dims.grid[0] * dims.grid[1]
    lengths = torch.randint(6, 20, (num_texts,), generator=g)  # caption lengths in tokens
    token_mask = torch.arange(dims.context_length)[None] < lengths[:, None]
    text = vla.TextFeatures(
        text_emb=torch.randn(num_texts, dims.embed_dim, generator=g),
        token_states=torch.randn(num_texts, dims.context_length, dims.text_width, generator=g),
        token_mask=token_mask,
    )
    video = vla.VideoFeatures(
        frame_emb=torch.randn(num_videos, frames, dims.embed_dim, generator=g),
        frame_mask=torch.ones(num_videos, frames, dtype=torch.bool),
        patch_tokens=torch.randn(num_videos, frames, n, dims.vision_width, generator=g),
        grid=dims.grid,
    )
    return text, video


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
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--vitb32-chunk", action="store_true", help="also run one 256-pair chunk at ViT-B/32 dims")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    torch.manual_seed(0)
    backbone = vla.load_backbone("tiny", device="cpu")
    model = vla.wrap(backbone, [{"type": "trajectory_word", "depth": args.depth}]).eval()
    text, video = random_features(backbone.dims, args.videos, args.texts, args.frames)
    model.similarity(text.index(torch.arange(4)), video.index(torch.arange(4)), rerank_k=args.k)  # warm-up
    start = time.perf_counter()
    scores = model.similarity(text, video, rerank_k=args.k)
    seconds = time.perf_counter() - start
    pairs = args.texts * min(args.k, args.videos)
    print(f"tiny dims {backbone.dims.embed_dim}/{backbone.dims.vision_width}/{backbone.dims.text_width}, "
          f"grid {backbone.dims.grid}, {args.frames} frames, depth {args.depth}, {torch.get_num_threads()} threads")
    print(f"{args.texts} x {args.videos} evaluation, top-{args.k} re-ranking ({pairs:,} pairs): "
          f"{seconds:.1f} s ({1e3 * seconds / pairs:.3f} ms/pair); scores {tuple(scores.shape)}")
    print(f"tiny dims: trajectory_word trainable parameters at depth {args.depth}: "
          f"{trainable(backbone.dims, depth=args.depth):,}")
    print(f"ViT-B/32 dims (embed 512, vision 768, text 512, grid 7x7), width 512, 8 heads: trainable parameters "
          f"at depth 2: {trainable(VIT_B32, depth=2):,} (untied: {trainable(VIT_B32, depth=2, tie_weights=False):,}); "
          f"fine_grained_alignment: "
          f"{sum(p.numel() for p in vla.build_adapter('fine_grained_alignment', VIT_B32).parameters()):,}")

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
