"""`vl-adapters answer`: a trained question-answering model's ranked answers for one video.

A multiple-choice model scores the candidates given (each formatted with the question as the model
was trained to read them); an open-QA model scores its whole answer vocabulary (recorded with it at
training time), or only the given candidates when there are some.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import NamedTuple

import torch

from . import add_model_arguments, autocast, frame_settings, load_model

EXAMPLES = """\
examples:
  vl-adapters answer --model runs/nextqa clip.mp4 --question "why did the boy fall?" \\
      --candidates "he tripped" "he was pushed" "he slipped on ice"
  vl-adapters answer --model runs/msrvtt_qa clip.mp4 --question "what is the man doing?" --top-k 3
  vl-adapters answer --model user/name clip.mp4 --question "what colour is the car?" --json

See docs/sharing.md.
"""


class Answer(NamedTuple):
    text: str
    score: float  # the head's logit
    probability: float  # softmax over the candidates (multiple choice) or the whole vocabulary (open QA)


def read_clip(model, video: str | Path, *, num_frames: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(uint8 frames [T, 3, S, S], frame_mask [T]) of one video file, sampled as the model was trained."""
    from ..data.folder import VideoFiles

    path = Path(video)
    num_frames, sampler = frame_settings(model, num_frames)
    files = VideoFiles([path], root=path.parent, num_frames=num_frames, sampler=sampler,
                       size=model.backbone.dims.image_size)
    loaded = files.load_video(0)  # BadVideoError names the file and why it cannot be read
    return loaded["frames"], loaded["frame_mask"]


@torch.no_grad()
def answer(model, frames: torch.Tensor, frame_mask: torch.Tensor, question: str,
           candidates: list[str] | None = None, *, top_k: int | None = None) -> list[Answer]:
    """Ranked answers, best first, to `question` about one video (frames uint8 [T, 3, H, W])."""
    from ..core.config import ConfigError

    task = model.task.name
    model.eval()
    batch = {"video": frames[None], "frame_mask": frame_mask[None], "question": [question]}
    if task == "multiple_choice":
        if not candidates or len(candidates) < 2:
            raise ConfigError("--candidates: a multiple-choice model ranks the answers it is given; give two or more")
        batch.update(candidates=[list(candidates)], candidate_mask=torch.ones(1, len(candidates), dtype=torch.bool))
        names = list(candidates)
    elif task == "open_qa":
        names = list(model.task.config.answers)
        if not names:
            raise ConfigError("this open-QA model has no answer vocabulary recorded (its task config's 'answers' is "
                              "empty), so its classes have no names; train it again with this version")
        unknown = [c for c in candidates or [] if c not in names]
        if unknown:
            raise ConfigError(f"--candidates: {unknown} are not in the model's answer vocabulary of {len(names)} "
                              f"answers (e.g. {names[:5]})")
    else:
        raise ConfigError(f"answer needs a multiple_choice or open_qa model; this one is a {task!r} model "
                          "(rank videos for a text with `vl-adapters search`)")
    with autocast(model):
        scores = model(batch).scores[0].float().cpu()
    probabilities = scores.softmax(-1)
    keep = [names.index(c) for c in dict.fromkeys(candidates)] if task == "open_qa" and candidates else \
        list(range(len(names)))
    ranked = sorted(keep, key=lambda i: -scores[i].item())[:top_k]
    return [Answer(names[i], scores[i].item(), probabilities[i].item()) for i in ranked]


def register(sub) -> None:
    import argparse

    parser = sub.add_parser("answer", help="answer a question about one video with a trained QA model",
                            description="Rank the answers of a multiple-choice or open-QA model for one video.",
                            epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("video", metavar="VIDEO", help="a video file")
    parser.add_argument("--question", required=True, help="the question about the video")
    parser.add_argument("--candidates", nargs="+", metavar="ANSWER",
                        help="the answers to rank (multiple choice: required; open QA: a subset of its vocabulary)")
    add_model_arguments(parser)
    parser.add_argument("--top-k", type=int, help="answers shown (default: every candidate; open QA: 5)")
    parser.set_defaults(func=cmd_answer)


def cmd_answer(args) -> int:
    model = load_model(args)
    frames, mask = read_clip(model, args.video, num_frames=args.num_frames)
    top_k = args.top_k or (5 if model.task.name == "open_qa" and not args.candidates else None)
    ranked = answer(model, frames, mask, args.question, args.candidates, top_k=top_k)
    if args.json:
        print(json.dumps({"model": str(args.model), "video": str(args.video), "question": args.question,
                          "answers": [{"rank": r, "answer": a.text, "score": a.score, "probability": a.probability}
                                      for r, a in enumerate(ranked, 1)]}, indent=2))
        return 0
    print(json.dumps(args.question))
    for rank, a in enumerate(ranked, 1):
        print(f"  {rank:>3}  {a.score:8.4f}  p={a.probability:.3f}  {a.text}")
    return 0
