"""The benchmark's data in memory: every video decoded once, every string encoded once.

Each part (train / val / test) holds
- `frames`: the videos decoded by the generic JSONL dataset (PyAV/decord) and put through the backbone's
  frame transform, fp16 [V, T, 3, S, S]. Rows whose adapters live inside the backbone (stage
  "backbone": LoRA, ST-Adapter, token masking) are fed these frames every step;
- `features`: the frozen backbone's VideoFeatures of exactly those frames (fp32), what every other row is
  fed (the feature cache, in memory);
- `captions` and the multiple-choice candidates as TextFeatures from the frozen text tower, each distinct
  string encoded once (rows with a backbone adapter get the strings instead, which the model encodes
  once through its text store unless the adapter changes the text tower, as LoRA does).

`retrieval_batch` / `mc_batch` build a batch for either task head from indices, in either input form,
with the frames of each video that the row's view picks (all in order, the middle one, or shuffled).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from vl_adapters.core.features import TextFeatures, VideoFeatures

TEXT_CHUNK = 512
VIDEO_CHUNK = 64


@dataclass
class Questions:
    """Multiple-choice rows of one part: candidate k of question q is text row q*K + k."""

    video: Tensor  # [Q] video index of each question
    answer: Tensor  # [Q]
    mask: Tensor  # [Q, K] bool, real candidates
    kinds: list[str]  # [Q] "static" | "temporal"
    forward: Tensor  # [Q] bool, the question is about a forward video (not a backward twin)
    twin_candidate: Tensor  # [Q] index of the candidate that is the twin video's caption (-1: none)
    strings: list[str]  # [Q*K] candidate texts ('' in padding slots)
    text: TextFeatures  # [Q*K]

    def __len__(self) -> int:
        return len(self.kinds)


@dataclass
class Part:
    name: str
    video_ids: list[str]
    frames: Tensor  # [V, T, 3, S, S] fp16, transformed
    features: VideoFeatures  # [V] fp32
    captions: list[str]  # [C]
    caption_video: Tensor  # [C] video index of each caption
    caption_kind: list[str]  # [C] "static" | "temporal"
    caption_direction: list[str]  # [C] "forward" | "backward"
    twin_video: Tensor  # [V] index of each video's backward (or forward) twin
    text: TextFeatures  # [C]
    questions: Questions

    @property
    def num_videos(self) -> int:
        return len(self.video_ids)


# ---------------------------------------------------------------- frame views
def frame_order(num: int, num_frames: int, view: str, gen: torch.Generator | None) -> Tensor:
    """[num, T'] frame indices of a view: "all" (in order), "middle" (the middle frame only) or
    "shuffled" (a random permutation per video, drawn from `gen`)."""
    if view == "all":
        return torch.arange(num_frames).expand(num, num_frames)
    if view == "middle":
        return torch.full((num, 1), num_frames // 2, dtype=torch.long)
    if view == "shuffled":
        return torch.rand(num, num_frames, generator=gen).argsort(dim=1)
    raise ValueError(f"frame view must be 'all', 'middle' or 'shuffled', got {view!r}")


def take_frames(video: VideoFeatures | Tensor, order: Tensor) -> VideoFeatures | Tensor:
    """Frames `order` [B, T'] of each video of a batch (VideoFeatures or frames [B, T, 3, S, S])."""
    rows = torch.arange(order.shape[0])[:, None]
    if isinstance(video, Tensor):
        return video[rows, order]
    patches = video.patch_tokens[rows, order] if video.patch_tokens is not None else None
    return video.replace(frame_emb=video.frame_emb[rows, order], frame_mask=video.frame_mask[rows, order],
                         patch_tokens=patches, video_emb=None)


def shuffled(video: VideoFeatures, seed: int) -> VideoFeatures:
    """Each video's frames in a random order (fixed seed): order-blind models are unaffected."""
    gen = torch.Generator().manual_seed(seed)
    return take_frames(video, frame_order(video.batch_size, video.frame_emb.shape[1], "shuffled", gen))


# ---------------------------------------------------------------- batches
def video_input(part: Part, index: Tensor, order: Tensor, *, frames: bool):
    """Videos `index` (frames `order` [B, T'] of each) as the model's input: backbone features, or
    transformed frames (fp32) for rows whose adapters run inside the backbone."""
    if frames:
        return take_frames(part.frames[index], order).float()
    return take_frames(part.features.index(index), order)


def text_input(texts: TextFeatures, strings: list[str], index: Tensor, *, frames: bool):
    """Texts `index` as the model's input: frozen TextFeatures with the token axes cut to the batch's
    longest text (what `model.frozen_text` gives), or the strings for rows with a backbone adapter."""
    if frames:
        return [strings[i] for i in index.tolist()]
    text = texts.index(index)
    positions = torch.arange(1, text.token_mask.shape[1] + 1)
    length = int((text.token_mask * positions).amax().clamp_min(1))
    return text.replace(token_states=text.token_states[:, :length], token_mask=text.token_mask[:, :length],
                        input_ids=None if text.input_ids is None else text.input_ids[:, :length])


def retrieval_batch(part: Part, captions: Tensor, order: Tensor, *, frames: bool) -> dict:
    """Captions `captions` with their own videos (text i describes video i); `order`: frames per video."""
    return {"video": video_input(part, part.caption_video[captions], order, frames=frames),
            "text": text_input(part.text, part.captions, captions, frames=frames)}


def mc_batch(part: Part, questions: Tensor, order: Tensor, *, frames: bool, with_answer: bool = True) -> dict:
    """Questions `questions` with their videos and every candidate; `order`: frames per video."""
    q = part.questions
    k = q.mask.shape[1]
    rows = (questions[:, None] * k + torch.arange(k)).flatten()
    batch = {"video": video_input(part, q.video[questions], order, frames=frames),
             "text": text_input(q.text, q.strings, rows, frames=frames), "candidate_mask": q.mask[questions]}
    if with_answer:
        batch["answer"] = q.answer[questions]
    return batch


# ---------------------------------------------------------------- loading
@torch.no_grad()
def encode_strings(backbone, strings: list[str]) -> TextFeatures:
    """TextFeatures of `strings` (in order), each distinct string through the frozen text tower once."""
    from vl_adapters.core.features import concat_text_features

    unique = list(dict.fromkeys(strings))
    parts = [backbone.encode_text(unique[i:i + TEXT_CHUNK]).float() for i in range(0, len(unique), TEXT_CHUNK)]
    table = concat_text_features(parts) if len(parts) > 1 else parts[0]
    row = {s: i for i, s in enumerate(unique)}
    return table.index(torch.tensor([row[s] for s in strings], dtype=torch.long)).replace(texts=list(strings))


def _read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@torch.no_grad()
def load_part(root: Path, name: str, backbone, *, num_frames: int) -> Part:
    """Decode, transform and encode one part of the synthetic benchmark (files written by
    `vl_adapters.data.synthetic.generate`)."""
    from vl_adapters.core.features import concat_video_features
    from vl_adapters.data import build_dataset

    dataset = build_dataset("jsonl", root, name, file=f"retrieval_{name}.jsonl", num_frames=num_frames,
                            sampler="uniform", size=None, on_bad_video="raise")
    video_ids = [str(v) for v in dataset.video_ids]
    index = {v: i for i, v in enumerate(video_ids)}
    clips = []
    for i in range(len(video_ids)):  # one decoder call per file
        loaded = dataset.load_video(i)
        clips.append(backbone.transform(loaded["frames"]).half())
    frames = torch.stack(clips)
    features = [backbone.encode_video(chunk.float().to(backbone.device)).to("cpu").float()
                for chunk in frames.split(VIDEO_CHUNK)]
    features = concat_video_features(features)
    rows = _read_jsonl(root / f"retrieval_{name}.jsonl")
    mc = _read_jsonl(root / f"mc_{name}.jsonl")
    event_caption = {r["video_id"]: r["text"] for r in rows if r["question_type"] == "temporal"}
    twin_video = {r["video_id"]: r["twin"] for r in rows}
    k = max(len(r["candidates"]) for r in mc)
    strings = [c for r in mc for c in r["candidates"] + [""] * (k - len(r["candidates"]))]
    questions = Questions(
        video=torch.tensor([index[r["video_id"]] for r in mc]), answer=torch.tensor([r["answer"] for r in mc]),
        mask=torch.tensor([[j < len(r["candidates"]) for j in range(k)] for r in mc]),
        kinds=[r["question_type"] for r in mc], forward=torch.tensor([r["direction"] == "forward" for r in mc]),
        twin_candidate=torch.tensor([_position(r["candidates"], event_caption.get(r["twin"]))
                                     if r["question_type"] == "temporal" else -1 for r in mc]),
        strings=strings, text=encode_strings(backbone, strings))
    captions = [r["text"] for r in rows]
    return Part(name=name, video_ids=video_ids, frames=frames, features=features, captions=captions,
                caption_video=torch.tensor([index[r["video_id"]] for r in rows]),
                caption_kind=[r["question_type"] for r in rows], caption_direction=[r["direction"] for r in rows],
                twin_video=torch.tensor([index[twin_video[v]] for v in video_ids]),
                text=encode_strings(backbone, captions), questions=questions)



def _position(options: list[str], wanted: str | None) -> int:
    return options.index(wanted) if wanted in options else -1
