"""How the trainer gets batches: raw videos through the dataset's collate, or cached features."""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import DataLoader, DistributedSampler

from ..core import distributed
from ..data.cache import FeatureCache
from ..data.collate import worker_count


class BadVideoError(RuntimeError):
    """A video could not be read and the run was told to raise (`--on-bad-video raise`)."""


def dataset_collate(dataset):
    """The dataset's own collate if it has one, else the data package's collate for its task."""
    own = getattr(dataset, "collate", None)
    if callable(own):
        return own
    from ..data.collate import collate

    task = dataset.task
    return lambda items: collate(items, task=task)


class CachedDataset(torch.utils.data.Dataset):
    """A dataset's samples with their videos read back from a FeatureCache instead of decoded.

    Items carry a tiny placeholder clip so the dataset's collate builds every task field as usual;
    the batch's "video" is then replaced by the cached VideoFeatures of its videos.
    """

    def __init__(self, dataset, cache: FeatureCache) -> None:
        self.dataset = dataset
        self.cache = cache
        self.task = dataset.task
        self.samples = dataset.samples
        self.video_ids = dataset.video_ids
        self.answer_vocab = getattr(dataset, "answer_vocab", None)
        self._collate = dataset_collate(dataset)
        t = cache.frame_mask.shape[1]
        self._placeholder = torch.zeros(t, 3, 1, 1, dtype=torch.uint8)
        self._nan_rows: dict[int, bool] = {}

    def __len__(self) -> int:
        return len(self.dataset.samples)

    def __getitem__(self, index: int) -> dict:
        sample = self.dataset.samples[index]
        video_id = str(self.dataset.video_ids[sample["video_index"]])
        item = {**sample, "sample_index": index, "video_id": video_id}
        if video_id in self.cache.bad_videos:
            item["bad_video"] = self.cache.bad_videos[video_id]
            return item
        row = self.cache.row(video_id)
        if self._holds_nan(row):  # skipped and reported by its id, as a video that cannot be read
            item["bad_video"] = f"{self.cache.directory}: the cached features of {video_id!r} hold NaN values"
            return item
        item["frames"] = self._placeholder
        item["frame_mask"] = torch.from_numpy(self.cache.frame_mask[row].copy())
        return item

    def _holds_nan(self, row: int) -> bool:
        if row not in self._nan_rows:
            self._nan_rows[row] = bool(np.isnan(self.cache.frame_emb[row]).any())
        return self._nan_rows[row]

    def collate(self, items: list[dict]) -> dict:
        batch = self._collate(items)
        indices = batch.get("video_index")
        if indices is None or len(indices) == 0:
            return batch
        rows = [self.cache.row(str(self.dataset.video_ids[int(i)])) for i in indices]
        batch["video"] = self.cache.features(rows)
        batch.pop("frame_mask", None)  # the features carry their own mask
        return batch


def make_loader(dataset, *, batch_size: int, shuffle: bool, seed: int, epoch: int, num_workers: int,
                skip_batches: int = 0, drop_last: bool = False, shard: bool = True) -> DataLoader:
    """A loader whose order depends only on (seed, epoch): a DistributedSampler (this rank's shard, or
    everything when `shard` is False or there is no process group), the first `skip_batches` batches
    left out for an exact mid-epoch resume, and a private generator so that creating the loader never
    touches the global RNG."""
    replicas, rank = (distributed.world_size(), distributed.rank()) if shard else (1, 0)
    sampler = DistributedSampler(dataset, num_replicas=replicas, rank=rank, shuffle=shuffle, seed=seed,
                                 drop_last=drop_last)
    sampler.set_epoch(epoch)
    indices = list(sampler)[skip_batches * batch_size:]
    generator = torch.Generator().manual_seed(seed * 1000 + epoch)
    return DataLoader(dataset, batch_size=batch_size, sampler=indices, num_workers=worker_count(num_workers),
                      collate_fn=dataset_collate(dataset), generator=generator,
                      persistent_workers=False, pin_memory=False)


