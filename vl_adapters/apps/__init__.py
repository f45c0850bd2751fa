"""Using a trained model on one's own videos: `vl-adapters search` (a folder, text queries) and
`vl-adapters answer` (one video, a question)."""

from __future__ import annotations

import argparse
import contextlib

import torch

DEFAULT_FRAMES, DEFAULT_SAMPLER = 12, "uniform"


def frame_settings(model, num_frames: int | None = None, sampler: str | None = None) -> tuple[int, str]:
    """Frames per video and sampler: the given ones, else the ones the model was trained with (from its
    training record), else 12 uniform."""
    data = ((getattr(model, "training_record", None) or {}).get("config") or {}).get("data") or {}
    return (num_frames or data.get("num_frames") or DEFAULT_FRAMES, sampler or data.get("sampler") or DEFAULT_SAMPLER)


def autocast(model):
    """bf16 autocast on CUDA (fp32 adapters under a bf16 backbone), as evaluation runs; nothing on the CPU."""
    if model.backbone.device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, metavar="DIR_OR_REPO",
                        help="a save_pretrained folder, a checkpoint, a training run directory or a Hub repo id "
                             "(user/name)")
    parser.add_argument("--pretrained", help="backbone weights (default: the source recorded with the adapters)")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    parser.add_argument("--num-frames", type=int, help="frames per video (default: the model's training setting)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of text")


def load_model(args: argparse.Namespace):
    from ..core.hub import from_pretrained
    from ..train.trainer import resolve_device

    return from_pretrained(args.model, pretrained=args.pretrained, device=resolve_device(args.device))
