"""The dataset interface every video-language dataset of the toolkit follows.

A dataset is a list of `samples` (one per example: a caption, a multiple-choice question, an open
question) over a list of unique `video_ids`. Subclasses only read their annotation files: they call
`self._set_annotations(...)` from their constructor; decoding, sampling, padding and bad-video handling
live here.

Item format (`dataset[i]`): the sample's fields plus "sample_index", "video_id", "frames" (uint8
[T, 3, H, W]) and "frame_mask" (bool [T]). A missing, empty or corrupt video under on_bad_video="skip"
gives "frames" None, "frame_mask" None and a "bad_video" reason; `collate` drops such items.
"""

from __future__ import annotations

import logging
import random
from pathlib import Path

import torch

from ..core.registry import SAMPLERS
from . import samplers as _samplers  # noqa: F401  (registers the samplers)
from .samplers import sample_indices
from .video import VideoReadError, read_video

TASKS = ("retrieval", "multiple_choice", "open_qa")
BAD_VIDEO_MODES = ("skip", "raise")
VIDEO_EXTENSIONS = (".mp4", ".avi", ".webm", ".mkv", ".mov", ".m4v", ".3gp", ".flv", ".mpg", ".mpeg")

log = logging.getLogger(__name__)


class AnnotationError(ValueError):
    """A malformed annotation file or row; the message names the file and line."""


class BadVideoError(RuntimeError):
    """A video could not be read under on_bad_video="raise"; the message names the file and why."""