def batches_per_epoch(dataset, batch_size: int, drop_last: bool) -> int:
    sampler = DistributedSampler(dataset, num_replicas=distributed.world_size(), rank=distributed.rank(),
                                 shuffle=False, drop_last=drop_last)
    return -(-len(sampler) // batch_size)


def skipped_of(batch: dict) -> list[dict]:
    """The batch's skipped videos as [{"video_id", "reason"}] whatever shape the collate gave."""
    out = []
    for entry in batch.get("skipped", []) or []:
        if isinstance(entry, dict):
            out.append({"video_id": str(entry.get("video_id")), "reason": str(entry.get("reason", entry))})
        elif isinstance(entry, (tuple, list)) and len(entry) == 2:
            out.append({"video_id": str(entry[0]), "reason": str(entry[1])})
        else:
            out.append({"video_id": "?", "reason": str(entry)})
    return out


def batch_size_of(batch: dict) -> int:
    video = batch.get("video")
    if video is None:
        return 0
    return video.batch_size if hasattr(video, "batch_size") else len(video)


# A short reason key per kind of unreadable video, from the messages of data/video.py (first match wins).
SKIP_REASONS = (("file not found", "missing file"), ("not a file", "missing file"), ("empty file", "empty"),
                ("no video stream", "no frames"), ("no decodable frames", "no frames"),
                ("chose no frames", "no frames"))


def skip_reason(message: str) -> str:
    """"missing file", "empty", "no frames" or "corrupt" (anything a decoder failed on)."""
    lowered = message.lower()
    return next((key for needle, key in SKIP_REASONS if needle in lowered), "corrupt")


def skipped_report(skipped: list[dict]) -> dict:
    """{"count", "by_reason": {reason key: [video ids]}, "videos": [{video_id, reason, ...}]}."""
    by_reason: dict[str, list[str]] = {}
    for entry in skipped:
        by_reason.setdefault(skip_reason(entry["reason"]), []).append(entry["video_id"])
    return {"count": len(skipped), "by_reason": {k: sorted(set(v)) for k, v in sorted(by_reason.items())},
            "videos": skipped}


def selection_split(data) -> tuple[str, str | None]:
    """The split that picks the best checkpoint (`data.eval_split` with "auto" resolved; `data` is a
    DataConfig) and, when that is the test split, a note saying so."""
    from ..data import DATASETS, dataset_class

    known = data.dataset in DATASETS and bool(str(data.root))
    val = dataset_class(data.dataset).validation_split(data.root) if known else None
    split = (val or data.test_split) if data.eval_split == "auto" else data.eval_split
    if split != data.test_split:
        return split, None
    if data.eval_split == "auto":
        why = f"the {data.dataset} dataset at {data.root} has no validation split apart from it"
    elif val is not None:
        why = f"data.eval_split is {split!r} although the dataset has a {val!r} split"
    else:
        why = f"data.eval_split is {split!r}"
    return split, (f"the best checkpoint is chosen on the test split {split!r} ({why}), so the metrics it reports "
                   "are optimistic; give the dataset a validation split (jsonl: root/val.jsonl) to choose on that")


class NothingLeftError(ValueError):
    """Every video of a split was skipped (or it has no samples): nothing is left to train on or evaluate."""


def nothing_left(dataset, skipped: list[dict], doing: str) -> NothingLeftError:
    """The error that says why a split left nothing to `doing` ("train on", "evaluate"): its skipped
    videos by reason, the first one's path, and where the annotation's relative video paths resolve."""
    videos = list({entry["video_id"]: entry for entry in skipped}.values())
    if not videos:
        return NothingLeftError(f"the split to {doing} has no samples, so nothing was left to {doing}")
    counts: dict[str, int] = {}
    for entry in videos:
        counts[skip_reason(entry["reason"])] = counts.get(skip_reason(entry["reason"]), 0) + 1
    where = getattr(getattr(dataset, "dataset", dataset), "video_dir", None)
    hint = f"; the annotation's relative video paths resolve under {where}/" if where is not None else ""
    reasons = ", ".join(f"{n} {reason}" for reason, n in sorted(counts.items()))
    return NothingLeftError(f"all {len(videos)} video(s) of the split to {doing} were skipped ({reasons}), so "
                            f"nothing was left to {doing} (the first: {videos[0]['reason']}){hint}")


def dropped_rows(dataset) -> dict:
    """Annotation rows a dataset dropped in lenient mode (strict_annotations=False): count and messages."""
    dataset = getattr(dataset, "dataset", dataset)  # a CachedDataset wraps the dataset
    errors = list(getattr(dataset, "annotation_errors", None) or [])
    return {"count": len(errors), "rows": errors}
