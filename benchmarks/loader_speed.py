"""Video loader speed: the data package's reader against plain decord seeking, on the same clips.

docs/performance.md target 6: the loader at least 2x faster than plain decord seeking. This script encodes
fixture clips (H.264, 320x240, 10 s at 30 fps by default, like MSR-VTT's), then times three ways of
getting T uniformly sampled frames at the backbone's size S x S (uint8):

  decord get_batch   VideoReader at the stored size, vr.get_batch(indices), resize + centre crop on tensors
  decord per-frame   the same, one vr[i] (a seek) per index
  (decord get_batch without the resize is printed too, as a decode-only lower bound)
  vl-adapters        VideoTextDataset.load_video: decode at the target size, sorted indices, one pass

and prints clips/s for each and the ratios. Timing only; nothing is asserted.

    python benchmarks/loader_speed.py --clips 8 --frames 12 --size 224 [--gop 250] [--reader auto]
    (writes benchmarks/results/perf-{gpu,cpu}/loader_speed.{json,md})
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from vl_adapters.bench.perf import default_results_dir, write_results

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))


def encode_clips(directory: Path, count: int, seconds: float, fps: int, width: int, height: int, gop: int
                 ) -> list[Path]:
    """Moving-gradient H.264 clips (real motion, so P-frames carry data)."""
    import av

    yy, xx = np.mgrid[0:height, 0:width]
    paths = []
    for c in range(count):
        path = directory / f"clip{c}.mp4"
        with av.open(str(path), mode="w") as container:
            stream = container.add_stream("libx264", rate=fps)
            stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
            stream.options = {"preset": "veryfast", "crf": "23", "g": str(gop)}
            for i in range(int(seconds * fps)):
                image = np.stack([(xx + 3 * i + 17 * c) % 256, (yy + 2 * i) % 256, (xx + yy + i) % 256], -1)
                frame = av.VideoFrame.from_ndarray(image.astype(np.uint8), format="rgb24")
                for packet in stream.encode(frame):
                    container.mux(packet)
            for packet in stream.encode():
                container.mux(packet)
        paths.append(path)
    return paths


def clips_dataset(paths: list[Path], **options):
    """The data package's dataset over the given files (one empty caption each)."""
    from vl_adapters.data.base import VideoTextDataset

    class Clips(VideoTextDataset):
        def __init__(self):
            super().__init__(**options)
            self._set_annotations(video_ids=[p.stem for p in paths], video_files=paths,
                                  samples=[{"video_index": i, "text": ""} for i in range(len(paths))])

    return Clips()