class VideoTextDataset(torch.utils.data.Dataset):
    """Base of all datasets. Keyword arguments (all datasets accept them):

    num_frames: frames per clip T (the clip is padded to T and masked when the video is shorter).
    sampler: a registered frame sampler ("uniform", "segment_random", "clips", "sparse").
    sampler_options: extra keyword arguments of the sampler (e.g. {"clip_len": 16} for "clips").
    size: decode size: an int S gives S x S frames (shorter side resized to S, then centre crop, which
        is what CLIP's transform does); (H, W) resizes to exactly H x W; None keeps the stored size.
    train: random sampling (for samplers that have randomness) when True, deterministic otherwise.
    on_bad_video: "skip" (the item carries "bad_video") or "raise" (BadVideoError).
    reader: "auto" (decord, PyAV when decord is missing or fails on a file), "decord" or "pyav".
    seed: base seed of the training-time sampling RNG. After `set_epoch(e)` a training item's frames
        are a pure function of (seed, e, sample index), whatever worker decodes it, so a resumed run
        draws the same frames; without set_epoch each draw takes a seed from torch's RNG (seeded per
        DataLoader worker, and restored with the RNG states on resume when num_workers is 0).
    """

    task: str = "retrieval"
    name: str = "dataset"
    # Annotation files (relative to root) of a validation split apart from the test split: when one
    # exists, training picks its best checkpoint on "val" (data.eval_split "auto"). Empty where the
    # release has none, or where its "val" names the test files (msrvtt, activitynet, sutd_trafficqa).
    validation_files: tuple[str, ...] = ()

    @classmethod
    def validation_split(cls, root: str | Path) -> str | None:
        """"val" when the dataset at `root` has a validation split apart from its test split, else None."""
        return "val" if any((Path(root) / name).is_file() for name in cls.validation_files) else None

    def __init__(self, *, num_frames: int = 12, sampler: str = "uniform", sampler_options: dict | None = None,
                 size: int | tuple[int, int] | None = 224, train: bool = False, on_bad_video: str = "skip",
                 reader: str = "auto", seed: int = 0) -> None:
        if num_frames < 1:
            raise ValueError(f"{type(self).__name__}: num_frames must be >= 1, got {num_frames}")
        if sampler not in SAMPLERS:
            SAMPLERS.get(sampler)  # raises with the known names
        if on_bad_video not in BAD_VIDEO_MODES:
            raise ValueError(f"{type(self).__name__}: on_bad_video must be one of {BAD_VIDEO_MODES}, "
                             f"got {on_bad_video!r}")
        if reader not in ("auto", "decord", "pyav"):
            raise ValueError(f"{type(self).__name__}: reader must be 'auto', 'decord' or 'pyav', got {reader!r}")
        self.num_frames = int(num_frames)
        self.sampler = sampler
        self.sampler_options = dict(sampler_options or {})
        self.size = size
        self.train = bool(train)
        self.on_bad_video = on_bad_video
        self.reader = reader
        self.seed = int(seed)
        self.epoch: int | None = None
        self.video_ids: list[str] = []
        self.samples: list[dict] = []
        self.answer_vocab: list[str] | None = None
        self._video_files: list[Path] = []
        self._last: tuple[int, dict] | None = None  # eval only: consecutive captions of one video decode once
        # fail early on a bad sampler option rather than in a DataLoader worker
        sample_indices(self.sampler, max(self.num_frames, 1), self.num_frames, train=False,
                       rng=random.Random(0), **self.sampler_options)

    # ---- set by subclasses ------------------------------------------------------------------
    def _set_annotations(self, *, video_ids: list[str], video_files: list[Path], samples: list[dict],
                         answer_vocab: list[str] | None = None) -> None:
        if len(video_ids) != len(video_files):
            raise ValueError("video_ids and video_files must have the same length")
        if len(set(video_ids)) != len(video_ids):
            raise ValueError(f"{type(self).__name__}: video ids must be unique")
        for s in samples:
            if not 0 <= s["video_index"] < len(video_ids):
                raise ValueError(f"sample {s} points outside the {len(video_ids)} videos")
        self.video_ids = [str(v) for v in video_ids]
        self._video_files = [Path(p) for p in video_files]
        self.samples = samples
        self.answer_vocab = answer_vocab

    # ---- the interface ----------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.samples)

    def video_path(self, video_index: int) -> Path:
        return self._video_files[video_index]

    def frame_indices(self, num_video_frames: int, rng: random.Random | None = None) -> list[int]:
        rng = rng or random.Random(self.seed)
        return sample_indices(self.sampler, num_video_frames, self.num_frames, train=self.train, rng=rng,
                              **self.sampler_options)

    def load_video(self, video_index: int, *, rng: random.Random | None = None) -> dict:
        """Decode one video: {"video_id", "frames" uint8 [T,3,H,W], "frame_mask" bool [T], "reader"}.
        Raises BadVideoError (naming the file and the reason) when the video cannot be read."""
        path = self.video_path(video_index)
        video_id = self.video_ids[video_index]
        if rng is None and self.train:
            rng = random.Random(int(torch.randint(0, 2**62, (1,)).item()))
        try:
            clip = read_video(path, lambda n: self.frame_indices(n, rng), size=self.size, reader=self.reader)
        except VideoReadError as error:
            raise BadVideoError(f"video {video_id!r} ({path}): {error.reason}") from error
        frames, count = clip.frames, clip.frames.shape[0]
        mask = torch.zeros(self.num_frames, dtype=torch.bool)
        mask[:count] = True
        if count < self.num_frames:
            pad = frames.new_zeros((self.num_frames - count, *frames.shape[1:]))
            frames = torch.cat([frames, pad])
        return {"video_id": video_id, "frames": frames, "frame_mask": mask, "reader": clip.reader,
                "frame_indices": clip.indices}

    def __getitem__(self, index: int) -> dict:
        sample = self.samples[index]
        video_index = sample["video_index"]
        item = {**sample, "sample_index": index, "video_id": self.video_ids[video_index]}
        try:
            if not self.train and self._last is not None and self._last[0] == video_index:
                loaded = self._last[1]  # deterministic sampling: the same clip as last time
            else:
                loaded = self.load_video(video_index, rng=self._item_rng(index))
                if not self.train:
                    self._last = (video_index, loaded)
            item.update(loaded)
        except BadVideoError as error:
            if self.on_bad_video == "raise":
                raise
            log.warning("skipping a bad video: %s", error)
            item.update(frames=None, frame_mask=None, bad_video=str(error))
        return item

    def set_epoch(self, epoch: int) -> None:
        """Make training-time sampling a pure function of (seed, epoch, sample index)."""
        self.epoch = int(epoch)

    def _item_rng(self, index: int) -> random.Random | None:
        if not self.train or self.epoch is None:
            return None
        return random.Random(hash((self.seed, self.epoch, index)))

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_last"] = None  # workers start without the main process's decoded clip
        return state

    def collate(self, items: list[dict]) -> dict:
        from .collate import collate

        return collate(items, task=self.task)

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(task={self.task!r}, videos={len(self.video_ids)}, "
                f"samples={len(self.samples)}, num_frames={self.num_frames}, sampler={self.sampler!r}, "
                f"size={self.size!r}, train={self.train})")


def find_video(directory: Path, video_id: str, extensions: tuple[str, ...] = VIDEO_EXTENSIONS,
               listing: dict[str, Path] | None = None) -> Path:
    """The file of `video_id` in `directory` (any known extension, or the id itself if it has one).
    A missing file is returned as `directory/<id>.mp4` so that it surfaces later as a bad video."""
    if listing is not None:
        hit = listing.get(video_id)
        if hit is not None:
            return hit
    direct = directory / video_id
    if direct.suffix.lower() in extensions and direct.is_file():
        return direct
    for ext in extensions:
        candidate = directory / f"{video_id}{ext}"
        if candidate.is_file():
            return candidate
    return directory / f"{video_id}.mp4"


def list_videos(directory: Path) -> dict[str, Path]:
    """stem -> path of every video file in `directory` (one directory listing instead of a stat per id)."""
    out: dict[str, Path] = {}
    if directory.is_dir():
        for p in sorted(directory.iterdir()):
            if p.suffix.lower() in VIDEO_EXTENSIONS:
                out.setdefault(p.stem, p)
                out.setdefault(p.name, p)
    return out
