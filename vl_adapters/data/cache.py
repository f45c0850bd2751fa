"""The feature cache: the frozen backbone's per-frame outputs, written once, read back every epoch.

Layout of a cache directory (one per dataset split):
  index.json         fingerprint, video_id -> row, frames per video, bad videos (id -> reason), rows done
  frame_emb.npy      [V, T, D]    fp16, memory-mapped
  frame_mask.npy     [V, T]       bool
  patch_tokens.npy   [V, T, N, C] fp16 (absent with --no-patch-tokens)

The fingerprint covers the backbone (spec and a hash of every weight), the frame sampler, the number
of frames and the frame transform (image size, mean, std); a cache whose fingerprint differs from
what a run expects is refused with the differing keys named. Arrays are written as `.partial` files
and renamed when every video is done; an interrupted `extract` resumes from the rows marked done.
Text features are not cached: the text tower is cheap and runs on the fly, which also keeps text
augmentation and the captions' tokenisation free to change.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..core.features import VideoFeatures
from ..core.io import load_json, remove_orphans, save_json

INDEX_FILE = "index.json"
ARRAYS = ("frame_emb", "frame_mask", "patch_tokens")
FORMAT_VERSION = 1


class StaleCacheError(RuntimeError):
    """A feature cache built with another backbone, sampler or transform than the run asks for."""


def cache_fingerprint(backbone, *, sampler: str, num_frames: int, patch_tokens: bool = True,
                      dataset=None) -> dict[str, Any]:
    """What a cache depends on: compared key by key when a run opens one. With a dataset, its decode
    size and sampler options count too."""
    mean = backbone.pixel_mean.flatten().tolist()
    std = backbone.pixel_std.flatten().tolist()
    size = getattr(dataset, "size", None)
    return {
        "decode_size": list(size) if isinstance(size, (tuple, list)) else size,
        "sampler_options": dict(sorted((getattr(dataset, "sampler_options", None) or {}).items())),
        "format": FORMAT_VERSION,
        "backbone": backbone.spec,
        "weights": backbone.fingerprint(),
        "sampler": sampler,
        "num_frames": int(num_frames),
        "image_size": int(backbone.dims.image_size),
        "mean": [round(v, 6) for v in mean],
        "std": [round(v, 6) for v in std],
        "patch_tokens": bool(patch_tokens),
    }


def describe_difference(found: dict, expected: dict) -> list[str]:
    keys = sorted(set(found) | set(expected))
    return [f"{k}: cache has {found.get(k)!r}, run expects {expected.get(k)!r}"
            for k in keys if found.get(k) != expected.get(k)]


class FeatureCache:
    """Read side of a cache directory (memory-mapped, so opening it costs nothing)."""

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        index_path = self.directory / INDEX_FILE
        if not index_path.exists():
            raise FileNotFoundError(f"{self.directory}: not a feature cache (no {INDEX_FILE}); "
                                    "build one with `vl-adapters extract`")
        self.index = load_json(index_path)
        if not self.index.get("complete"):
            done = len(self.index.get("done", []))
            raise StaleCacheError(f"{self.directory}: extraction is incomplete ({done} of "
                                  f"{len(self.index['video_ids'])} videos); run the same `vl-adapters extract` "
                                  "command again to resume it")
        self.fingerprint = self.index["fingerprint"]
        self.rows = {vid: i for i, vid in enumerate(self.index["video_ids"])}
        self.bad_videos: dict[str, str] = self.index.get("bad_videos", {})
        self.grid = tuple(self.index["grid"])
        self.frame_emb = np.load(self.directory / "frame_emb.npy", mmap_mode="r")
        self.frame_mask = np.load(self.directory / "frame_mask.npy", mmap_mode="r")
        patches = self.directory / "patch_tokens.npy"
        self.patch_tokens = np.load(patches, mmap_mode="r") if patches.exists() else None

    def check(self, expected: dict) -> None:
        """Raise StaleCacheError naming every key of the fingerprint that differs."""
        differences = describe_difference(self.fingerprint, expected)
        if differences:
            raise StaleCacheError(f"{self.directory}: the feature cache is stale and was refused: "
                                  + "; ".join(differences)
                                  + ". Re-run `vl-adapters extract` with the run's settings, or drop `data.cache`.")

    def row(self, video_id: str) -> int:
        if video_id not in self.rows:
            raise KeyError(f"{self.directory}: video {video_id!r} is not in the cache")
        return self.rows[video_id]

    def features(self, rows) -> VideoFeatures:
        """fp32 VideoFeatures for cache rows (a list of ints)."""
        rows = np.asarray(rows, dtype=np.int64)
        order = np.argsort(rows)  # memmaps read fastest in file order
        inverse = np.empty_like(order)
        inverse[order] = np.arange(len(order))

        def take(array):
            return torch.from_numpy(np.ascontiguousarray(array[rows[order]])[inverse])

        patch = take(self.patch_tokens).float() if self.patch_tokens is not None else None
        return VideoFeatures(frame_emb=take(self.frame_emb).float(), frame_mask=take(self.frame_mask).bool(),
                             patch_tokens=patch, grid=self.grid if patch is not None else None)


def _frames_of(loaded) -> tuple[torch.Tensor, torch.Tensor]:
    """dataset.load_video's answer as (uint8 frames [T,3,H,W], frame_mask [T])."""
    if isinstance(loaded, dict):
        if loaded.get("bad_video"):
            raise RuntimeError(loaded["bad_video"])
        return loaded["frames"], loaded["frame_mask"]
    frames, mask = loaded
    return frames, mask


