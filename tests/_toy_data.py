"""An in-memory dataset with the data package's interface (task, video_ids, samples, load_video,
__getitem__, collate), for engine tests that must not depend on video decoding."""

from __future__ import annotations

import torch


class ToyRetrievalDataset(torch.utils.data.Dataset):
    task = "retrieval"
    answer_vocab = None

    def __init__(self, num_videos: int = 10, *, num_frames: int = 4, bad: tuple[int, ...] = (), seed: int = 0,
                 captions_per_video: int = 1) -> None:
        g = torch.Generator().manual_seed(seed)
        self.video_ids = [f"video{i}" for i in range(num_videos)]
        self.clips = torch.randint(0, 256, (num_videos, num_frames, 3, 32, 32), dtype=torch.uint8, generator=g)
        self.lengths = [num_frames - (i % 2) for i in range(num_videos)]
        words = ["red", "blue", "green", "yellow", "circle", "square", "moves", "turns", "left", "up"]
        self.samples = [{"video_index": i, "text": f"a {words[i % 10]} {words[(i * 3 + c) % 10]} clip {i}"}
                        for i in range(num_videos) for c in range(captions_per_video)]
        self.bad = set(bad)
        self.decoded = 0

    def load_video(self, video_index: int) -> dict:
        if video_index in self.bad:
            raise RuntimeError(f"{self.video_ids[video_index]}.mp4: corrupt file")
        self.decoded += 1
        mask = torch.arange(self.clips.shape[1]) < self.lengths[video_index]
        return {"frames": self.clips[video_index] * mask[:, None, None, None], "frame_mask": mask}

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict:
        sample = self.samples[index]
        item = {**sample, "sample_index": index, "video_id": self.video_ids[sample["video_index"]]}
        try:
            item.update(self.load_video(sample["video_index"]))
        except RuntimeError as error:
            item["bad_video"] = str(error)
        return item

    def collate(self, items: list[dict]) -> dict:
        good = [it for it in items if "bad_video" not in it]
        skipped = [{"video_id": it["video_id"], "reason": it["bad_video"]} for it in items if "bad_video" in it]
        if not good:
            return {"skipped": skipped}
        return {
            "video": torch.stack([it["frames"] for it in good]),
            "frame_mask": torch.stack([it["frame_mask"] for it in good]),
            "text": [it["text"] for it in good],
            "video_index": torch.tensor([it["video_index"] for it in good]),
            "sample_index": torch.tensor([it["sample_index"] for it in good]),
            "skipped": skipped,
        }


class ToyQADataset(ToyRetrievalDataset):
    """Open-ended QA ("open_qa") or multiple choice ("multiple_choice") over the same toy clips."""

    def __init__(self, num_videos: int = 8, *, task: str = "open_qa", **kwargs) -> None:
        super().__init__(num_videos, **kwargs)
        self.task = task
        self.answer_vocab = ["red", "blue", "green"]
        kinds = ["what", "who"]
        self.samples = [{"video_index": i, "question": f"what colour is clip {i}", "answer": i % 3,
                         "question_type": kinds[i % 2],
                         "candidates": ["red", "blue", "green"][: 2 + (i % 2)]}
                        for i in range(num_videos)]

    def collate(self, items: list[dict]) -> dict:
        batch = super().collate([{**it, "text": ""} for it in items])
        good = [it for it in items if "bad_video" not in it]
        if not good:
            return batch
        batch.pop("text")
        batch["question"] = [it["question"] for it in good]
        batch["question_type"] = [it["question_type"] for it in good]
        batch["answer"] = torch.tensor([it["answer"] for it in good])
        if self.task == "multiple_choice":
            k = max(len(it["candidates"]) for it in good)
            batch["candidates"] = [it["candidates"] for it in good]
            batch["candidate_mask"] = torch.tensor([[j < len(it["candidates"]) for j in range(k)] for it in good])
            batch["answer"] = torch.tensor([it["answer"] % len(it["candidates"]) for it in good])
        return batch
