"""MSVD (Microsoft Research Video Description) retrieval, without pickles.

root/
  YouTubeClips/<clip>.avi           the release's videos (or videos/, or video_dir=...)
  captions.json                     {"<clip>": ["caption", ...], ...}            - or -
  AllVideoDescriptions.txt          the original release: "<clip> caption words" per line, '#' comments
  train_list.txt / val_list.txt / test_list.txt   one clip name per line         - or -
  youtube_mapping.txt               "<clip> vid<N>" per line; the standard split is vid1-1200 train,
                                    vid1201-1300 val, vid1301-1970 test

Every caption of a split's videos is one sample (MSVD has ~40 per video; retrieval metrics treat the
several captions of one video as in CLIP4Clip's multi-sentence evaluation).
"""

from __future__ import annotations

from pathlib import Path

from ..base import AnnotationError, VideoTextDataset
from ._common import Annotations, load_json, resolve_videos, video_directory

STANDARD_SPLIT = {"train": (1, 1200), "val": (1201, 1300), "test": (1301, 1970)}


def read_mapping(path: Path, notes: Annotations) -> dict[str, str]:
    """youtube_mapping.txt as clip name -> vidN."""
    out = {}
    for line, text in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not text.strip():
            continue
        parts = text.split()
        if len(parts) != 2 or not parts[1].startswith("vid"):
            notes.bad(path, line, f"expected '<clip> vid<N>', got {text!r}")
            continue
        out[parts[0]] = parts[1]
    return out


def split_videos(root: Path, split: str, notes: Annotations) -> list[str]:
    listed = root / f"{split}_list.txt"
    if listed.is_file():
        return [t.strip() for t in listed.read_text(encoding="utf-8").splitlines() if t.strip()]
    mapping = root / "youtube_mapping.txt"
    if not mapping.is_file():
        raise FileNotFoundError(f"msvd: expected {listed} or {mapping} to define the {split!r} split "
                                "(see docs/datasets/msvd.md)")
    if split not in STANDARD_SPLIT:
        raise ValueError(f"msvd: unknown split {split!r}; expected one of {sorted(STANDARD_SPLIT)}")
    lo, hi = STANDARD_SPLIT[split]
    chosen = []
    for clip, vid in read_mapping(mapping, notes).items():
        try:
            number = int(vid[3:])
        except ValueError:
            notes.bad(mapping, None, f"{vid!r} is not vid<N>")
            continue
        if lo <= number <= hi:
            chosen.append((number, clip))
    return [clip for _, clip in sorted(chosen)]


def read_captions(root: Path, notes: Annotations) -> dict[str, list[str]]:
    as_json = root / "captions.json"
    if as_json.is_file():
        data = load_json(as_json, "msvd captions")
        if not isinstance(data, dict) or not all(isinstance(v, list) for v in data.values()):
            raise AnnotationError(f"{as_json}: expected {{clip: [caption, ...]}}")
        return {str(k): [str(c).strip() for c in v] for k, v in data.items()}
    as_text = root / "AllVideoDescriptions.txt"
    if not as_text.is_file():
        raise FileNotFoundError(f"msvd: expected {as_json} or {as_text} (see docs/datasets/msvd.md)")
    out: dict[str, list[str]] = {}
    for line, text in enumerate(as_text.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
        if not text.strip() or text.startswith("#"):
            continue
        clip, _, caption = text.strip().partition(" ")
        if not caption.strip():
            notes.bad(as_text, line, f"expected '<clip> caption', got {text!r}")
            continue
        out.setdefault(clip, []).append(caption.strip())
    return out


class MSVD(VideoTextDataset):
    task = "retrieval"
    name = "msvd"
    validation_files = ("val_list.txt", "youtube_mapping.txt")

    def __init__(self, root: str | Path, split: str = "test", *, video_dir: str | Path | None = None,
                 strict_annotations: bool = True, **kwargs) -> None:
        super().__init__(**kwargs)
        root = Path(root)
        notes = Annotations(strict_annotations)
        self.annotation_errors = notes.errors
        clips = split_videos(root, split, notes)
        captions = read_captions(root, notes)
        video_ids, samples = [], []
        for clip in clips:
            texts = captions.get(clip)
            if not texts:
                notes.bad(root / f"{split}_list.txt", None, f"video {clip!r} has no captions")
                continue
            video_ids.append(clip)
            samples.extend({"video_index": len(video_ids) - 1, "text": t} for t in texts)
        directory = video_directory(root, video_dir, ("YouTubeClips", "videos"))
        self._set_annotations(video_ids=video_ids, video_files=resolve_videos(directory, video_ids),
                              samples=samples)
