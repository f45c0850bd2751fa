"""Batches in exactly the format the task heads read (see vl_adapters/tasks/*.py)."""

from __future__ import annotations

import os
import warnings

import torch

from .base import TASKS

_capped_said = False


def worker_count(requested: int) -> int:
    """DataLoader worker processes for `requested`: at most the CPUs this process may run on (more only
    contend for them, and DataLoader warns about it for every loader it makes). The cap is said once."""
    global _capped_said
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if requested <= cpus:
        return requested
    if not _capped_said:
        _capped_said = True
        warnings.warn(f"num_workers={requested} is more than the {cpus} CPU(s) available here: using {cpus} "
                      "DataLoader worker(s)", RuntimeWarning, stacklevel=3)
    return cpus


def collate(items: list[dict], *, task: str) -> dict:
    """Stack dataset items into a batch for `task`.

    Always: "video" uint8 [B,T,3,H,W], "frame_mask" bool [B,T], "video_id" (B strings), "video_index" [B],
    "sample_index" [B] and "skipped" (list of (video_id, reason) for items whose video could not be read;
    they are dropped from the batch). When every item is bad the batch has only "skipped" (and empty
    "video_id"), so a loop can count it and move on.
    retrieval: "text" (B strings), and "question_type" (B, str or None) when an item has one (the
    caption's kind: metrics are then also reported per kind).
    multiple_choice: "question" (B), "candidates" (B lists), "candidate_mask" bool [B,K] (K = the longest
    list), "answer" long [B] (index of the right candidate), "question_type" (B, str or None).
    open_qa: "question" (B), "answer" long [B] (index into the answer vocabulary, -1 out of vocabulary),
    "answer_text" (B), "question_type" (B).
    """
    if task not in TASKS:
        raise ValueError(f"collate: task must be one of {TASKS}, got {task!r}")
    good = [it for it in items if it.get("frames") is not None and not it.get("bad_video")]
    skipped = [(str(it.get("video_id")), str(it.get("bad_video") or "no frames")) for it in items
               if it.get("frames") is None or it.get("bad_video")]
    if not good:
        return {"skipped": skipped, "video_id": []}
    shapes = {tuple(it["frames"].shape) for it in good}
    if len(shapes) > 1:
        raise ValueError(f"collate: clips of different shapes {sorted(shapes)}; give the dataset a fixed "
                         "`size` (an int S decodes S x S) and num_frames")
    batch = {
        "video": torch.stack([it["frames"] for it in good]),
        "frame_mask": torch.stack([torch.as_tensor(it["frame_mask"], dtype=torch.bool) for it in good]),
        "video_id": [str(it["video_id"]) for it in good],
        "video_index": torch.tensor([int(it["video_index"]) for it in good], dtype=torch.long),
        "sample_index": torch.tensor([int(it.get("sample_index", -1)) for it in good], dtype=torch.long),
        "skipped": skipped,
    }
    if task == "retrieval":
        batch["text"] = [it["text"] for it in good]
        if any(it.get("question_type") for it in good):
            batch["question_type"] = [it.get("question_type") for it in good]
    elif task == "multiple_choice":
        k = max(len(it["candidates"]) for it in good)
        batch["question"] = [it["question"] for it in good]
        batch["candidates"] = [list(it["candidates"]) for it in good]
        batch["candidate_mask"] = torch.tensor([[j < len(it["candidates"]) for j in range(k)] for it in good],
                                               dtype=torch.bool)
        batch["answer"] = torch.tensor([int(it["answer"]) for it in good], dtype=torch.long)
        batch["question_type"] = [it.get("question_type") for it in good]
    else:
        batch["question"] = [it["question"] for it in good]
        batch["answer"] = torch.tensor([int(it["answer"]) for it in good], dtype=torch.long)
        batch["answer_text"] = [it.get("answer_text") for it in good]
        batch["question_type"] = [it.get("question_type") for it in good]
    return batch
