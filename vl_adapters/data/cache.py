"""The feature cache: the frozen backbone's per-frame outputs, written once, read back every epoch.

Layout of a cache directory (one per dataset split):
  index.json         fingerprint, video_id -> row, frames per video, bad videos (id -> reason), rows done
  frame_emb.npy      [V, T, D]    fp16, memory-mapped
  frame_mask.npy     [V, T]       bool
  patch_tokens.npy   [V, T, N, C] fp16 (absent with --no-patch-tokens)
  text/              the split's text features (data/text_cache.py): keyed by token ids, so texts a
                     run formats or tokenizes differently miss and are encoded (once) on the fly

The fingerprint covers the backbone (spec and a hash of every weight), the frame sampler, the number
of frames and the frame transform (image size, mean, std); a cache whose fingerprint differs from
what a run expects is refused with the differing keys named. Arrays are written as `.partial` files
and renamed when every video is done; an interrupted `extract` resumes from the rows marked done.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..core import distributed
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
        # in memory (a byte per frame): a training loader reads one row per item, and a memmap's per-item
        # indexing is most of a cached batch's collate time
        self.frame_mask = np.load(self.directory / "frame_mask.npy")
        patches = self.directory / "patch_tokens.npy"
        self.patch_tokens = np.load(patches, mmap_mode="r") if patches.exists() else None

    @property
    def text_directory(self) -> Path:
        """The split's text segment (absent from caches written before text features were cached)."""
        from .text_cache import TEXT_DIR

        return self.directory / TEXT_DIR

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
                     progress: bool | None = None, stop_after: int | None = None, num_workers: int = 0,
                     texts: Sequence[str] | None = None) -> Path:
    """Run the frozen backbone once over `dataset.video_ids` and write a cache to `directory`, with the
    split's text features (`texts`; default: the dataset's captions, questions or candidates as the task
    head formats them without adapters) in `directory`/text.

    Resumable: batches whose rows are all marked done in an existing partial index (with the same
    fingerprint) are not re-encoded. Videos are batched by fixed row ranges (the first call's
    `batch_size`, kept in the index), so a resumed cache is bit-identical to an uninterrupted one on
    the same machine and thread count. `stop_after` (videos this call, rounded up to whole batches) is
    for tests of interruption. `num_workers`
    DataLoader processes decode videos ahead of the backbone.

    Under torchrun (a process group of N ranks) the batches are shared out: rank r decodes (with its own
    workers) and encodes batches r, r + N, ...; rank 0 gathers each round and alone writes the arrays,
    the index and the final renames, so the cache is the one a single process writes, as resumable
    after a crash, and every rank returns only once it is complete.
    """
    directory = _extract(dataset, backbone, Path(directory), sampler=sampler, num_frames=num_frames,
                         batch_size=batch_size, patch_tokens=patch_tokens, on_bad_video=on_bad_video,
                         progress=progress, stop_after=stop_after, num_workers=num_workers, texts=texts)
    _barrier()  # rank 0 has renamed the arrays before any rank returns
    return directory


