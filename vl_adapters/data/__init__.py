"""Video reading, frame samplers, datasets in their public layouts, and batching.

    from vl_adapters.data import build_dataset
    ds = build_dataset("msrvtt", "/data/msrvtt", "test", num_frames=12, sampler="uniform", size=224)
"""

from __future__ import annotations

import importlib
from pathlib import Path

from .base import AnnotationError, BadVideoError, VideoTextDataset
from .collate import collate
from .samplers import sample_indices
from .video import Clip, VideoReadError, read_video

# dataset name -> "module:Class" (imported on first use so that one dataset's imports never slow another)
DATASETS: dict[str, str] = {
    "msrvtt": "vl_adapters.data.datasets.msrvtt:MSRVTT",
    "msvd": "vl_adapters.data.datasets.msvd:MSVD",
    "msrvtt_qa": "vl_adapters.data.datasets.open_qa:MSRVTTQA",
    "msvd_qa": "vl_adapters.data.datasets.open_qa:MSVDQA",
    "sutd_trafficqa": "vl_adapters.data.datasets.sutd_trafficqa:SUTDTrafficQA",
    "msrvtt_mc": "vl_adapters.data.datasets.msrvtt_mc:MSRVTTMC",
    "didemo": "vl_adapters.data.datasets.didemo:DiDeMo",
    "activitynet": "vl_adapters.data.datasets.activitynet:ActivityNetCaptions",
    "lsmdc": "vl_adapters.data.datasets.lsmdc:LSMDC",
    "nextqa": "vl_adapters.data.datasets.nextqa:NExTQA",
    "jsonl": "vl_adapters.data.datasets.jsonl:JSONLDataset",
}


def dataset_class(name: str) -> type[VideoTextDataset]:
    if name not in DATASETS:
        import difflib

        close = difflib.get_close_matches(name, list(DATASETS), n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise KeyError(f"unknown dataset {name!r}.{hint} Known: {', '.join(sorted(DATASETS))}")
    module, _, cls = DATASETS[name].partition(":")
    return getattr(importlib.import_module(module), cls)


def build_dataset(name: str, root: str | Path, split: str = "test", **kwargs) -> VideoTextDataset:
    """The dataset `name` (see DATASETS) read from `root` for `split` (default "test"); keyword arguments go to
    VideoTextDataset (num_frames, sampler, size, train, on_bad_video, ...) or the dataset's own options."""
    return dataset_class(name)(root, split, **kwargs)


__all__ = ["DATASETS", "AnnotationError", "BadVideoError", "Clip", "VideoReadError", "VideoTextDataset",
           "build_dataset", "collate", "dataset_class", "read_video", "sample_indices"]
