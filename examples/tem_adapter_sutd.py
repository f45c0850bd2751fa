"""Tem-Adapter on SUTD-TrafficQA: multiple-choice video QA with the Temporal and Semantic Aligners.

    .venv/bin/python examples/tem_adapter_sutd.py                      # a synthetic SUTD-TrafficQA-shaped set
    .venv/bin/python examples/tem_adapter_sutd.py --root /data/sutd_trafficqa \\
        --backbone open_clip:ViT-B-32 --pretrained /path/to/ViT-B-32.pt --frames 128 --clip-len 16 --epochs 50
    vl-adapters train --config examples/configs/tem_adapter_sutd.yaml --root /data/sutd_trafficqa   # the same, from YAML

The root is the SUTD-TrafficQA release (see vl_adapters/data/datasets/sutd_trafficqa.py): annotations/
R2_train.jsonl and R2_test.jsonl (a header row, then one JSON list per question) and raw_videos/.
Without --root a small synthetic set in that layout is written first (real mp4 files of a moving square;
2 to 4 options per question, as in the real data), so the example runs on a CPU and downloads nothing.

The model: "tem_adapter", which the wrapper runs as its two parts: the Temporal Aligner (a "video"
adapter: encoder pooling of the frames, trained with language-guided next-frame prediction whose guidance
is the right candidate's text) and the Semantic Aligner (a "cross" adapter: each candidate's tokens attend
to its own video). Frames are sampled as Tem-Adapter does: N clip centres x M consecutive frames.
Add --official to train the official configuration (leaky target, unnormalised dot product, hinge).
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
from pathlib import Path

import av
import numpy as np

from vl_adapters.train import TrainConfig, Trainer
from vl_adapters.train.evaluate import evaluate

HEADER = ["record_id", "vid_id", "vid_filename", "perspective", "q_body", "q_type",
          "option0", "option1", "option2", "option3", "answer"]
MOTIONS = {"left": (-3, 0), "right": (3, 0), "up": (0, -3), "down": (0, 3)}


def write_synthetic_sutd(root: Path, num_videos: int = 32, size: int = 64, frames: int = 16) -> None:
    """A seeded SUTD-TrafficQA-shaped set: a car (a square) drives one way; "where does the car go?" with
    2-4 options (unused slots empty, as in the release); three quarters of the questions train."""
    rng = random.Random(0)
    (root / "raw_videos").mkdir(parents=True, exist_ok=True)
    (root / "annotations").mkdir(exist_ok=True)
    rows = {"train": [], "test": []}
    for i in range(num_videos):
        motion = rng.choice(list(MOTIONS))
        name = f"clip{i}.mp4"
        x, y = size // 2 - 8, size // 2 - 8
        with av.open(str(root / "raw_videos" / name), "w") as container:
            stream = container.add_stream("mpeg4", rate=8)
            stream.width = stream.height = size
            stream.pix_fmt = "yuv420p"
            for _ in range(frames):
                image = np.full((size, size, 3), 50, dtype=np.uint8)
                image[max(y, 0):y + 16, max(x, 0):x + 16] = (220, 40, 40)
                container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
                x, y = x + MOTIONS[motion][0], y + MOTIONS[motion][1]
            container.mux(stream.encode())
        wrong = rng.sample([m for m in MOTIONS if m != motion], rng.randint(1, 3))
        options = wrong + [motion]
        rng.shuffle(options)
        answer = options.index(motion)
        texts = [f"the car moves {m}" for m in options] + [""] * (4 - len(options))
        row = [i, i, name, 1, "where does the car go?", rng.choice("UAFRCI"), *texts, answer]
        rows["train" if i < num_videos * 3 // 4 else "test"].append(row)
    for split, split_rows in rows.items():
        lines = [json.dumps(HEADER)] + [json.dumps(r) for r in split_rows]
        (root / "annotations" / f"R2_{split}.jsonl").write_text("\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, help="a SUTD-TrafficQA directory; omitted: write a synthetic one")
    parser.add_argument("--backbone", default="tiny")
    parser.add_argument("--pretrained", default=None, help="open_clip tag or local weights file")
    parser.add_argument("--frames", type=int, default=8, help="N clips x M frames in all (the paper: 128)")
    parser.add_argument("--clip-len", type=int, default=4, help="M consecutive frames per clip (the paper: 16)")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--official", action="store_true", help="official_compat aligners and the averaged hinge")
    parser.add_argument("--run-dir", type=Path, default=None)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="tem-adapter-example-"))
    root = args.root
    if root is None:
        root = work / "sutd"
        write_synthetic_sutd(root)
        print(f"wrote a synthetic SUTD-TrafficQA-shaped set to {root}")
    adapter = {"type": "tem_adapter", "official_compat": args.official}
    task = {"type": "multiple_choice", "loss": "hinge" if args.official else "cross_entropy"}
    config = TrainConfig.from_dict({
        "run_dir": str(args.run_dir or work / "run"), "epochs": args.epochs, "progress": False, "log_every": 5,
        "data": {"dataset": "sutd_trafficqa", "root": str(root), "num_frames": args.frames, "sampler": "clips",
                 "batch_size": args.batch, "eval_batch_size": 16, "num_workers": 0,
                 "options": {"sampler_options": {"clip_len": args.clip_len}}},
        "model": {"backbone": args.backbone, "pretrained": args.pretrained, "adapters": [adapter], "task": task},
        "optim": {"lr": args.lr},
    })
    trainer = Trainer(config)
    trainer.model.print_trainable_parameters()
    for part in trainer.model.adapters:
        print(f"  {part.name}: {sum(p.numel() for p in part.parameters() if p.requires_grad):,} parameters")
    zero_shot = evaluate(trainer.model, trainer.eval_dataset)
    trained = trainer.fit()
    label = "untrained (official init)" if args.official else "zero-shot (identity at init)"
    print(f"{label:29s} {json.dumps(zero_shot, default=float)}")
    print(f"{'trained':29s} {json.dumps(trained, default=float)}")
    print(f"run directory: {config.run_dir}")


if __name__ == "__main__":
    main()
