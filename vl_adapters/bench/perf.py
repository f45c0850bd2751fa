"""`vl-adapters bench --suite perf`: backbone clips/s, training step time and peak memory per adapter,
cached (features from memory) versus uncached (frames through the frozen backbone every step)."""

from __future__ import annotations

import json
import resource
import sys
import time
from pathlib import Path

import torch

from .grid import build_grid


def _peak_rss_mb() -> float:
    # ru_maxrss is KiB on Linux, bytes on macOS; a process-wide high-water mark (CPU runs)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn, device, repeats: int) -> float:
    fn()  # warm-up
    _sync(device)
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    _sync(device)
    return (time.perf_counter() - start) / repeats


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
    encode_s = _timed(lambda: backbone.encode_video(frames), device, repeats)
    video = backbone.encode_video(frames)
    text = backbone.encode_text(texts)
    rows, notes = build_grid(adapters)
    results = {"device": str(device), "device_name": torch.cuda.get_device_name(device) if device.type == "cuda"
               else "cpu", "backbone": backbone_spec, "image_size": size, "batch_size": batch_size,
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

            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            entry[f"{mode}_step_ms"] = 1000 * _timed(step, device, repeats)
            entry[f"{mode}_peak_mem_mb"] = (torch.cuda.max_memory_allocated(device) / 2**20
                                            if device.type == "cuda" else _peak_rss_mb())
        results["rows"].append(entry)
        log(f"[perf] {row.name}: cached {entry['cached_step_ms']:.1f} ms/step, uncached "
            f"{entry['uncached_step_ms']:.1f} ms/step")
    mem_note = "peak CUDA memory allocated" if device.type == "cuda" else "process peak RSS (high-water mark, cumulative)"
    lines = [f"device: {results['device_name']}; backbone {backbone_spec}: {results['backbone_clips_per_s']:.1f} clips/s "
             f"(batch {batch_size} x {num_frames} frames); memory = {mem_note}", "",
             "| model | params | cached ms/step | uncached ms/step | cached peak MB | uncached peak MB |",
             "|---|---|---|---|---|---|"]
    for e in results["rows"]:
        lines.append(f"| {e['name']} | {e['trainable_params']:,} | {e['cached_step_ms']:.1f} | "
                     f"{e['uncached_step_ms']:.1f} | {e['cached_peak_mem_mb']:.0f} | {e['uncached_peak_mem_mb']:.0f} |")
    table = "\n".join(lines)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "perf.json").write_text(json.dumps(results, indent=2))
    (out / "perf.md").write_text(table + "\n")
    print(table)
    return results