def extract_features(dataset, backbone, directory: str | Path, *, sampler: str, num_frames: int,
                     batch_size: int = 16, patch_tokens: bool = True, on_bad_video: str = "skip",
                     progress: bool | None = None, stop_after: int | None = None) -> Path:
    """Run the frozen backbone once over `dataset.video_ids` and write a cache to `directory`.

    Resumable: rows already marked done in an existing partial index (with the same fingerprint) are
    not re-encoded. `stop_after` (videos this call) is for tests of interruption.
    """
    from tqdm.auto import tqdm

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    remove_orphans(directory)  # temporaries of an index write a crash interrupted
    fingerprint = cache_fingerprint(backbone, sampler=sampler, num_frames=num_frames, patch_tokens=patch_tokens,
                                    dataset=dataset)
    video_ids = [str(v) for v in dataset.video_ids]
    index_path = directory / INDEX_FILE
    index = load_json(index_path) if index_path.exists() else None
    if index is not None and (index["fingerprint"] != fingerprint or index["video_ids"] != video_ids):
        differences = describe_difference(index["fingerprint"], fingerprint) or ["the list of videos differs"]
        raise StaleCacheError(f"{directory}: holds a cache for other settings ({'; '.join(differences)}); "
                              "choose another --out or delete it")
    if index is not None and index.get("complete"):
        return directory
    n, t = len(video_ids), int(num_frames)
    d, c = backbone.dims.embed_dim, backbone.dims.vision_width
    grid = backbone.dims.grid
    shapes = {"frame_emb": ((n, t, d), np.float16), "frame_mask": ((n, t), np.bool_)}
    if patch_tokens:
        shapes["patch_tokens"] = ((n, t, grid[0] * grid[1], c), np.float16)
    arrays = _open_arrays(directory, shapes, index)
    if index is None:
        index = {"fingerprint": fingerprint, "video_ids": video_ids, "grid": list(grid), "done": [],
                 "bad_videos": {}, "complete": False}
        save_json(index_path, index)
    done = set(index["done"])
    todo = [i for i in range(n) if i not in done]
    if stop_after is not None:
        todo = todo[:stop_after]
    show = progress if progress is not None else _interactive()
    bar = tqdm(total=len(todo), desc=f"extract {directory.name}", unit="video", disable=not show)
    for start in range(0, len(todo), batch_size):
        rows = todo[start:start + batch_size]
        good_rows, clips, masks = [], [], []
        for row in rows:
            try:
                frames, mask = _frames_of(dataset.load_video(row))
            except Exception as error:  # a missing, empty or corrupt file
                if on_bad_video == "raise":
                    raise
                index["bad_videos"][video_ids[row]] = f"{type(error).__name__}: {error}"
                continue
            good_rows.append(row)
            clips.append(frames)
            masks.append(mask.bool())
        if good_rows:
            frames = torch.stack(clips)
            video = backbone.encode_video(frames, torch.stack(masks))
            arrays["frame_emb"][good_rows] = video.frame_emb.cpu().numpy().astype(np.float16)
            arrays["frame_mask"][good_rows] = video.frame_mask.cpu().numpy()
            if patch_tokens:
                arrays["patch_tokens"][good_rows] = video.patch_tokens.cpu().numpy().astype(np.float16)
        for array in arrays.values():
            array.flush()
        index["done"] = sorted(done.union(rows))
        done = set(index["done"])
        save_json(index_path, index)  # only after the rows are on disk, so a crash never marks unwritten rows
        bar.update(len(rows))
    bar.close()
    if len(done) == n:
        for name, array in arrays.items():
            array.flush()
            partial = directory / f"{name}.npy.partial"
            if partial.exists():  # a resumed finalisation may have renamed some already
                os.replace(partial, directory / f"{name}.npy")
        arrays.clear()
        index["complete"] = True
        save_json(index_path, index)
    return directory


def _open_arrays(directory: Path, shapes: dict, index: dict | None) -> dict[str, np.memmap]:
    """The arrays to write, memory-mapped: each `.npy.partial`, or its final `.npy` when a crash came
    during the renames that finish an extraction. When an array with rows marked done is missing
    altogether, those rows are marked undone (with `index` updated in place) rather than left as zeros."""
    existing = {}
    for name in shapes:
        found = [p for p in (directory / f"{name}.npy.partial", directory / f"{name}.npy") if p.exists()]
        existing[name] = found[0] if index is not None and found else None
    if index is not None and index["done"] and not all(existing.values()):
        index["done"], index["bad_videos"] = [], {}  # start over: a done row must have every array
        existing = dict.fromkeys(shapes)
    arrays = {}
    for name, (shape, dtype) in shapes.items():
        path = existing[name] or directory / f"{name}.npy.partial"
        mode = "r+" if existing[name] else "w+"
        arrays[name] = np.lib.format.open_memmap(path, mode=mode, dtype=dtype, shape=shape)
    return arrays


def _interactive() -> bool:
    import sys

    return sys.stderr.isatty() and not os.environ.get("CI")
