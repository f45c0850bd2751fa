"""MSR-VTT multiple choice (the JSFusion release: one of five captions matches the video).

root/
  MSR_MC_test.csv       tab-separated, columns key, vid_key, video_id, a1, a2, a3, a4, a5, answer
                        (answer = 0-based index of the right caption among a1..a5)
  videos/video7010.mp4 ...  (or video_dir=...)

Split: "test" (the only one released). The question is empty: each candidate is a caption.
"""

from __future__ import annotations

from pathlib import Path

from ..base import VideoTextDataset
from ._common import Annotations, VideoIds, resolve_videos, video_directory
from .msrvtt import read_csv_rows

OPTIONS = ("a1", "a2", "a3", "a4", "a5")


class MSRVTTMC(VideoTextDataset):
    task = "multiple_choice"
    name = "msrvtt_mc"

    def __init__(self, root: str | Path, split: str = "test", *, video_dir: str | Path | None = None,
                 file: str = "MSR_MC_test.csv", strict_annotations: bool = True, **kwargs) -> None:
        super().__init__(**kwargs)
        if split not in ("test", "val"):
            raise ValueError(f"msrvtt_mc: only the 'test' split exists, got {split!r}")
        root = Path(root)
        notes = Annotations(strict_annotations)
        self.annotation_errors = notes.errors
        path = root / file
        videos, samples = VideoIds(), []
        for line, row in read_csv_rows(path, ("video_id", *OPTIONS, "answer"), notes):
            try:
                answer = int(row["answer"])
            except ValueError:
                notes.bad(path, line, f"answer must be an integer 0..4, got {row['answer']!r}")
                continue
            candidates = [row[c].strip() for c in OPTIONS]
            if not 0 <= answer < len(candidates):
                notes.bad(path, line, f"answer {answer} is outside 0..{len(candidates) - 1}")
                continue
            vid = row["video_id"].strip()
            samples.append({"video_index": videos.number(vid), "question": "", "candidates": candidates,
                            "answer": answer, "question_type": None})
        directory = video_directory(root, video_dir, ("videos", "MSRVTT_Videos", "videos/all"))
        video_ids = videos.ids
        self._set_annotations(video_ids=video_ids, video_files=resolve_videos(directory, video_ids),
                              samples=samples)