def _extract(dataset, backbone, directory: Path, *, sampler, num_frames, batch_size, patch_tokens, on_bad_video,
             progress, stop_after, num_workers, texts) -> Path:
    from tqdm.auto import tqdm

    main = distributed.rank() == 0
    directory = Path(directory)
    if main:
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
    _barrier()  # every rank has read the index before rank 0 writes anything
    if main:
        directory.mkdir(parents=True, exist_ok=True)
        _write_texts(dataset, backbone, directory, texts)
    if index is not None and index.get("complete"):
        return directory
    n, t = len(video_ids), int(num_frames)
    done = set(index["done"]) if index is not None else set()
    if index is not None:  # a resumed extraction keeps the batches it started with
        batch_size = int(index.get("batch_size", batch_size))
    batches = _batches_to_do(n, batch_size, done, stop_after)
    todo = [row for batch in batches for row in batch]
    rank, world = distributed.rank(), distributed.world_size()
    mine = batches[rank::world]
    row_shapes = _row_shapes(backbone, num_frames, patch_tokens)
    decoded = iter(decode_loader(dataset, mine, on_bad_video=on_bad_video, num_workers=num_workers,
                                  pin=backbone.device.type == "cuda"))
    if not main:  # encode this rank's share; rank 0 writes it
        for round_ in range(-(-len(batches) // world)):
            _gather(_encode(backbone, next(decoded) if round_ < len(mine) else None, patch_tokens), row_shapes,
                    batch_size)
        return directory
    d, c = backbone.dims.embed_dim, backbone.dims.vision_width
    grid = backbone.dims.grid
    shapes = {"frame_emb": ((n, t, d), np.float16), "frame_mask": ((n, t), np.bool_)}
    if patch_tokens:
        shapes["patch_tokens"] = ((n, t, grid[0] * grid[1], c), np.float16)
    arrays = _open_arrays(directory, shapes, index)
    if index is None:
        index = {"fingerprint": fingerprint, "video_ids": video_ids, "grid": list(grid), "done": [],
                 "bad_videos": {}, "complete": False, "batch_size": batch_size}
        save_json(index_path, index)
    show = progress if progress is not None else _interactive()
    bar = tqdm(total=len(todo), desc=f"extract {directory.name}", unit="video", disable=not show)
    for round_ in range(-(-len(batches) // world)):
        local = _encode(backbone, next(decoded) if round_ < len(mine) else None, patch_tokens)
        for part in _gather(local, row_shapes, batch_size):
            rows = part["rows"]
            if rows:
                for name, values in part["arrays"].items():
                    arrays[name][rows] = values
            index["bad_videos"].update({video_ids[int(row)]: reason for row, reason in part["bad"].items()})
        for array in arrays.values():
            array.flush()
        rows = [row for batch in batches[round_ * world:(round_ + 1) * world] for row in batch]
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


def _batches_to_do(n: int, batch_size: int, done: set[int], stop_after: int | None) -> list[list[int]]:
    """The batches still to encode, cut at fixed row boundaries (rows [k * batch_size, (k + 1) * batch_size)):
    a video's features then never depend on where an earlier call was interrupted, since kernels pick
    their algorithm by shape and a video encoded with other neighbours would differ in the last bits.
    A batch with any row not done is encoded whole; `stop_after` (videos) takes whole batches."""
    batches = [list(range(start, min(start + batch_size, n))) for start in range(0, n, batch_size)]
    batches = [batch for batch in batches if not done.issuperset(batch)]
    if stop_after is not None:
        taken, count = [], 0
        for batch in batches:
            if count >= stop_after:
                break
            taken.append(batch)
            count += len(batch)
        batches = taken
    return batches


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



def _write_texts(dataset, backbone, directory: Path, texts) -> None:
    """The split's text segment (directory/text), unless one for these weights is already there."""
    from .text_cache import TEXT_DIR, TextFeatureStore, dataset_texts, write_text_features

    if texts is None:
        texts = dataset_texts(dataset) if hasattr(dataset, "samples") else []
    if texts and not TextFeatureStore().open(directory / TEXT_DIR, backbone):
        write_text_features(directory / TEXT_DIR, backbone, texts)


class _Rows(torch.utils.data.Dataset):
    """Dataset rows decoded for extraction: {"row", "frames", "frame_mask"}, or {"row", "bad"} with the
    reason when the video cannot be read and bad videos are skipped."""

    def __init__(self, dataset, on_bad_video: str) -> None:
        self.dataset, self.on_bad_video = dataset, on_bad_video

    def __len__(self) -> int:
        return len(self.dataset.video_ids)

    def __getitem__(self, row: int) -> dict:
        try:
            frames, mask = _frames_of(self.dataset.load_video(row))
        except Exception as error:  # a missing, empty or corrupt file
            if self.on_bad_video == "raise":
                raise
            return {"row": row, "bad": f"{type(error).__name__}: {error}"}
        return {"row": row, "frames": frames, "frame_mask": mask.bool()}


def _collate_rows(items: list[dict]) -> dict:
    good = [it for it in items if "bad" not in it]
    return {"rows": [it["row"] for it in good], "bad": {it["row"]: it["bad"] for it in items if "bad" in it},
            "frames": torch.stack([it["frames"] for it in good]) if good else None,
            "frame_mask": torch.stack([it["frame_mask"] for it in good]) if good else None}


def decode_loader(dataset, batches: list[list[int]], *, on_bad_video: str, num_workers: int, pin: bool):
    """Batches of decoded rows for extraction (see _collate_rows), `num_workers` processes decoding ahead."""
    from .collate import worker_count

    return torch.utils.data.DataLoader(_Rows(dataset, on_bad_video), batch_sampler=batches,
                                       collate_fn=_collate_rows, num_workers=worker_count(num_workers), pin_memory=pin)


def _encode(backbone, batch: dict | None, patch_tokens: bool) -> dict:
    """One decoded batch through the backbone: {"rows", "bad", "arrays": name -> fp16/bool tensor on the
    backbone's device} (an empty part for a rank with no batch this round)."""
    if batch is None or not batch["rows"]:
        return {"rows": [], "bad": {} if batch is None else batch["bad"], "arrays": {}}
    video = backbone.encode_video(batch["frames"], batch["frame_mask"])
    arrays = {"frame_emb": video.frame_emb.to(torch.float16), "frame_mask": video.frame_mask}
    if patch_tokens:
        arrays["patch_tokens"] = video.patch_tokens.to(torch.float16)
    return {"rows": batch["rows"], "bad": batch["bad"], "arrays": arrays}


def _row_shapes(backbone, num_frames: int, patch_tokens: bool) -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
    """Shape (per video) and transport dtype of each array a round sends to rank 0."""
    t, d, c = int(num_frames), backbone.dims.embed_dim, backbone.dims.vision_width
    shapes = {"frame_emb": ((t, d), torch.float16), "frame_mask": ((t,), torch.uint8)}
    if patch_tokens:
        shapes["patch_tokens"] = ((t, backbone.dims.grid[0] * backbone.dims.grid[1], c), torch.float16)
    return shapes


def _gather(local: dict, row_shapes: dict, batch_size: int) -> list[dict] | None:
    """Every rank's part of this round, in rank order, on rank 0 (arrays as numpy); None on the others.
    Arrays travel padded to `batch_size` rows (a collective needs one shape on every rank); rows and
    bad-video reasons travel as JSON."""
    if not distributed.is_distributed():
        return [{**local, "arrays": {k: v.cpu().numpy() for k, v in local["arrays"].items()}}]
    import torch.distributed as dist

    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")
    parts = _gather_json({"rows": local["rows"], "bad": local["bad"]}, device)
    gathered = {}
    for name, (shape, dtype) in row_shapes.items():
        padded = torch.zeros(batch_size, *shape, dtype=dtype, device=device)
        if name in local["arrays"]:
            values = local["arrays"][name]
            padded[:len(values)] = values.to(device=device, dtype=dtype)
        gathered[name] = _gather_tensor(padded)
    if parts is None:
        return None
    numpy_dtype = {"frame_mask": np.bool_}
    return [{"rows": part["rows"], "bad": {int(row): reason for row, reason in part["bad"].items()},
             "arrays": {name: gathered[name][r][:len(part["rows"])].cpu().numpy().astype(numpy_dtype.get(name, np.float16))
                        for name in gathered}}
            for r, part in enumerate(parts)]


def _gather_tensor(tensor: torch.Tensor) -> list[torch.Tensor] | None:
    import torch.distributed as dist

    out = [torch.empty_like(tensor) for _ in range(dist.get_world_size())] if dist.get_rank() == 0 else None
    dist.gather(tensor, out, dst=0)
    return out


def _gather_json(obj, device: torch.device) -> list | None:
    import torch.distributed as dist

    blob = json.dumps(obj).encode()
    sizes = [torch.zeros(1, dtype=torch.long, device=device) for _ in range(dist.get_world_size())]
    dist.all_gather(sizes, torch.tensor([len(blob)], device=device))
    padded = torch.zeros(max(int(size) for size in sizes), dtype=torch.uint8)
    padded[:len(blob)] = torch.frombuffer(bytearray(blob), dtype=torch.uint8)
    parts = _gather_tensor(padded.to(device))
    if parts is None:
        return None
    return [json.loads(bytes(part[:int(size)].cpu().numpy())) for part, size in zip(parts, sizes, strict=True)]


def _barrier() -> None:
    if distributed.is_distributed():
        import torch.distributed as dist

        dist.barrier()

def _interactive() -> bool:
    import sys

    return sys.stderr.isatty() and not os.environ.get("CI")
