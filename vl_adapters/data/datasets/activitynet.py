"""ActivityNet Captions paragraph-to-video retrieval (the dense-captioning release's annotation files).

root/
  train.json / val_1.json / val_2.json
      {"v_QOlSCBRmfWY": {"duration": 82.73, "timestamps": [[0.83, 19.86], ...], "sentences": ["...", ...]}, ...}
  videos/v_QOlSCBRmfWY.mp4  or  videos/QOlSCBRmfWY.mp4     (any video extension)

As CLIP4Clip and the papers after it do, the sentences of a video are joined (file order, one space)
into one paragraph, retrieved against the whole video. Splits: "train"; "test" / "val" / "val_1" read
val_1.json (the papers' test set); "val_2" reads val_2.json. Each sample also keeps the sentences,
their timestamps (seconds) and the video's duration.
"""

from __future__ import annotations

from pathlib import Path

from ..base import VideoTextDataset
from ._common import Annotations, json_entries, resolve_videos, video_directory

SPLIT_FILES = {"train": "train.json", "val": "val_1.json", "val_1": "val_1.json", "test": "val_1.json",
               "val_2": "val_2.json"}


def _is_number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _problem(entry) -> str | None:
    """What is wrong with one video's entry, or None."""
    if not isinstance(entry, dict):
        return f"expected an object with duration, timestamps and sentences, got {entry!r:.200}"
    sentences, timestamps = entry.get("sentences"), entry.get("timestamps")
    if not isinstance(sentences, list) or not sentences or not all(isinstance(s, str) for s in sentences):
        return f"expected 'sentences' as a non-empty list of strings, got {sentences!r:.200}"
    if not any(s.strip() for s in sentences):
        return "every sentence is empty"
    if not isinstance(timestamps, list) or len(timestamps) != len(sentences) or not all(
            isinstance(t, list) and len(t) == 2 and all(_is_number(x) for x in t) for t in timestamps):
        return f"expected 'timestamps' as {len(sentences)} [start, end] pairs (one per sentence), got {timestamps!r:.200}"
    if not _is_number(entry.get("duration")):
        return f"expected a number 'duration', got {entry.get('duration')!r:.200}"
    return None


class ActivityNetCaptions(VideoTextDataset):
    task = "retrieval"
    name = "activitynet"

    def __init__(self, root: str | Path, split: str = "test", *, video_dir: str | Path | None = None,
                 strict_annotations: bool = True, **kwargs) -> None:
        super().__init__(**kwargs)
        root = Path(root)
        if split not in SPLIT_FILES:
            raise ValueError(f"activitynet: unknown split {split!r}; expected one of {sorted(SPLIT_FILES)}")
        notes = Annotations(strict_annotations)
        self.annotation_errors = notes.errors
        path = root / SPLIT_FILES[split]
        kind, entries = json_entries(path, "activitynet captions")
        if kind is not dict:
            notes.bad(path, 1, "expected a JSON object {video id: {duration, timestamps, sentences}}")
            entries = []
        video_ids, samples = [], []
        seen: set[str] = set()
        for line, vid, entry in entries:
            problem = "listed twice" if vid in seen else _problem(entry)
            if problem is not None:
                notes.bad(path, line, f"video {vid!r}: {problem}")
                continue
            sentences = [s.strip() for s in entry["sentences"] if s.strip()]
            samples.append({"video_index": len(video_ids), "text": " ".join(sentences), "sentences": sentences,
                            "timestamps": [list(map(float, t)) for t, s in zip(entry["timestamps"], entry["sentences"],
                                                                              strict=True) if s.strip()],
                            "duration": float(entry["duration"])})
            video_ids.append(vid)
            seen.add(vid)
        # The release's ids carry a "v_" before the YouTube id; downloads keep it or drop it.
        aliases = {vid: [vid[2:]] for vid in video_ids if vid.startswith("v_")}
        directory = video_directory(root, video_dir, ("videos",))
        self._set_annotations(video_ids=video_ids, video_files=resolve_videos(directory, video_ids, aliases),
                              samples=samples)
