"""salient_frames: what the cross adapters cost on 12 frames against the 2-4 salient ones, side by side.

    python benchmarks/salient_frames_cost.py                  # ViT-B/32 sizes, 12 frames, keep 3
    python benchmarks/salient_frames_cost.py --pairs 512 --keep 2 4

Each cross adapter (trajectory_word, tem_adapter's semantic aligner) scores the same aligned pairs
twice: alone (every frame) and after salient_frames (the kept frames), with identical cross-adapter
weights, interleaved round by round. The scorer itself runs once per video when videos are indexed
(encode_video); its time is reported per video, apart. Features are random tensors of ViT-B/32's sizes
(open_clip ViT-B-32 with random weights gives the sizes; nothing is downloaded). Timings are medians.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

import vl_adapters as vla
from vl_adapters.core.adapter import AdapterContext
from vl_adapters.core.features import TextFeatures, VideoFeatures


def features(backbone, pairs: int, frames: int, words: int):
    d = backbone.dims
    g = torch.Generator().manual_seed(0)
    n = d.grid[0] * d.grid[1]
    video = VideoFeatures(frame_emb=torch.randn(pairs, frames, d.embed_dim, generator=g),
                          frame_mask=torch.ones(pairs, frames, dtype=torch.bool),
                          patch_tokens=torch.randn(pairs, frames, n, d.vision_width, generator=g), grid=d.grid)
    text = TextFeatures(text_emb=torch.randn(pairs, d.embed_dim, generator=g),
                        token_states=torch.randn(pairs, words, d.text_width, generator=g),
                        token_mask=torch.ones(pairs, words, dtype=torch.bool))
    return video, text


def timed(fn, synced) -> float:
    synced()
    start = time.perf_counter()
    fn()
    synced()
    return time.perf_counter() - start


@torch.inference_mode()
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pairs", type=int, default=256, help="aligned pairs scored per call (re-ranked pairs)")
    parser.add_argument("--frames", type=int, default=12)
    parser.add_argument("--keep", type=int, nargs="+", default=[3])
    parser.add_argument("--words", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    synced = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    backbone = vla.load_backbone("open_clip:ViT-B-32", pretrained=None, device=device)
    video, text = features(backbone, args.pairs, args.frames, args.words)
    video, text = video.to(device), text.to(device)
    print(f"device {device}, torch {torch.__version__}, ViT-B/32 sizes, {args.pairs} pairs x {args.frames} frames, "
          f"{args.words} words, median of {args.repeats}")
    print("| cross adapter | frames in | frames kept | pair scoring (s) | time ratio | scorer per video (ms, once at indexing) |")
    print("|---|---|---|---|---|---|")
    for cross in ("trajectory_word", "tem_adapter"):
        torch.manual_seed(0)
        alone = vla.wrap(backbone, [cross]).eval()
        models = {args.frames: alone}
        for keep in args.keep:
            torch.manual_seed(0)
            model = vla.wrap(backbone, [{"type": "salient_frames", "keep": keep}, cross]).eval()
            model.load_adapter_state_dict({**model.adapter_state_dict(), **_shared(alone, model)})
            models[keep] = model
        encoded = {k: m.encode_video(video) for k, m in models.items()}
        times: dict[int, list[float]] = {k: [] for k in models}
        scorer: dict[int, list[float]] = {k: [] for k in models if k != args.frames}
        for k, m in models.items():  # warm-up
            m.score_pairs(text, encoded[k])
        for _ in range(args.repeats):
            for k, m in models.items():
                times[k].append(timed(lambda m=m, v=encoded[k]: m.score_pairs(text, v), synced))
                if k in scorer:
                    part = next(a for a in m.adapters if a.name == "salient_frame_scorer")
                    scorer[k].append(timed(lambda part=part: part(video, None, AdapterContext()), synced))
        base = statistics.median(times[args.frames])
        for k in models:
            t = statistics.median(times[k])
            per_video = f"{1000 * statistics.median(scorer[k]) / args.pairs:.3f}" if k in scorer else "-"
            print(f"| {cross} | {args.frames} | {k} | {t:.3f} | {t / base:.2f} | {per_video} |", flush=True)


def _shared(source, target) -> dict:
    """The cross adapter's weights of `source` under `target`'s keys (same adapter, other position)."""
    out = {}
    names = [a.name for a in target.adapters]
    for adapter in source.adapters:
        j = names.index(adapter.name)
        out.update({f"adapters.{j}.{k}": v for k, v in adapter.state_dict().items()})
    return out


if __name__ == "__main__":
    main()
