"""`vl-adapters bench --suite perf`: backbone clips/s, training step time and peak memory per adapter,
cached (features from memory) versus uncached (frames through the frozen vision tower every step; texts
through the model's text store, encoded once). Also the timing and reporting helpers of the scripts
in benchmarks/ (one way to time, alternate and write a figure)."""

from __future__ import annotations

import json
import resource
import sys
import time
from pathlib import Path

import torch

from .grid import build_grid


def peak_rss_mb() -> float:
    """The process's peak resident memory in MiB (a high-water mark: it only grows)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device, repeats: int, warmup: int = 1) -> float:
    """Seconds per call of `fn` (after `warmup` calls), the device synchronised around the loop."""
    for _ in range(warmup):
        fn()
    sync(device)
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    sync(device)
    return (time.perf_counter() - start) / repeats


def alternate(fns: dict, device, *, rounds: int, repeats: int = 1, warmup: int = 1) -> dict[str, float]:
    """Median seconds per call of each function, measured in alternation (A B C A B C ...), so that a
    machine whose load changes during the run slows every contender alike: ratios of the medians are
    side by side."""
    import statistics

    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            times[name].append(timed(fn, device, repeats, warmup=0))
    return {name: statistics.median(values) for name, values in times.items()}


def default_results_dir() -> Path:
    """benchmarks/results/perf-gpu on a GPU machine, perf-cpu otherwise (relative to the working directory)."""
    return Path("benchmarks/results") / ("perf-gpu" if torch.cuda.is_available() else "perf-cpu")


def write_results(out: str | Path, name: str, results: dict, table: list[str]) -> None:
    """<out>/<name>.json (every figure, the settings, the device) and <out>/<name>.md (the table)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(results, indent=2) + "\n")
    (out / f"{name}.md").write_text("\n".join(table) + "\n")
    print("\n".join(table))


def device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({torch.get_num_threads()} threads)"


def run_perf(out: str | Path, *, adapters: list[str] | None = None, tiny: bool = False,
             backbone_spec: str = "tiny:synthetic", batch_size: int = 32, num_frames: int = 16,
             repeats: int = 5, log=print) -> dict:
    import vl_adapters as vla

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if tiny:
        batch_size, num_frames, repeats = 4, 4, 1
    backbone = vla.load_backbone(backbone_spec, device=str(device))
    size = backbone.dims.image_size
    gen = torch.Generator().manual_seed(0)
    frames = torch.randint(0, 256, (batch_size, num_frames, 3, 64, 64), dtype=torch.uint8, generator=gen)
    texts = [f"first the red circle moves left, then shape {i} appears" for i in range(batch_size)]
    encode_s = timed(lambda: backbone.encode_video(frames), device, repeats)
    video = backbone.encode_video(frames)
    text = vla.wrap(backbone, []).frozen_text(texts)  # what a cached run's heads get: trimmed token states
    rows, notes = build_grid(adapters)
    results = {"device": str(device), "device_name": device_name(device), "backbone": backbone_spec, "image_size": size, "batch_size": batch_size,
               "num_frames": num_frames, "backbone_clips_per_s": batch_size / encode_s, "notes": notes, "rows": []}
    log(f"[perf] backbone {backbone_spec} on {device}: {batch_size / encode_s:.1f} clips/s "
        f"({num_frames} frames each)")
    for row in rows:
        if not row.train or row.train_view != "all":  # the controls only change which frames are fed
            continue
        model = vla.wrap(backbone, list(row.adapters), task="retrieval").to(device)
        params = model.trainable_parameters()
        optimiser = torch.optim.AdamW(params, lr=1e-4)
        entry = {"name": row.name, "trainable_params": sum(p.numel() for p in params)}
        steps = {}
        for mode, batch in (("cached", {"video": video, "text": text}),
                            ("uncached", {"video": frames, "text": texts})):
            if mode == "cached" and model.uses_backbone_adapters:  # cached features cannot serve them
                entry.update(cached_step_ms=float("nan"), cached_peak_mem_mb=float("nan"))
                continue
            def step(batch=batch, model=model, optimiser=optimiser):
                out = model(batch)
                optimiser.zero_grad(set_to_none=True)
                out.loss.backward()
                optimiser.step()

            steps[mode] = step
        for mode, seconds in alternate(steps, device, rounds=repeats).items():  # side by side
            entry[f"{mode}_step_ms"] = 1000 * seconds
        for mode, step in steps.items():
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
                step()
                sync(device)
            entry[f"{mode}_peak_mem_mb"] = (torch.cuda.max_memory_allocated(device) / 2**20
                                            if device.type == "cuda" else peak_rss_mb())
        results["rows"].append(entry)
        log(f"[perf] {row.name}: cached {entry['cached_step_ms']:.1f} ms/step, uncached "
            f"{entry['uncached_step_ms']:.1f} ms/step")
    mem_note = "peak CUDA memory allocated" if device.type == "cuda" else "process peak RSS (high-water mark, cumulative)"
    lines = [f"device: {results['device_name']}; backbone {backbone_spec}: {results['backbone_clips_per_s']:.1f} clips/s "
             f"(batch {batch_size} x {num_frames} frames); cached and uncached steps alternate (median of "
             f"{repeats}); uncached = frames through the frozen vision tower, texts through the text store; "
             f"memory = {mem_note}", "",
             "| model | params | cached ms/step | uncached ms/step | cached peak MB | uncached peak MB |",
             "|---|---|---|---|---|---|"]
    for e in results["rows"]:
        lines.append(f"| {e['name']} | {e['trainable_params']:,} | {e['cached_step_ms']:.1f} | "
                     f"{e['uncached_step_ms']:.1f} | {e['cached_peak_mem_mb']:.0f} | {e['uncached_peak_mem_mb']:.0f} |")
    write_results(out, "perf", results, lines)
    return results
