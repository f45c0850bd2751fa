"""Finsta's cost at ViT-B/32 dims: trainable parameters, and the per-clip CPU time of the adapter relative to
the backbone forward (12 frames; open_clip ViT-B-32 with random weights, so nothing is downloaded).

    .venv/bin/python benchmarks/finsta_cost.py [--frames 12 --clips 4 --repeats 5 --threads 2]

Rows: backbone video forward; finsta at inference without graphs (students only, the default), with graphs
(use_graphs_at_inference: tracked-slot DSG from patch tokens + R-GTrm + STGD on the video side); the text side
with and without the TSG (node words from the frozen text tower, memoised per word after the first call);
and one training forward+backward of the adapter (graph branch, OSC, PTC, HSG matching over hard negatives,
distillation from the HSG), as a retrieval batch pairs it (guidance = the batch's captions).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

import vl_adapters as vla
from vl_adapters.core.adapter import AdapterContext

VIT_B32 = vla.BackboneDims(embed_dim=512, vision_width=768, text_width=512, grid=(7, 7), context_length=77, image_size=224)
CAPTIONS = ["a man is driving a car down the road", "a red circle moves left, then a blue square appears",
            "the green triangle turns yellow after the red square disappears", "a woman slices a tomato quickly"]


def timed(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=12)
    parser.add_argument("--clips", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    adapter = vla.build_adapter("finsta", VIT_B32)
    trainable = sum(p.numel() for p in adapter.parameters() if p.requires_grad)
    groups = {"students + gates": ("video_student", "text_student", "video_gate", "text_gate"),
              "HSG encoder + matching head": ("holistic_encoder", "match_head"),
              "node-word projection (frozen text tower -> dim)": ("word_proj",)}
    print(f"finsta trainable parameters at ViT-B/32 dims: {trainable / 1e6:.2f}M")
    for label, prefixes in groups.items():
        count = sum(p.numel() for n, p in adapter.named_parameters() if n.startswith(prefixes))
        print(f"  {label}: {count / 1e6:.2f}M")

    backbone = vla.load_backbone("open_clip:ViT-B-32", pretrained=None, device="cpu")
    model = vla.wrap(backbone, [adapter.config])  # for its memoised frozen text tower (ctx.encode_text)
    adapter = model.adapters[0]
    frames = torch.randn(args.clips, args.frames, 3, 224, 224)
    texts = (CAPTIONS * args.clips)[: args.clips]
    with torch.no_grad():
        video = backbone.encode_video(frames).float()
        text = backbone.encode_text(texts).float()
    rows = {"backbone video forward": timed(lambda: backbone.encode_video(frames), args.repeats),
            "backbone text forward": timed(lambda: backbone.encode_text(texts), args.repeats)}
    ctx = AdapterContext(encode_text=model.frozen_text)
    for graphs in (False, True):
        adapter.config.use_graphs_at_inference = graphs
        adapter.eval()
        tag = "with graphs" if graphs else "no graphs"
        with torch.no_grad():
            rows[f"finsta video, {tag}"] = timed(lambda: adapter(video, None, ctx), args.repeats)
            rows[f"finsta text, {tag}"] = timed(lambda: adapter(None, text, ctx), args.repeats)
    adapter.config.use_graphs_at_inference = False
    adapter.train()
    paired = AdapterContext(text_to_video=torch.arange(args.clips), guidance=text, encode_text=model.frozen_text)

    def train_step():
        adapter.zero_grad()
        sum(adapter(video, text, paired).losses.values()).backward()

    rows["finsta training step (fwd+bwd, both sides)"] = timed(train_step, args.repeats)
    base_video, base_text = rows["backbone video forward"], rows["backbone text forward"]
    print(f"\nper clip, {args.frames} frames, {args.clips} clips per batch, {args.threads} CPU threads (median of "
          f"{args.repeats}):")
    print(f"| {'what':44s} | ms/clip | vs backbone |")
    print(f"|{'-' * 46}|---------|-------------|")
    for name, seconds in rows.items():
        base = base_text if "text" in name else base_video
        print(f"| {name:44s} | {1000 * seconds / args.clips:7.1f} | {seconds / base:10.1%} |")


if __name__ == "__main__":
    main()
