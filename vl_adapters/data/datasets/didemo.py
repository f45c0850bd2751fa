"""DiDeMo paragraph-to-video retrieval (the LocalizingMoments release of the annotations).

root/
  train_data.json / val_data.json / test_data.json
      [{"annotation_id": 1, "description": "...", "video": "<flickr name>.m4v", "times": [[4, 4], ...],
        "dl_link": "...", "num_segments": 6}, ...]       one entry per described moment
  train_list.txt / val_list.txt / test_list.txt   optional: one video name per line (CLIP4Clip's lists of
                                                  the videos it could get); only those are kept
  videos/<video>  or  videos/<video>.mp4          (Flickr downloads keep the name; the AWS copies add .mp4)

As CLIP4Clip and the papers after it do, the descriptions of a video are joined (file order, one space)
into one paragraph, and the paragraph is retrieved against the whole video. Each sample also keeps the
descriptions ("sentences") and their moments in seconds ("timestamps": the annotators' mean chunk
times, a chunk being 5 seconds).
"""

from __future__ import annotations

from pathlib import Path

from ..base import VideoTextDataset
from ._common import Annotations, json_entries, resolve_videos, video_directory

SPLITS = ("train", "val", "test")
CHUNK_SECONDS = 5.0


def moment_seconds(times) -> list[float] | None:
    """[start, end] in seconds from the annotators' (start chunk, end chunk) pairs, or None if malformed."""
    if not isinstance(times, list) or not times:
        return None
    if not all(isinstance(t, list) and len(t) == 2 and all(isinstance(x, (int, float)) for x in t) for t in times):
        return None
    start = sum(t[0] for t in times) / len(times)
    end = sum(t[1] for t in times) / len(times)
    return [start * CHUNK_SECONDS, (end + 1) * CHUNK_SECONDS]


class DiDeMo(VideoTextDataset):
    task = "retrieval"
    name = "didemo"
    validation_files = ("val_data.json",)

    def __init__(self, root: str | Path, split: str = "test", *, video_dir: str | Path | None = None,
                 strict_annotations: bool = True, **kwargs) -> None:
        super().__init__(**kwargs)
        root = Path(root)
        if split not in SPLITS:
            raise ValueError(f"didemo: unknown split {split!r}; expected one of {list(SPLITS)}")
        notes = Annotations(strict_annotations)
        self.annotation_errors = notes.errors
        path = root / f"{split}_data.json"
        kind, entries = json_entries(path, "didemo annotations")
        if kind is not list:
            notes.bad(path, 1, "expected a JSON list of moments [{video, description, times, ...}, ...]")
            entries = []
        listed = _video_list(root / f"{split}_list.txt")
        paragraphs: dict[str, dict] = {}
        for line, k, entry in entries:
            if not isinstance(entry, dict) or not isinstance(entry.get("video"), str) or not entry["video"].strip():
                notes.bad(path, line, f"entry {k}: expected an object with a non-empty string 'video', got {entry!r:.200}")
                continue
            description = entry.get("description")
            if not isinstance(description, str) or not description.strip():
                notes.bad(path, line, f"entry {k} (video {entry['video']!r}): expected a non-empty string 'description'")
                continue
            moment = moment_seconds(entry.get("times"))
            if moment is None:
                notes.bad(path, line, f"entry {k} (video {entry['video']!r}): expected 'times' as a non-empty list "
                                      f"of [start chunk, end chunk] pairs, got {entry.get('times')!r:.200}")
                continue
            video = entry["video"].strip()
            if listed is not None and video not in listed:
                continue
            paragraph = paragraphs.setdefault(video, {"sentences": [], "timestamps": []})
            paragraph["sentences"].append(description.strip())
            paragraph["timestamps"].append(moment)
        video_ids = list(paragraphs)
        samples = [{"video_index": i, "text": " ".join(p["sentences"]), **p} for i, p in enumerate(paragraphs.values())]
        directory = video_directory(root, video_dir, ("videos",))
        self._set_annotations(video_ids=video_ids, video_files=resolve_videos(directory, video_ids),
                              samples=samples)


def _video_list(path: Path) -> set[str] | None:
    if not path.is_file():
        return None
    return {line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()}
