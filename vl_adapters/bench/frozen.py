"""Frozen work, done once for the whole grid: one feature cache per backbone, weights, frames, sampler and
set of videos (`vl-adapters extract`'s format, data/cache.py), with the text features of every string any
row will encode in it, shared by every row, task and seed that reads features.

Rows with an adapter inside the backbone (stage "backbone": LoRA, ST-Adapter, token masking) change the
backbone's forward, so they read frames instead and get no cache.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

from .grid import GridRow


def reads_frames(row: GridRow) -> bool:
    """The row has an adapter inside the backbone, so it is fed decoded frames, not cached features."""
    from vl_adapters.core.registry import ADAPTERS

    return any(ADAPTERS.get(name).stage == "backbone" for name in row.adapters)


def formats_texts(row: GridRow) -> bool:
    """An adapter of the row formats multiple-choice candidates itself (Tem-Adapter's templates)."""
    from vl_adapters.core.adapter import Adapter
    from vl_adapters.core.registry import ADAPTERS

    return any(ADAPTERS.get(name).format_candidates is not Adapter.format_candidates for name in row.adapters)


def cache_key(fingerprint: dict, datasets: dict) -> str:
    """What a cache directory holds: the backbone-and-sampling fingerprint and each split's videos."""
    videos = {split: [[v, str(ds.video_path(i))] for i, v in enumerate(ds.video_ids)] for split, ds in datasets.items()}
    return hashlib.sha256(json.dumps([fingerprint, videos], sort_keys=True).encode()).hexdigest()[:16]


def prepare_caches(configs: dict, splits: dict[str, list[str]], rows: list[GridRow], root: Path, backbone,
                   log=print) -> dict[str, str | None]:
    """task -> the cache directory its feature rows read (<dir>/<split>, as `data.cache` expects), written
    here where missing; None for every task when no row reads features. `configs`: task -> TrainConfig."""
    from vl_adapters import wrap
    from vl_adapters.data.cache import INDEX_FILE, cache_fingerprint, extract_features
    from vl_adapters.data.text_cache import dataset_texts
    from vl_adapters.train.trainer import build_split

    feature_rows = [r for r in rows if not reads_frames(r)]
    if not feature_rows:
        return dict.fromkeys(configs)
    size = backbone.dims.image_size
    groups: dict[str, dict] = {}
    out = {}
    for task, config in configs.items():
        datasets = {split: build_split(config, split, size=size, train=False) for split in splits[task]}
        fingerprint = cache_fingerprint(backbone, sampler=config.data.sampler, num_frames=config.data.num_frames,
                                        dataset=datasets[splits[task][0]])
        key = cache_key(fingerprint, datasets)
        group = groups.setdefault(key, {"config": config, "datasets": datasets, "texts": {s: [] for s in datasets}})
        formatters = [None] + [wrap(backbone, list(r.adapters), task=task) for r in feature_rows if formats_texts(r)]
        for split, dataset in datasets.items():
            for model in formatters:
                group["texts"][split] += dataset_texts(dataset, model)
        out[task] = str(root / key)
    for key, group in groups.items():
        config = group["config"]
        for split, dataset in group["datasets"].items():
            directory = root / key / split
            index = directory / INDEX_FILE
            if index.exists() and json.loads(index.read_text()).get("complete"):
                continue
            start = time.perf_counter()
            extract_features(dataset, backbone, directory, sampler=config.data.sampler,
                             num_frames=config.data.num_frames, batch_size=config.data.eval_batch_size,
                             num_workers=config.data.num_workers, on_bad_video=config.on_bad_video,
                             texts=list(dict.fromkeys(group["texts"][split])), progress=False)
            log(f"[bench] cached the frozen features of {len(dataset.video_ids)} {split} videos and their texts in "
                f"{time.perf_counter() - start:.1f}s under {directory}")
            check_readable(directory, split, config, log)
    return out


def check_readable(directory: Path, split: str, config, log) -> None:
    """Say how many videos of a split could not be read; stop when none could."""
    from vl_adapters.core.io import load_json
    from vl_adapters.data.cache import INDEX_FILE

    index = load_json(directory / INDEX_FILE)
    bad, total = index.get("bad_videos", {}), len(index["video_ids"])
    if not bad:
        return
    first = next(iter(bad.items()))
    if len(bad) == total:
        from .config import BenchError

        raise BenchError(f"{config.data.dataset} split {split!r} under {config.data.root}: none of its {total} videos "
                         f"could be read (the first: {first[0]}: {first[1]})")
    log(f"[bench] {split}: {len(bad)} of {total} videos could not be read and are left out (listed in "
        f"{directory / INDEX_FILE}; the first: {first[0]}: {first[1]})")
