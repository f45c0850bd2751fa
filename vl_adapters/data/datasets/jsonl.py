"""The generic JSONL format for one's own data (documented in docs/datasets/jsonl.md).

root/
  train.jsonl, val.jsonl, test.jsonl     one JSON object per line (blank lines allowed)
  videos/                                the files the rows name (or video_dir=...)

Row kinds (a file holds one kind; the task is inferred from the first row or given as task=...):
  retrieval:        {"video": "clip1.mp4", "text": "a caption"}
  multiple_choice:  {"video": "clip1.mp4", "question": "what happens?", "candidates": ["a", "b", "c"],
                     "answer": 1, "question_type": "why"}       (answer: 0-based index; 2+ candidates)
  open_qa:          {"video": "clip1.mp4", "question": "what colour?", "answer": "red",
                     "question_type": "what"}                  (answer: a string)
Optional on every row: "video_id" (default: the video path without its suffix), "question_type".
"video" is relative to the video directory, or absolute. For open_qa the answer vocabulary is read
from train.jsonl (the answers by frequency) whatever the split, or from answers.json (a JSON list)
when that file exists.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..base import TASKS, AnnotationError, VideoTextDataset
from ._common import Annotations, VideoIds, answer_vocabulary, load_json, require, video_directory

REQUIRED = {"retrieval": ("video", "text"), "multiple_choice": ("video", "question", "candidates", "answer"),
            "open_qa": ("video", "question", "answer")}


def infer_task(row: dict) -> str:
    if "candidates" in row:
        return "multiple_choice"
    if "question" in row:
        return "open_qa"
    return "retrieval"


def read_rows(path: Path, notes: Annotations) -> list[tuple[int, dict]]:
    require(path, "jsonl annotations")
    rows = []
    for line, text in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not text.strip():
            continue
        try:
            row = json.loads(text)
        except json.JSONDecodeError as error:
            notes.bad(path, line, f"not valid JSON ({error.msg})")
            continue
        if not isinstance(row, dict):
            notes.bad(path, line, f"expected a JSON object, got {type(row).__name__}")
            continue
        rows.append((line, row))
    return rows


def check_row(path: Path, line: int, row: dict, task: str, notes: Annotations) -> bool:
    missing = [k for k in REQUIRED[task] if k not in row]
    if missing:
        notes.bad(path, line, f"a {task} row needs {list(REQUIRED[task])}; missing {missing}")
        return False
    if task == "retrieval" and not (isinstance(row["text"], str) and row["text"].strip()):
        notes.bad(path, line, "text must be a non-empty string")
        return False
    if task == "multiple_choice":
        cands, answer = row["candidates"], row["answer"]
        if not (isinstance(cands, list) and len(cands) >= 2 and all(isinstance(c, str) for c in cands)):
            notes.bad(path, line, f"candidates must be a list of 2 or more strings, got {cands!r}")
            return False
        if not (isinstance(answer, int) and not isinstance(answer, bool) and 0 <= answer < len(cands)):
            notes.bad(path, line, f"answer must be an integer index into the {len(cands)} candidates, got {answer!r}")
            return False
    if task == "open_qa" and not isinstance(row["answer"], (str, int, float)):
        notes.bad(path, line, f"answer must be a string, got {row['answer']!r}")
        return False
    return True


class JSONLDataset(VideoTextDataset):
    name = "jsonl"
    validation_files = ("val.jsonl",)

    def __init__(self, root: str | Path, split: str = "test", *, task: str | None = None,
                 video_dir: str | Path | None = None, file: str | None = None, strict_annotations: bool = True,
                 answer_vocab_size: int | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        root = Path(root)
        if task is not None and task not in TASKS:
            raise ValueError(f"jsonl: task must be one of {TASKS}, got {task!r}")
        notes = Annotations(strict_annotations)
        self.annotation_errors = notes.errors
        # `file` may name the split, e.g. "mc_{split}.jsonl": one setting then serves every split
        path = root / (file.format(split=split) if file else f"{split}.jsonl")
        self.annotation_file = path
        rows = read_rows(path, notes)
        if task is None:
            if not rows:
                raise AnnotationError(f"{path}: no rows, so the task cannot be inferred; pass task=...")
            task = infer_task(rows[0][1])
        self.task = task
        directory = video_directory(root, video_dir, ("videos",))
        self.video_dir = directory  # where the rows' relative paths resolve (said when none is found)
        rows = [(line, row) for line, row in rows if check_row(path, line, row, task, notes)]
        vocab = lookup = None
        if task == "open_qa":
            train_file = root / (file.format(split="train") if file else "train.jsonl")
            vocab = self._vocabulary(root, path if split == "train" else train_file, notes, answer_vocab_size)
            lookup = {a: i for i, a in enumerate(vocab)}
        videos, files, samples = VideoIds(), [], []
        for _, row in rows:
            video = Path(str(row["video"]))
            vid = str(row.get("video_id", video.with_suffix("").as_posix()))
            if vid not in videos:
                files.append(video if video.is_absolute() else directory / video)
            sample = {"video_index": videos.number(vid)}
            if task == "retrieval":
                sample["text"] = row["text"].strip()
                if "question_type" in row:  # optional: lets retrieval metrics be split by caption kind
                    sample["question_type"] = row["question_type"]
            elif task == "multiple_choice":
                sample.update(question=str(row["question"]), candidates=list(row["candidates"]),
                              answer=int(row["answer"]), question_type=row.get("question_type"))
            else:
                answer = str(row["answer"]).strip()
                sample.update(question=str(row["question"]), answer=lookup.get(answer, -1), answer_text=answer,
                              question_type=row.get("question_type"))
            samples.append(sample)
        self._set_annotations(video_ids=videos.ids, video_files=files, samples=samples, answer_vocab=vocab)

    @staticmethod
    def _vocabulary(root: Path, train_file: Path, notes: Annotations, size: int | None) -> list[str]:
        listed = root / "answers.json"
        if listed.is_file():
            vocab = load_json(listed, "answer vocabulary")
            if not isinstance(vocab, list) or not all(isinstance(a, str) for a in vocab):
                raise AnnotationError(f"{listed}: expected a JSON list of answer strings")
            return vocab if size is None else vocab[:size]
        answers = [str(row["answer"]).strip() for line, row in read_rows(train_file, notes)
                   if check_row(train_file, line, row, "open_qa", notes)]
        return answer_vocabulary(answers, size)
