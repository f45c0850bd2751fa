"""Trajectory-word alignment (TW-BERT) on the MSR-VTT layout: align before fuse, then re-rank the top-k.

    .venv/bin/python examples/trajectory_word_msrvtt.py                      # a synthetic MSR-VTT-shaped set
    .venv/bin/python examples/trajectory_word_msrvtt.py --root /data/MSRVTT \\
        --backbone open_clip:ViT-B-32 --pretrained /path/to/ViT-B-32.pt --frames 12 --steps 2000

The MSR-VTT layout read here (the one CLIP4Clip and most follow-ups use):
    <root>/MSRVTT_data.json             {"videos": [{"video_id", "split"}], "sentences": [{"video_id", "caption"}]}
    <root>/videos/all/<video_id>.mp4
    <root>/MSRVTT_JSFUSION_test.csv     optional: the 1k-A test split (columns key, vid_key, video_id, sentence);
                                        without it the json's "test" videos are used, one caption each
Without --root a tiny synthetic set in that layout is written first (real mp4 files, moving squares),
so the example runs on a CPU in well under a minute and downloads nothing.

The model: the frozen backbone; "fine_grained_alignment" (a dual-encoder word-patch InfoNCE whose
score is added to the cosine through a weight that starts at zero); "trajectory_word" (the cross
encoder, trained by the retrieval head's matching loss on hard negatives; at evaluation it re-ranks
each text's top-k videos).
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import tempfile
from pathlib import Path

import av
import numpy as np
import torch

import vl_adapters as vla
from vl_adapters.core.features import concat_text_features, concat_video_features
from vl_adapters.tasks.metrics import retrieval_metrics

COLOURS = {"red": (220, 30, 30), "green": (30, 200, 30), "blue": (30, 30, 220), "yellow": (230, 220, 30)}
MOTIONS = {"left": (-3, 0), "right": (3, 0), "up": (0, -3), "down": (0, 3)}


def write_synthetic_msrvtt(root: Path, num_videos: int = 24, size: int = 64, frames: int = 16) -> None:
    """A seeded MSR-VTT-shaped set: each video a coloured square moving one way, two captions each."""
    rng = random.Random(0)
    (root / "videos" / "all").mkdir(parents=True, exist_ok=True)
    videos, sentences = [], []
    for i in range(num_videos):
        colour, motion = rng.choice(list(COLOURS)), rng.choice(list(MOTIONS))
        video_id = f"video{i}"
        x, y = size // 2 - 8, size // 2 - 8
        with av.open(str(root / "videos" / "all" / f"{video_id}.mp4"), "w") as container:
            stream = container.add_stream("mpeg4", rate=8)
            stream.width = stream.height = size
            stream.pix_fmt = "yuv420p"
            for _ in range(frames):
                image = np.full((size, size, 3), 40, dtype=np.uint8)
                image[max(y, 0):y + 16, max(x, 0):x + 16] = COLOURS[colour]
                container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
                x, y = x + MOTIONS[motion][0], y + MOTIONS[motion][1]
            container.mux(stream.encode())
        videos.append({"video_id": video_id, "split": "train" if i < num_videos * 3 // 4 else "test"})
        sentences += [{"video_id": video_id, "caption": f"a {colour} square moves {motion}"},
                      {"video_id": video_id, "caption": f"the {colour} box slides {motion}"}]
    (root / "MSRVTT_data.json").write_text(json.dumps({"videos": videos, "sentences": sentences}))


def read_frames(path: Path, num_frames: int) -> torch.Tensor:
    """Uniformly sampled uint8 frames [T, 3, H, W] (PyAV; decord would do the same)."""
    with av.open(str(path)) as container:
        decoded = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    index = np.linspace(0, len(decoded) - 1, num_frames).round().astype(int)
    return torch.from_numpy(np.stack([decoded[i] for i in index])).permute(0, 3, 1, 2)


def load_split(root: Path) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """(video_id, caption) pairs for training (every caption) and testing (1k-A, or one per test video)."""
    data = json.loads((root / "MSRVTT_data.json").read_text())
    split = {v["video_id"]: v["split"] for v in data["videos"]}
    train = [(s["video_id"], s["caption"]) for s in data["sentences"] if split[s["video_id"]] == "train"]
    jsfusion = root / "MSRVTT_JSFUSION_test.csv"
    if jsfusion.exists():
        with jsfusion.open() as f:
            test = [(row["video_id"], row["sentence"]) for row in csv.DictReader(f)]
    else:
        first: dict[str, str] = {}
        for s in data["sentences"]:
            if split[s["video_id"]] == "test":
                first.setdefault(s["video_id"], s["caption"])
        test = list(first.items())
    return train, test


@torch.no_grad()
def encode(model, root: Path, pairs, frames: int, batch: int = 32):
    """Frozen backbone features once for every (video, caption) pair: adapters train on these."""
    videos, texts = [], []
    for start in range(0, len(pairs), batch):
        chunk = pairs[start:start + batch]
        clips = torch.stack([read_frames(root / "videos" / "all" / f"{v}.mp4", frames) for v, _ in chunk])
        video, text = model.encode_inputs(clips, [c for _, c in chunk])
        videos.append(video)
        texts.append(text)
    return concat_video_features(videos), concat_text_features(texts)


def recall(scores: torch.Tensor) -> dict[str, float]:
    """Text-to-video R@1/5/10, MdR, MnR (text i's video is video i). Re-ranking is per text, so only
    this direction is meaningful for re-ranked scores."""
    return {k.removeprefix("t2v_"): v for k, v in retrieval_metrics(scores).items() if k.startswith("t2v_")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, help="an MSR-VTT directory; omitted: write a synthetic one")
    parser.add_argument("--backbone", default="tiny")
    parser.add_argument("--pretrained", default=None, help="open_clip tag or local weights file")
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--depth", type=int, default=2)
    parser.add_argument("--rerank-k", type=int, default=50)
    args = parser.parse_args()
    torch.manual_seed(0)

    root = args.root
    if root is None:
        root = Path(tempfile.mkdtemp(prefix="msrvtt-synthetic-"))
        write_synthetic_msrvtt(root)
        print(f"wrote a synthetic MSR-VTT-shaped set to {root}")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    backbone = vla.load_backbone(args.backbone, pretrained=args.pretrained, device=device)
    model = vla.wrap(backbone, ["fine_grained_alignment", {"type": "trajectory_word", "depth": args.depth}])
    model.print_trainable_parameters()

    train_pairs, test_pairs = load_split(root)
    train_video, train_text = encode(model, root, train_pairs, args.frames)
    test_video, test_text = encode(model, root, test_pairs, args.frames)
    print(f"{len(train_pairs)} training pairs, {len(test_pairs)} test pairs")

    model.eval()
    zero_shot = recall(model.similarity(test_text, test_video, rerank_k=args.rerank_k))
    optimizer = torch.optim.AdamW(model.trainable_parameters(), lr=args.lr, weight_decay=0.01)
    model.train()
    for step in range(args.steps):
        index = torch.randperm(len(train_pairs))[:args.batch]
        out = model({"video": train_video.index(index), "text": train_text.index(index)})
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
        if step % 20 == 0 or step == args.steps - 1:
            print(f"step {step:4d} " + " ".join(f"{k}={v.item():.3f}" for k, v in out.losses.items()))
    model.eval()
    dual = recall(model.dual_similarity(model.encode_text(test_text), model.encode_video(test_video)))
    reranked = recall(model.similarity(test_text, test_video, rerank_k=args.rerank_k))
    for name, metrics in (("zero-shot", zero_shot), ("trained, dual only", dual), (f"trained, top-{args.rerank_k} re-ranked", reranked)):
        print(f"{name:28s} " + " ".join(f"{k}={v:.1f}" for k, v in metrics.items()))


if __name__ == "__main__":
    main()
