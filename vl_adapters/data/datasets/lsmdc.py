"""LSMDC text-to-video retrieval (the LSMDC 2016 challenge's annotation files).

root/
  LSMDC16_annos_training.csv                 tab-separated, no header, six fields per line:
  LSMDC16_annos_val.csv                      clip id, start (aligned), end (aligned), start (extracted),
  LSMDC16_annos_test.csv                     end (extracted), sentence
  LSMDC16_challenge_1000_publictect.csv      the 1,000-clip test set the retrieval papers report on
  avi/<movie>/<clip id>.avi                  (or avi/<clip id>.avi, videos/..., or video_dir=...)

Splits: "train", "val", "test" (the 1,000 challenge clips, one sentence each), "public_test"
(LSMDC16_annos_test.csv). A clip id is "<movie>_<start>-<end>" (e.g. 1004_Juno_00.00.32.849-00.00.35.458);
its video is looked up directly in the video directory and in the movie's folder there. Other files of
the same layout (the *_someone.csv variants) are read with file=.
"""

from __future__ import annotations

from pathlib import Path

from ..base import VideoTextDataset
from ._common import Annotations, VideoIds, require, resolve_videos, video_directory

SPLIT_FILES = {"train": "LSMDC16_annos_training.csv", "val": "LSMDC16_annos_val.csv",
               "test": "LSMDC16_challenge_1000_publictect.csv", "public_test": "LSMDC16_annos_test.csv"}
FIELDS = ("clip id", "start aligned", "end aligned", "start extracted", "end extracted", "sentence")


def movie_of(clip_id: str) -> str:
    """The movie folder of a clip: the id without its trailing "_<start>-<end>"."""
    return clip_id.rsplit("_", 1)[0]


class LSMDC(VideoTextDataset):
    task = "retrieval"
    name = "lsmdc"
    validation_files = (SPLIT_FILES["val"],)

    def __init__(self, root: str | Path, split: str = "test", *, video_dir: str | Path | None = None,
                 file: str | None = None, strict_annotations: bool = True, **kwargs) -> None:
        super().__init__(**kwargs)
        root = Path(root)
        if split not in SPLIT_FILES:
            raise ValueError(f"lsmdc: unknown split {split!r}; expected one of {sorted(SPLIT_FILES)}")
        notes = Annotations(strict_annotations)
        self.annotation_errors = notes.errors
        path = require(root / (file or SPLIT_FILES[split]), "lsmdc annotations")
        videos = VideoIds()
        samples: list[dict] = []
        for line_no, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            fields = line.rstrip("\r").split("\t")
            if len(fields) != len(FIELDS):
                notes.bad(path, line_no, f"expected {len(FIELDS)} tab-separated fields ({', '.join(FIELDS)}), "
                                         f"got {len(fields)}: {line[:160]!r}")
                continue
            clip, sentence = fields[0].strip(), fields[-1].strip()
            if not clip or not sentence:
                notes.bad(path, line_no, "empty clip id or sentence")
                continue
            samples.append({"video_index": videos.number(clip), "text": sentence})
        directory = video_directory(root, video_dir, ("avi", "videos"))
        video_ids = videos.ids
        aliases = {clip: [f"{movie_of(clip)}/{clip}"] for clip in video_ids}
        self._set_annotations(video_ids=video_ids, video_files=resolve_videos(directory, video_ids, aliases),
                              samples=samples)
