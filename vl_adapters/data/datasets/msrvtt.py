"""MSR-VTT text-video retrieval (the CLIP4Clip release of the annotations).

root/
  MSRVTT_data.json            {"sentences": [{"video_id": "video0", "caption": "..."}, ...], ...}
  MSRVTT_train.9k.csv         column video_id (the 9k training split)
  MSRVTT_train.7k.csv         column video_id (the 7k training split)
  MSRVTT_JSFUSION_test.csv    columns key, vid_key, video_id, sentence (the 1k-A test split)
  videos/video0.mp4 ...       (or MSRVTT_Videos/, or video_dir=...)

Splits: "train" / "train_9k", "train_7k" (every caption of each video is one sample) and "test" / "val"
(1k-A: one sentence per video).
"""

from __future__ import annotations

import csv
from pathlib import Path

from ..base import VideoTextDataset
from ._common import Annotations, VideoIds, load_json, require, resolve_videos, video_directory

SPLIT_FILES = {"train": "MSRVTT_train.9k.csv", "train_9k": "MSRVTT_train.9k.csv",
               "train_7k": "MSRVTT_train.7k.csv", "test": "MSRVTT_JSFUSION_test.csv",
               "val": "MSRVTT_JSFUSION_test.csv"}


def read_csv_rows(path: Path, columns: tuple[str, ...], notes: Annotations, delimiter: str | None = None
                  ) -> list[tuple[int, dict]]:
    """(line number, row) for each row; the header must name `columns`; the delimiter is sniffed
    (comma or tab) unless given."""
    require(path, "annotation file")
    with path.open(newline="", encoding="utf-8") as f:
        text = f.read()
    if delimiter is None:
        first = text.split("\n", 1)[0]
        delimiter = "\t" if first.count("\t") > first.count(",") else ","
    reader = csv.DictReader(text.splitlines(), delimiter=delimiter)
    missing = [c for c in columns if c not in (reader.fieldnames or [])]
    if missing:
        raise notes_error(path, missing, reader.fieldnames)
    rows = []
    for row in reader:
        line = reader.line_num
        if any(row.get(c) is None for c in columns):
            notes.bad(path, line, f"expected {len(reader.fieldnames)} columns {reader.fieldnames}, got {row}")
            continue
        rows.append((line, row))
    return rows


def notes_error(path: Path, missing: list[str], found) -> Exception:
    from ..base import AnnotationError

    return AnnotationError(f"{path}:1: header lacks the column(s) {missing}; found {found}")


class MSRVTT(VideoTextDataset):
    task = "retrieval"
    name = "msrvtt"

    def __init__(self, root: str | Path, split: str = "test", *, video_dir: str | Path | None = None,
                 strict_annotations: bool = True, **kwargs) -> None:
        super().__init__(**kwargs)
        root = Path(root)
        if split not in SPLIT_FILES:
            raise ValueError(f"msrvtt: unknown split {split!r}; expected one of {sorted(SPLIT_FILES)}")
        notes = Annotations(strict_annotations)
        self.annotation_errors = notes.errors
        split_file = root / SPLIT_FILES[split]
        videos = VideoIds()
        samples: list[dict] = []
        if SPLIT_FILES[split] == "MSRVTT_JSFUSION_test.csv":
            for line, row in read_csv_rows(split_file, ("video_id", "sentence"), notes):
                vid, sentence = row["video_id"].strip(), row["sentence"].strip()
                if not vid or not sentence:
                    notes.bad(split_file, line, "empty video_id or sentence")
                    continue
                samples.append({"video_index": videos.number(vid), "text": sentence})
        else:
            for line, row in read_csv_rows(split_file, ("video_id",), notes):
                vid = row["video_id"].strip()
                if not vid:
                    notes.bad(split_file, line, "empty video_id")
                    continue
                videos.number(vid)
            data_file = root / "MSRVTT_data.json"
            data = load_json(data_file, "msrvtt captions")
            if not isinstance(data, dict) or not isinstance(data.get("sentences"), list):
                raise notes_error(data_file, ["sentences"], list(data) if isinstance(data, dict) else type(data))
            for k, entry in enumerate(data["sentences"]):
                if not isinstance(entry, dict) or "video_id" not in entry or "caption" not in entry:
                    notes.bad(data_file, None, f"sentences[{k}] must have video_id and caption, got {entry!r}")
                    continue
                vid = str(entry["video_id"])
                if vid in videos:
                    samples.append({"video_index": videos.number(vid), "text": str(entry["caption"]).strip()})
            samples.sort(key=lambda s: s["video_index"])  # stable: keeps caption order within a video
        directory = video_directory(root, video_dir, ("videos", "MSRVTT_Videos", "videos/all", "TrainValVideo"))
        video_ids = videos.ids
        self._set_annotations(video_ids=video_ids, video_files=resolve_videos(directory, video_ids),
                              samples=samples)
