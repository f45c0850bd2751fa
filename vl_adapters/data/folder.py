"""A folder of one's own video files as a dataset without annotations: what `vl-adapters search` indexes
and `vl-adapters answer` decodes."""

from __future__ import annotations

from pathlib import Path

from .base import VIDEO_EXTENSIONS, VideoTextDataset


class VideoFiles(VideoTextDataset):
    """Video files, each its own video; ids are the paths relative to `root` (posix), so they name the
    file. No samples: only load_video (and extract_features, which reads video_ids and load_video)."""

    name = "files"

    def __init__(self, files: list[Path], *, root: str | Path, **kwargs) -> None:
        super().__init__(**kwargs)
        self.root = Path(root)
        self._set_annotations(video_ids=[Path(f).relative_to(self.root).as_posix() for f in files],
                              video_files=list(files), samples=[])


def video_folder(root: str | Path, **kwargs) -> VideoFiles:
    """Every video file (by suffix: .mp4, .avi, .webm, .mkv, ...) under `root`, in subfolders too, in path
    order; hidden files and folders (a name starting with ".") are left out. Keyword arguments go to
    VideoTextDataset (num_frames, sampler, size, ...)."""
    root = Path(root)
    if not root.is_dir():
        raise NotADirectoryError(f"{root}: no such folder of videos")
    files = sorted(p for p in root.rglob("*")
                   if p.suffix.lower() in VIDEO_EXTENSIONS and p.is_file()
                   and not any(part.startswith(".") for part in p.relative_to(root).parts))
    if not files:
        raise FileNotFoundError(f"{root}: no video files (expected names ending in {', '.join(VIDEO_EXTENSIONS)})")
    return VideoFiles(files, root=root, **kwargs)
