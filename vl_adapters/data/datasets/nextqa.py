"""NExT-QA multiple-choice video QA (the NExT-QA release: nextqa.zip, the test release and NExTVideo).

root/
  train.csv / val.csv / test.csv        (or in root/nextqa/) columns video, frame_count, width, height,
                                        question, answer, qid, type, a0, a1, a2, a3, a4
                                        (answer = 0-based index of the right option among a0..a4)
  map_vid_vidorID.json                  (or in root/nextqa/) {"4010069381": "0004/4010069381", ...}
  NExTVideo/0004/4010069381.mp4 ...     (or video_dir=...; without the map, NExTVideo/<video>.mp4)

Splits: "train", "val" (what most papers report), "test". `type` is the question type (CW, CH causal
why/how; TN, TP, TC temporal next/previous/current; DL, DC, DO descriptive location/count/other), kept as
written for per-type accuracy; the official evaluation folds TP into TN and reports the C, T and D groups
by first letter. Each sample keeps the official question key "<video>_<qid>" as "qid".
"""

from __future__ import annotations

from pathlib import Path

from ..base import AnnotationError, VideoTextDataset
from ._common import Annotations, VideoIds, load_json, resolve_videos, video_directory
from .msrvtt import read_csv_rows

SPLITS = ("train", "val", "test")
OPTIONS = ("a0", "a1", "a2", "a3", "a4")
COLUMNS = ("video", "question", "answer", "qid", "type", *OPTIONS)
MAP_FILE = "map_vid_vidorID.json"


def _annotation_folder(root: Path, name: str) -> Path:
    return root / "nextqa" if not (root / name).is_file() and (root / "nextqa" / name).is_file() else root


class NExTQA(VideoTextDataset):
    task = "multiple_choice"
    name = "nextqa"
    validation_files = ("val.csv", "nextqa/val.csv")

    def __init__(self, root: str | Path, split: str = "test", *, video_dir: str | Path | None = None,
                 strict_annotations: bool = True, **kwargs) -> None:
        super().__init__(**kwargs)
        root = Path(root)
        if split not in SPLITS:
            raise ValueError(f"nextqa: unknown split {split!r}; expected one of {list(SPLITS)}")
        notes = Annotations(strict_annotations)
        self.annotation_errors = notes.errors
        path = _annotation_folder(root, f"{split}.csv") / f"{split}.csv"
        videos = VideoIds()
        samples: list[dict] = []
        for line, row in read_csv_rows(path, COLUMNS, notes):
            vid, question, kind = row["video"].strip(), row["question"].strip(), row["type"].strip()
            options = [row[o].strip() for o in OPTIONS]
            if not vid or not question or not kind:
                notes.bad(path, line, "expected a non-empty video, question and type")
                continue
            if not all(options):
                notes.bad(path, line, f"expected five non-empty options a0..a4, got {options}")
                continue
            try:
                answer = int(row["answer"])
            except ValueError:
                notes.bad(path, line, f"answer must be an integer 0..4, got {row['answer']!r}")
                continue
            if not 0 <= answer < len(OPTIONS):
                notes.bad(path, line, f"answer {answer} is outside 0..{len(OPTIONS) - 1}")
                continue
            samples.append({"video_index": videos.number(vid), "question": question, "candidates": options,
                            "answer": answer, "question_type": kind, "qid": f"{vid}_{row['qid'].strip()}"})
        map_path = _annotation_folder(root, MAP_FILE) / MAP_FILE
        locations = load_json(map_path, "nextqa video map") if map_path.is_file() else {}
        if not isinstance(locations, dict):
            raise AnnotationError(f"{map_path}:1: expected a JSON object {{video: \"<folder>/<video>\"}}, "
                                  f"got {type(locations).__name__}")
        directory = video_directory(root, video_dir, ("NExTVideo", "videos"))
        # The map's "<folder>/<video>" is where the release puts each video; the name alone is the fallback.
        video_ids = videos.ids
        relative = [str(locations.get(vid, vid)) for vid in video_ids]
        aliases = {rel: [vid] for rel, vid in zip(relative, video_ids, strict=True) if rel != vid}
        self._set_annotations(video_ids=video_ids, video_files=resolve_videos(directory, relative, aliases),
                              samples=samples)