def resize_crop(frames: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 [T,H,W,3] -> uint8 [T,3,S,S]: shorter side to S (bilinear), centre crop."""
    x = frames.permute(0, 3, 1, 2).float()
    h, w = x.shape[-2:]
    scale = size / min(h, w)
    x = F.interpolate(x, size=(max(size, round(h * scale)), max(size, round(w * scale))), mode="bilinear",
                      antialias=True, align_corners=False)
    top, left = (x.shape[-2] - size) // 2, (x.shape[-1] - size) // 2
    return x[..., top:top + size, left:left + size].round().clamp(0, 255).to(torch.uint8)


def uniform(n: int, t: int) -> list[int]:
    from vl_adapters.data.samplers import uniform as sampler

    return sampler(n, t)


def decord_get_batch(path: Path, t: int, size: int, threads: int) -> torch.Tensor:
    import decord

    vr = decord.VideoReader(str(path), num_threads=threads)
    frames = torch.from_numpy(vr.get_batch(uniform(len(vr), t)).asnumpy())
    return resize_crop(frames, size)


def decord_get_batch_stored_size(path: Path, t: int, size: int, threads: int) -> torch.Tensor:
    """Decode only, no resize: a lower bound on what the get_batch path costs."""
    import decord

    vr = decord.VideoReader(str(path), num_threads=threads)
    return torch.from_numpy(vr.get_batch(uniform(len(vr), t)).asnumpy())


def decord_per_frame(path: Path, t: int, size: int, threads: int) -> torch.Tensor:
    import decord

    vr = decord.VideoReader(str(path), num_threads=threads)
    frames = torch.from_numpy(np.stack([vr[i].asnumpy() for i in uniform(len(vr), t)]))
    return resize_crop(frames, size)


def clips_per_s(methods: dict, paths, rounds: int) -> dict[str, float]:
    """Clips per second of each method over every clip, the methods alternating round by round (a
    changing machine load slows them alike), after one warm-up clip each (imports, codec init)."""
    from vl_adapters.bench.perf import alternate

    calls = {name: (lambda fn=fn: [fn(p) for p in paths]) for name, fn in methods.items()}
    seconds = alternate(calls, torch.device("cpu"), rounds=rounds, warmup=0)
    return {name: len(paths) / s for name, s in seconds.items()}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--fps", type=int, default=30)
    parser.add_argument("--width", type=int, default=320)
    parser.add_argument("--height", type=int, default=240)
    parser.add_argument("--gop", type=int, default=250, help="key-frame interval of the fixture clips (x264's default)")
    parser.add_argument("--frames", type=int, default=12)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--repeats", type=int, default=3, help="alternating rounds over every clip (median)")
    parser.add_argument("--threads", type=int, default=1, help="decoder threads, the same for every method")
    parser.add_argument("--reader", default="auto", choices=["auto", "decord", "pyav"])
    parser.add_argument("--out", default=None, help="results directory (default benchmarks/results/perf-{gpu,cpu})")
    args = parser.parse_args(argv)

    import vl_adapters.data.video as video

    video.DECODE_THREADS = args.threads
    with tempfile.TemporaryDirectory() as tmp:
        paths = encode_clips(Path(tmp), args.clips, args.seconds, args.fps, args.width, args.height, args.gop)
        ds = clips_dataset(paths, num_frames=args.frames, size=args.size, sampler="uniform", reader=args.reader)
        by_path = {p: i for i, p in enumerate(paths)}
        ours = ds.load_video(0)
        # the same frames, up to resize filters: a sanity check, not a timing
        ref = decord_get_batch(paths[0], args.frames, args.size, args.threads)
        diff = (ours["frames"].float() - ref.float()).abs().mean().item()
        for p in paths[:1]:  # warm-up of every method
            decord_get_batch(p, args.frames, args.size, args.threads)
        rates = clips_per_s({
            "decord_get_batch": lambda p: decord_get_batch(p, args.frames, args.size, args.threads),
            "decord_per_frame": lambda p: decord_per_frame(p, args.frames, args.size, args.threads),
            "decord_get_batch_no_resize": lambda p: decord_get_batch_stored_size(p, args.frames, args.size,
                                                                                 args.threads),
            "vl_adapters": lambda p: ds.load_video(by_path[p]),
        }, paths, args.repeats)
        results = {f"{name}_clips_per_s": rate for name, rate in rates.items()}
    results["speedup_vs_get_batch"] = results["vl_adapters_clips_per_s"] / results["decord_get_batch_clips_per_s"]
    results["speedup_vs_per_frame"] = results["vl_adapters_clips_per_s"] / results["decord_per_frame_clips_per_s"]
    results.update(reader=ours["reader"], mean_abs_pixel_difference=diff, clips=args.clips, frames=args.frames,
                   size=args.size, source=f"{args.width}x{args.height} {args.seconds}s@{args.fps} gop {args.gop}",
                   threads=args.threads)
    rate = {k.removesuffix("_clips_per_s"): v for k, v in results.items() if k.endswith("_clips_per_s")}
    table = [f"{args.clips} clips {results['source']} -> {args.frames} frames at {args.size}x{args.size}, reader "
             f"{results['reader']}, {args.threads} decoder thread(s), {args.repeats} passes; mean |pixel difference| "
             f"to decord get_batch {diff:.2f}", "", "| method | clips/s | vl-adapters / method (target >= 2 vs "
             "plain decord seeking) |", "|---|---|---|"]
    table += [f"| {k} | {v:.2f} | {rate['vl_adapters'] / v:.2f} |" for k, v in rate.items()]
    write_results(args.out or default_results_dir(), "loader_speed", results, table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
