"""Helpers shared by the dataset readers: annotation errors with file and line, video directories."""

from __future__ import annotations

import json
import logging
from collections import Counter
from pathlib import Path

from ..base import AnnotationError, list_videos

log = logging.getLogger(__name__)


class Annotations:
    """Collects malformed rows: raises at the first one (strict) or records and reports them (lenient)."""

    def __init__(self, strict: bool = True) -> None:
        self.strict = strict
        self.errors: list[str] = []

    def bad(self, file: Path, line: int | None, reason: str) -> None:
        where = f"{file}:{line}" if line is not None else str(file)
        message = f"{where}: {reason}"
        if self.strict:
            raise AnnotationError(message + " (pass strict_annotations=False, on the command line --set "
                                  "data.options={strict_annotations: false}, to skip malformed rows and count them)")
        self.errors.append(message)
        log.warning("skipping a malformed annotation row: %s", message)


def require(path: Path, what: str) -> Path:
    if not path.is_file():
        raise FileNotFoundError(f"{what}: expected the file {path}, which does not exist (see docs/datasets/)")
    return path


def load_json(path: Path, what: str):
    require(path, what)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise AnnotationError(f"{path}:{error.lineno}: not valid JSON ({error.msg})") from error


def video_directory(root: Path, video_dir: str | Path | None, candidates: tuple[str, ...]) -> Path:
    """`video_dir` (relative to root, or absolute) or the first existing of `candidates`."""
    if video_dir is not None:
        path = Path(video_dir)
        return path if path.is_absolute() else root / path
    for name in candidates:
        if (root / name).is_dir():
            return root / name
    return root / candidates[0]


def resolve_videos(directory: Path, video_ids: list[str], aliases: dict[str, list[str]] | None = None
                   ) -> list[Path]:
    """The file of each id in `directory` (any video extension); `aliases` lists other names to try.
    Missing files keep a path (directory/<id>.mp4) and surface later as bad videos."""
    listing = list_videos(directory)
    out = []
    for vid in video_ids:
        hit = None
        for name in [vid, *((aliases or {}).get(vid, []))]:
            hit = listing.get(name)
            if hit is not None:
                break
        out.append(hit if hit is not None else directory / (vid if Path(vid).suffix else f"{vid}.mp4"))
    return out


def answer_vocabulary(answers: list[str], size: int | None) -> list[str]:
    """Training answers by frequency (ties alphabetical), the `size` most frequent ones."""
    counts = Counter(answers)
    ranked = sorted(counts, key=lambda a: (-counts[a], a))
    return ranked if size is None else ranked[:size]


def question_type_of(question: str) -> str:
    """The question word (what, who, how, when, where, ...) used for per-type accuracy."""
    words = question.strip().lower().split()
    return words[0] if words else ""
