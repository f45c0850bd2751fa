"""Open-ended video QA: MSRVTT-QA and MSVD-QA (answer-vocabulary classification).

root/
  train_qa.json / val_qa.json / test_qa.json
      [{"question": "...", "answer": "...", "video_id": 7010 | "video": "video7010.mp4", ...}, ...]
  videos/                     MSRVTT-QA: video<N>.mp4;  MSVD-QA: the YouTube clips (<clip>.avi) or vid<N>.avi
  youtube_mapping.txt         MSVD-QA only, when the videos keep their YouTube names ("<clip> vid<N>")

The answer vocabulary is read from train_qa.json whatever the split (the `answer_vocab_size` most
frequent answers, all by default); an answer outside it gets index -1 (it counts as wrong). The
question type is the question's first word (what, who, how, when, where), as the papers report.
"""

from __future__ import annotations

from pathlib import Path

from ..base import VideoTextDataset
from ._common import (
    Annotations,
    VideoIds,
    answer_vocabulary,
    load_json,
    question_type_of,
    resolve_videos,
    video_directory,
)
from .msvd import read_mapping


def read_qa(path: Path, notes: Annotations, video_name) -> list[tuple[str, str, str]]:
    """(video id, question, answer) per entry; `video_name` turns an integer video_id into an id."""
    data = load_json(path, "QA annotations")
    if not isinstance(data, list):
        notes.bad(path, None, f"expected a JSON list of questions, got {type(data).__name__}")
        return []
    out = []
    for k, entry in enumerate(data):
        if not isinstance(entry, dict) or "question" not in entry or "answer" not in entry:
            notes.bad(path, None, f"entry {k} must have question and answer, got {entry!r}")
            continue
        if "video" in entry:
            vid = Path(str(entry["video"])).stem
        elif "video_id" in entry:
            vid = video_name(entry["video_id"])
        else:
            notes.bad(path, None, f"entry {k} names no video (video_id or video): {entry!r}")
            continue
        out.append((vid, str(entry["question"]).strip(), str(entry["answer"]).strip()))
    return out


class _OpenQA(VideoTextDataset):
    task = "open_qa"
    video_prefix = "video"
    validation_files = ("val_qa.json",)

    def __init__(self, root: str | Path, split: str = "test", *, video_dir: str | Path | None = None,
                 answer_vocab_size: int | None = None, strict_annotations: bool = True, **kwargs) -> None:
        super().__init__(**kwargs)
        root = Path(root)
        notes = Annotations(strict_annotations)
        self.annotation_errors = notes.errors
        if split not in ("train", "val", "test"):
            raise ValueError(f"{self.name}: unknown split {split!r}; expected train, val or test")
        name = self._video_name
        train_rows = read_qa(root / "train_qa.json", notes, name)
        rows = train_rows if split == "train" else read_qa(root / f"{split}_qa.json", notes, name)
        vocab = answer_vocabulary([a for _, _, a in train_rows], answer_vocab_size)
        lookup = {a: i for i, a in enumerate(vocab)}
        videos, samples = VideoIds(), []
        for vid, question, answer in rows:
            samples.append({"video_index": videos.number(vid), "question": question, "answer": lookup.get(answer, -1),
                            "answer_text": answer, "question_type": question_type_of(question)})
        directory = video_directory(root, video_dir, ("videos", "video", "YouTubeClips"))
        video_ids = videos.ids
        files = resolve_videos(directory, video_ids, self._aliases(root, video_ids, notes))
        self._set_annotations(video_ids=video_ids, video_files=files, samples=samples, answer_vocab=vocab)

    def _video_name(self, video_id) -> str:
        text = str(video_id)
        return f"{self.video_prefix}{text}" if text.isdigit() else text

    def _aliases(self, root: Path, video_ids: list[str], notes: Annotations) -> dict[str, list[str]]:
        return {}


class MSRVTTQA(_OpenQA):
    name = "msrvtt_qa"
    video_prefix = "video"


class MSVDQA(_OpenQA):
    name = "msvd_qa"
    video_prefix = "vid"

    def _aliases(self, root: Path, video_ids: list[str], notes: Annotations) -> dict[str, list[str]]:
        mapping = root / "youtube_mapping.txt"
        if not mapping.is_file():
            return {}
        by_vid: dict[str, list[str]] = {}
        for clip, vid in read_mapping(mapping, notes).items():
            by_vid.setdefault(vid, []).append(clip)
        return by_vid
