"""Lay generated videos out as MSR-VTT ships them, to run `vl-adapters bench --config` end to end on the
`msrvtt` reader without downloading MSR-VTT.

Writes, under --out:
  videos/all/video<i>.mp4      the synthetic generator's videos (vl_adapters/data/synthetic.py), renamed
  MSRVTT_data.json             {"sentences": [{"video_id", "caption"}, ...]}: each training video's captions
  MSRVTT_train.9k.csv          column video_id: the training videos (train_7k: the first 7/9 of them)
  MSRVTT_train.7k.csv
  MSRVTT_JSFUSION_test.csv     key, vid_key, video_id, sentence: one (temporal) caption per test video
  bench.yaml                   a bench config over it (the `--backbone` given; random weights written to
                               a local file when --random-weights), for `vl-adapters bench --config`

    python benchmarks/msrvtt_layout.py --out /tmp/msrvtt-like --pairs 100 --test-pairs 25
    vl-adapters bench --config /tmp/msrvtt-like/bench.yaml --out /tmp/msrvtt-bench

Nothing here is MSR-VTT data: the captions describe coloured shapes. It checks the path (reader, cache,
trainer, launchers, report), not what CLIP knows.
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
from pathlib import Path

import yaml


def lay_out(out: Path, *, pairs: int, test_pairs: int, num_frames: int, seed: int) -> dict[str, int]:
    from vl_adapters.data.synthetic import generate

    staging = out / "staging"
    generate(staging, num_train_pairs=pairs, num_val_pairs=0, num_test_pairs=test_pairs, num_frames=num_frames,
             seed=seed, workers=2)
    names: dict[str, str] = {}
    (out / "videos" / "all").mkdir(parents=True, exist_ok=True)

    def video_id(row: dict) -> str:
        if row["video_id"] not in names:
            names[row["video_id"]] = f"video{len(names)}"
            shutil.copyfile(staging / "videos" / row["video"], out / "videos" / "all" / f"{names[row['video_id']]}.mp4")
        return names[row["video_id"]]

    read = lambda name: [json.loads(line) for line in (staging / name).read_text().splitlines() if line.strip()]
    train = read("retrieval_train.jsonl")
    sentences = [{"video_id": video_id(r), "caption": r["text"]} for r in train]
    train_ids = list(dict.fromkeys(s["video_id"] for s in sentences))
    (out / "MSRVTT_data.json").write_text(json.dumps({"sentences": sentences}))
    for name, ids in (("MSRVTT_train.9k.csv", train_ids), ("MSRVTT_train.7k.csv", train_ids[: len(train_ids) * 7 // 9])):
        with open(out / name, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["video_id"])
            writer.writerows([i] for i in ids)
    test = [r for r in read("retrieval_test.jsonl") if r["question_type"] == "temporal"]
    with open(out / "MSRVTT_JSFUSION_test.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["key", "vid_key", "video_id", "sentence"])
        for i, row in enumerate(test):
            vid = video_id(row)
            writer.writerow([f"ret{i}", f"msr{vid.removeprefix('video')}", vid, row["text"]])
    shutil.rmtree(staging)
    return {"videos": len(names), "train_videos": len(train_ids), "train_captions": len(sentences),
            "test_videos": len(test)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--pairs", type=int, default=100, help="training scene pairs (two videos each)")
    parser.add_argument("--test-pairs", type=int, default=25, help="test scene pairs (two videos each)")
    parser.add_argument("--num-frames", type=int, default=12)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--backbone", default="open_clip:ViT-B-32")
    parser.add_argument("--random-weights", action="store_true",
                        help="write the backbone's random initialisation to <out>/weights.safetensors and use it")
    parser.add_argument("--adapters", nargs="+", default=["temporal_transformer", "tem_adapter", "xclip"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--epochs", type=int, default=2)
    args = parser.parse_args()
    out = Path(args.out)
    counts = lay_out(out, pairs=args.pairs, test_pairs=args.test_pairs, num_frames=args.num_frames, seed=args.seed)
    pretrained = None
    if args.random_weights:
        import vl_adapters as vla
        from vl_adapters.core.io import save_tensors

        backbone = vla.load_backbone(args.backbone)
        pretrained = str(out / "weights.safetensors")
        save_tensors(pretrained, {k: v.contiguous() for k, v in backbone.model.state_dict().items()})
    config = {"epochs": args.epochs,
              "data": {"dataset": "msrvtt", "root": str(out), "train_split": "train", "eval_split": "test",
                       "num_frames": args.num_frames, "batch_size": 32, "eval_batch_size": 64, "num_workers": 2},
              "model": {"backbone": args.backbone, "pretrained": pretrained, "task": "retrieval"},
              "optim": {"lr": 1e-4},
              "bench": {"seeds": args.seeds, "adapters": args.adapters}}
    (out / "bench.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    print(json.dumps({**counts, "config": str(out / "bench.yaml")}))


if __name__ == "__main__":
    main()
