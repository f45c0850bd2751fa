"""SUTD-TrafficQA multiple-choice video QA.

root/
  annotations/R2_train.jsonl, R2_test.jsonl (R2_all.jsonl)    (or directly in root/)
      line 1 is a header: ["record_id", "vid_id", "vid_filename", "perspective", "q_body", "q_type",
                           "option0", "option1", "option2", "option3", "answer"]
      every other line is one JSON list in that column order
  raw_videos/<vid_filename>      (or compressed_videos/, videos/, or video_dir=...)

Empty options are dropped, so a question has 2 to 4 candidates and `answer` is re-indexed among the
kept ones. q_type (U, A, F, R, C, I: basic understanding, attribution, event forecasting, reverse
reasoning, counterfactual inference, introspection) is kept as the question type.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..base import AnnotationError, VideoTextDataset
from ._common import Annotations, VideoIds, require, resolve_videos, video_directory

COLUMNS = ("vid_filename", "q_body", "q_type", "option0", "option1", "option2", "option3", "answer")
SPLIT_FILES = {"train": "R2_train.jsonl", "test": "R2_test.jsonl", "val": "R2_test.jsonl", "all": "R2_all.jsonl"}


class SUTDTrafficQA(VideoTextDataset):
    task = "multiple_choice"
    name = "sutd_trafficqa"

    def __init__(self, root: str | Path, split: str = "test", *, video_dir: str | Path | None = None,
                 strict_annotations: bool = True, **kwargs) -> None:
        super().__init__(**kwargs)
        root = Path(root)
        if split not in SPLIT_FILES:
            raise ValueError(f"sutd_trafficqa: unknown split {split!r}; expected one of {sorted(SPLIT_FILES)}")
        notes = Annotations(strict_annotations)
        self.annotation_errors = notes.errors
        folder = root / "annotations" if (root / "annotations" / SPLIT_FILES[split]).is_file() else root
        path = require(folder / SPLIT_FILES[split], "sutd_trafficqa annotations")
        lines = path.read_text(encoding="utf-8").splitlines()
        try:
            header = json.loads(lines[0]) if lines else None
        except json.JSONDecodeError:
            header = None
        if not isinstance(header, list) or any(c not in header for c in COLUMNS):
            raise AnnotationError(f"{path}:1: expected a header row naming {list(COLUMNS)}, got {lines[:1]}")
        col = {name: header.index(name) for name in COLUMNS}
        videos, samples = VideoIds(), []
        for line_no, text in enumerate(lines[1:], 2):
            if not text.strip():
                continue
            try:
                row = json.loads(text)
            except json.JSONDecodeError as error:
                notes.bad(path, line_no, f"not valid JSON ({error.msg})")
                continue
            if not isinstance(row, list) or len(row) != len(header):
                notes.bad(path, line_no, f"expected a list of {len(header)} values, got {text[:120]!r}")
                continue
            options = [str(row[col[f"option{k}"]]).strip() for k in range(4)]
            try:
                answer = int(row[col["answer"]])
            except (TypeError, ValueError):
                notes.bad(path, line_no, f"answer must be an integer 0..3, got {row[col['answer']]!r}")
                continue
            if not 0 <= answer < 4 or not options[answer]:
                notes.bad(path, line_no, f"answer {answer} does not point at a non-empty option {options}")
                continue
            kept = [k for k in range(4) if options[k]]
            if len(kept) < 2:
                notes.bad(path, line_no, f"fewer than two non-empty options: {options}")
                continue
            vid = str(row[col["vid_filename"]])
            samples.append({"video_index": videos.number(vid), "question": str(row[col["q_body"]]).strip(),
                            "candidates": [options[k] for k in kept], "answer": kept.index(answer),
                            "question_type": str(row[col["q_type"]])})
        directory = video_directory(root, video_dir, ("raw_videos", "compressed_videos", "videos"))
        video_ids = videos.ids
        self._set_annotations(video_ids=video_ids, video_files=resolve_videos(directory, video_ids),
                              samples=samples)
