"""Helpers shared by the dataset readers: annotation errors with file and line, video directories."""

from __future__ import annotations

import json
import logging
from collections import Counter
from pathlib import Path

from ..base import VIDEO_EXTENSIONS, AnnotationError, list_videos

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


class VideoIds:
    """A split's video ids in order of first appearance: `number(vid)` is the video's index, a new id
    becoming the next video."""

    def __init__(self) -> None:
        self.ids: list[str] = []
        self._number: dict[str, int] = {}

    def __contains__(self, vid: str) -> bool:
        return vid in self._number

    def number(self, vid: str) -> int:
        if vid not in self._number:
            self._number[vid] = len(self.ids)
            self.ids.append(vid)
        return self._number[vid]


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
    """`video_dir` (relative to root, or absolute), else the first of `candidates` that holds video files
    (MSR-VTT's archive unpacks to videos/all/, so videos/ may exist with no video in it), else the first
    that exists."""
    if video_dir is not None:
        path = Path(video_dir)
        return path if path.is_absolute() else root / path
    existing = [root / name for name in candidates if (root / name).is_dir()]
    for path in existing:
        if any(p.suffix.lower() in VIDEO_EXTENSIONS for p in path.iterdir()):
            return path
    return existing[0] if existing else root / candidates[0]


def resolve_videos(directory: Path, video_ids: list[str], aliases: dict[str, list[str]] | None = None
                   ) -> list[Path]:
    """The file of each id in `directory` (any video extension); `aliases` lists other names to try.
    A name may sit in sub-folders ("movie/clip"); each folder is listed once.
    Missing files keep a path (directory/<id>.mp4) and surface later as bad videos."""
    listings: dict[Path, dict[str, Path]] = {}
    out = []
    for vid in video_ids:
        hit = None
        for name in [vid, *((aliases or {}).get(vid, []))]:
            folder, _, leaf = name.rpartition("/")
            where = directory / folder
            if where not in listings:
                listings[where] = list_videos(where)
            hit = listings[where].get(leaf)
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


def json_entries(path: Path, what: str) -> tuple[type, list[tuple[int, str | int, object]]]:
    """The top-level list or object of a JSON file as (list or dict, [(line, index or key, value), ...]),
    each entry with the line it starts on, so that a malformed entry can be named by file and line."""
    text = require(path, what).read_text(encoding="utf-8")
    decoder = json.JSONDecoder()

    def skip(i: int) -> int:
        while i < len(text) and text[i] in " \t\r\n":
            i += 1
        return i

    def decode(i: int):
        try:
            return decoder.raw_decode(text, i)
        except json.JSONDecodeError as error:
            raise AnnotationError(f"{path}:{error.lineno}: not valid JSON ({error.msg})") from error

    def expect(i: int, chars: str) -> str:
        if i >= len(text) or text[i] not in chars:
            line = text.count("\n", 0, i) + 1
            raise AnnotationError(f"{path}:{line}: not valid JSON (expected one of {list(chars)} at column "
                                  f"{i - text.rfind(chr(10), 0, i)})")
        return text[i]

    i = skip(0)
    kind = list if expect(i, "[{") == "[" else dict
    close = "]" if kind is list else "}"
    entries: list[tuple[int, str | int, object]] = []
    line, counted = 1, 0
    i = skip(i + 1)
    more = i < len(text) and text[i] != close
    while more:
        if kind is dict:
            key, i = decode(i)
            if not isinstance(key, str):
                raise AnnotationError(f"{path}:{line + text.count(chr(10), counted, i)}: not valid JSON (a key "
                                      f"must be a string, got {key!r})")
            i = skip(i)
            expect(i, ":")
            i = skip(i + 1)
        else:
            key = len(entries)
        line += text.count("\n", counted, i)
        counted = i
        value, i = decode(i)
        entries.append((line, key, value))
        i = skip(i)
        more = expect(i, "," + close) == ","
        i = skip(i + 1) if more else i
    expect(i, close)
    return kind, entries
