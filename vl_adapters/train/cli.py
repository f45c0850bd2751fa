"""`vl-adapters train`, `vl-adapters eval` and `vl-adapters extract`."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

TRAIN_EXAMPLES = """\
examples:
  vl-adapters train --config examples/configs/msrvtt.yaml
  vl-adapters train --config examples/configs/msrvtt.yaml --root /data/msrvtt --cache /data/msrvtt_cache \\
      --epochs 5 --set optim.lr=3e-4 --set data.batch_size=64
  vl-adapters train --run-dir runs/msrvtt --resume           # continue an interrupted run exactly
  vl-adapters train --config examples/configs/msrvtt.yaml --overwrite   # replace the run in its run_dir
  torchrun --nproc-per-node 4 -m vl_adapters.cli train --config examples/configs/msrvtt.yaml

Every key of the YAML file can be overridden with --set section.key=value (values are read as YAML);
the common ones also have their own flag. Unknown keys stop the run before any work starts.
The run directory gets config.yaml (the resolved config), metrics.jsonl, report.json (skipped videos,
counts), curves.png (loss and metrics) and checkpoints/{last,best}; one line per epoch goes to stdout.
See docs/training.md.
"""

EVAL_EXAMPLES = """\
examples:
  vl-adapters eval --run runs/msrvtt                       # best checkpoint, the run's test split
  vl-adapters eval --run runs/msrvtt --checkpoint last --rerank-k 0
  vl-adapters eval --adapters runs/msrvtt/checkpoints/best --dataset msrvtt --root /data/msrvtt --split test
  vl-adapters eval --run runs/msrvtt --normalise qb_norm --querybank train   # + qb_norm/* beside the raw metrics
"""

EXTRACT_EXAMPLES = """\
examples:
  vl-adapters extract --dataset msrvtt --root /data/msrvtt --split train \\
      --backbone open_clip:ViT-B-32 --pretrained openai --num-frames 12 --out /data/msrvtt_cache/train
  (then train with data.cache: /data/msrvtt_cache; the cache holds one directory per split)

  torchrun --nproc-per-node 4 -m vl_adapters.cli extract ... --num-workers 8   # 4 GPUs, 8 decoders each
  (each rank decodes and encodes its share of the videos; rank 0 writes the one cache)

Run it again with the same arguments to resume an interrupted extraction. A run refuses a cache whose
backbone, weights, sampler, frame count or transform differ from its own, and names what differs.
The split's texts (captions; questions or candidates as the task head formats them, through the
--adapters' templates when given) are encoded too, into <out>/text.
"""

FLAG_KEYS = {  # flag dest -> config key
    "run_dir": "run_dir", "epochs": "epochs", "seed": "seed", "max_steps": "max_steps", "device": "device",
    "on_bad_video": "on_bad_video", "dataset": "data.dataset", "root": "data.root", "cache": "data.cache",
    "batch_size": "data.batch_size", "num_workers": "data.num_workers", "num_frames": "data.num_frames",
    "backbone": "model.backbone", "pretrained": "model.pretrained", "lr": "optim.lr",
    "accumulation": "optim.accumulation", "rerank_k": "eval.rerank_k", "tensorboard": "tensorboard",
}


def _formatter(prog):
    return argparse.RawDescriptionHelpFormatter(prog, max_help_position=34)


def register(sub) -> None:
    train = sub.add_parser("train", help="train adapters on a dataset (from a YAML config and/or flags)",
                           description="Train adapters on a frozen backbone. Flags override the config file.",
                           epilog=TRAIN_EXAMPLES, formatter_class=_formatter)
    train.add_argument("--config", help="YAML (or JSON) training config, e.g. examples/configs/msrvtt.yaml")
    train.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                       help="override any config key, e.g. --set optim.warmup_ratio=0.05 (repeatable)")
    again = train.add_mutually_exclusive_group()
    again.add_argument("--resume", nargs="?", const=True, default=False, metavar="CHECKPOINT",
                       help="continue from <run-dir>/checkpoints/last (or the given checkpoint directory)")
    again.add_argument("--overwrite", action="store_true",
                       help="start afresh in a run directory that already holds a run: its checkpoints, "
                            "metrics.jsonl, report.json and config files are removed first (without --resume or "
                            "--overwrite such a directory is refused)")
    train.add_argument("--run-dir", help="where checkpoints, logs and the report go")
    train.add_argument("--dataset", help="a registered dataset (`vl-adapters list` shows them: msrvtt, didemo, "
                                         "activitynet, lsmdc, nextqa, jsonl, ...)")
    train.add_argument("--root", help="the dataset's directory")
    train.add_argument("--cache", help="feature cache directory from `vl-adapters extract` (one subdir per split)")
    train.add_argument("--backbone", help="open_clip:<name> (real videos, with --pretrained) | hf:<id or dir> | "
                                          "tiny:synthetic (default: pretrained on synthetic stills) | tiny (untrained)")
    train.add_argument("--pretrained", help="open_clip tag or local weights file")
    train.add_argument("--adapters", nargs="+", metavar="NAME", help="adapter names (configs: use the YAML file)")
    train.add_argument("--task", help="retrieval | multiple_choice | open_qa")
    train.add_argument("--epochs", type=int)
    train.add_argument("--lr", type=float)
    train.add_argument("--batch-size", type=int)
    train.add_argument("--accumulation", type=int, help="batches per optimiser step")
    train.add_argument("--num-frames", type=int)
    train.add_argument("--num-workers", type=int, help="DataLoader processes decoding videos")
    train.add_argument("--max-steps", type=int, help="stop after this many optimiser steps (resumable)")
    train.add_argument("--seed", type=int)
    train.add_argument("--device", help="auto | cpu | cuda | cuda:N")
    train.add_argument("--rerank-k", type=int, help="cross adapters re-rank each text's top-k; <= 0 = all")
    train.add_argument("--on-bad-video", choices=["skip", "raise"],
                       help="skip (default: count it and list it in report.json) or raise")
    train.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                       help="progress bars (default: only on a terminal outside CI)")
    train.add_argument("--tensorboard", action=argparse.BooleanOptionalAction, default=None,
                       help="also log to TensorBoard under <run-dir>/tensorboard (needs the tensorboard extra)")
    train.set_defaults(func=cmd_train)

    ev = sub.add_parser("eval", help="evaluate trained adapters (a run directory or an adapters directory)",
                        description="Evaluate trained adapters and print the metrics as JSON.",
                        epilog=EVAL_EXAMPLES, formatter_class=_formatter)
    source = ev.add_mutually_exclusive_group(required=True)
    source.add_argument("--run", help="a training run directory (uses its config.yaml)")
    source.add_argument("--adapters", help="a directory with adapters.safetensors + adapters.json")
    ev.add_argument("--checkpoint", default="best", help="best | last (with --run; default best)")
    ev.add_argument("--dataset", help="dataset name (default: the run's)")
    ev.add_argument("--root", help="dataset directory (default: the run's)")
    ev.add_argument("--split", help="split to evaluate (default: the run's data.test_split, test)")
    ev.add_argument("--cache", help="feature cache directory (one subdir per split)")
    ev.add_argument("--num-frames", type=int)
    ev.add_argument("--batch-size", type=int, default=None)
    ev.add_argument("--num-workers", type=int, default=None, help="DataLoader processes (default: the run's)")
    ev.add_argument("--rerank-k", type=int, help="cross adapters re-rank each text's top-k; <= 0 = all")
    ev.add_argument("--pretrained", help="backbone weights (default: the run's model.pretrained)")
    ev.add_argument("--device", default="auto")
    ev.add_argument("--normalise", choices=("none", "dsl", "qb_norm"),
                    help="also report DSL or QB-Norm metrics (keys dsl/*, qb_norm/*) beside the raw ones "
                         "(default: the run's eval.normalise)")
    ev.add_argument("--querybank", help='qb_norm: "train" (the training split\'s captions) or a .txt/.json/.jsonl file')
    ev.add_argument("--output", help="also write the metrics to this JSON file (skipped videos go beside it, "
                                     "in <output>.skipped.json)")
    ev.add_argument("--allow-backbone-mismatch", action="store_true",
                    help="evaluate even if the backbone weights differ from the ones the adapters were trained on")
    ev.set_defaults(func=cmd_eval)

    ex = sub.add_parser("extract", help="run the frozen backbone once over a dataset and cache its features",
                        description="Write fp16 frame embeddings and patch tokens of every video of a split "
                                    "(memory-mapped .npy arrays + index.json with a fingerprint).",
                        epilog=EXTRACT_EXAMPLES, formatter_class=_formatter)
    ex.add_argument("--dataset", required=True, help="dataset name (see `vl-adapters train --help`)")
    ex.add_argument("--root", required=True, help="the dataset's directory")
    ex.add_argument("--split", default="train")
    ex.add_argument("--backbone", required=True, help="open_clip:<name> (real videos, with --pretrained) | "
                                                       "hf:<id or dir> | tiny:synthetic | tiny (untrained)")
    ex.add_argument("--pretrained", help="open_clip tag or local weights file")
    ex.add_argument("--out", required=True, help="cache directory for this split, e.g. <cache>/train")
    ex.add_argument("--num-frames", type=int, default=12)
    ex.add_argument("--sampler", default="uniform", help="frame sampler (deterministic/eval mode is used)")
    ex.add_argument("--batch-size", type=int, default=16, help="videos per backbone call")
    ex.add_argument("--no-patch-tokens", action="store_true", help="store frame embeddings only (much smaller)")
    ex.add_argument("--on-bad-video", choices=["skip", "raise"], default="skip")
    ex.add_argument("--device", default=None)
    ex.add_argument("--num-workers", type=int, default=4, help="DataLoader processes decoding videos (per rank)")
    ex.add_argument("--adapters", nargs="+", metavar="NAME", default=[],
                    help="the adapters the run will use: their templates format multiple-choice candidates")
    ex.add_argument("--compile", nargs="?", const="default", default=None, metavar="MODE",
                    help="torch.compile the vision tower (optionally a mode, e.g. max-autotune)")
    ex.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                    help="extra dataset option (YAML value), repeatable")
    ex.set_defaults(func=cmd_extract)


def _overrides(args) -> list[str]:
    out = []
    for dest, key in FLAG_KEYS.items():
        value = getattr(args, dest, None)
        if value is not None:
            out.append(f"{key}={json.dumps(value)}")
    if getattr(args, "adapters", None):
        out.append(f"model.adapters={json.dumps(args.adapters)}")
    if getattr(args, "task", None):
        out.append(f"model.task={json.dumps(args.task)}")
    if getattr(args, "progress", None) is not None:
        out.append(f"progress={json.dumps(args.progress)}")
    return out + list(args.overrides)


def cmd_train(args) -> int:
    from .config import load_config
    from .data import dropped_rows
    from .trainer import train

    config_path = args.config
    if config_path is None and args.resume and args.run_dir and (Path(args.run_dir) / "config.yaml").exists():
        config_path = Path(args.run_dir) / "config.yaml"
    config = load_config(config_path, _overrides(args))
    check_dataset(config.data.dataset, config.data.root, "data.root (--root)")
    trainer = train(config, resume=args.resume, overwrite=args.overwrite)
    dropped = {"count": 0, "rows": []}
    for dataset in (trainer.train_dataset, trainer.eval_dataset, trainer.test_dataset):
        found = dropped_rows(dataset) if dataset is not None else {"count": 0, "rows": []}
        dropped = {"count": dropped["count"] + found["count"], "rows": dropped["rows"] + found["rows"]}
    report_skipped("train", trainer.skipped, dropped, trainer.run_dir / "report.json", write=False)
    if trainer.selection_note:
        print(f"vl-adapters train: note: {trainer.selection_note}", file=sys.stderr)
    summary = {"run_dir": str(trainer.run_dir), "step": trainer.state["step"],
               "best": {trainer.state["best_metric"]: trainer.state["best_value"]}, "selected_on": trainer.eval_split}
    if trainer.test_result is not None:
        summary["test"] = {trainer.test_result["split"]: trainer.test_result["metrics"]}
    print(json.dumps(summary))
    return 0


def _querybank(normalise: str, options: dict, dataset_name: str, root: str, d, num_frames: int) -> list[str] | None:
    from ..data import build_dataset
    from ..tasks.normalise import parse_options, querybank_texts

    bank = parse_options(normalise, options)
    if normalise != "qb_norm":
        return None
    train = (build_dataset(dataset_name, root, d.train_split, num_frames=num_frames, sampler=d.sampler, train=False,
                           **d.options) if bank.querybank == "train" else None)
    return querybank_texts(bank.querybank, train_dataset=train, size=bank.querybank_size)


def check_dataset(name: str, root: str | Path, what: str) -> None:
    """A known dataset name and an existing root directory, said in one line before any work."""
    from ..core.config import ConfigError
    from ..data import DATASETS

    if name not in DATASETS:
        import difflib

        close = difflib.get_close_matches(name, list(DATASETS), n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ConfigError(f"unknown dataset {name!r}.{hint} Known: {', '.join(sorted(DATASETS))}")
    if not str(root):
        raise ConfigError(f"{what} is not set: give the directory that holds the {name} dataset")
    if not Path(root).is_dir():
        raise FileNotFoundError(f"{what} {str(root)!r}: no such directory (expected the {name} dataset there)")


def report_skipped(command: str, skipped: list[dict], dropped: dict, path: Path | None, *, write: bool = True) -> None:
    """One line per kind of thing left out (videos by reason, annotation rows dropped in lenient mode);
    the lists go to `path` (written here when `write`)."""
    from ..core.io import save_json
    from .data import skipped_report

    videos = skipped_report(skipped)
    if videos["count"]:
        reasons = ", ".join(f"{len(ids)} {reason}" for reason, ids in videos["by_reason"].items())
        distinct = sum(len(ids) for ids in videos["by_reason"].values())
        where = f"; listed in {path}" if path is not None else ""
        print(f"vl-adapters {command}: skipped {distinct} video(s) ({reasons}){where}", file=sys.stderr)
    if dropped["count"]:
        where = f"; listed in {path}" if path is not None else ""
        print(f"vl-adapters {command}: dropped {dropped['count']} malformed annotation row(s) (the first: "
              f"{dropped['rows'][0]}){where}", file=sys.stderr)
    if write and path is not None and (videos["count"] or dropped["count"]):
        save_json(path, {"skipped_videos": videos, "dropped_annotation_rows": dropped})


def cmd_eval(args) -> int:
    from .. import load_adapters
    from ..core.config import ConfigError
    from ..data import build_dataset
    from ..data.cache import FeatureCache, cache_fingerprint
    from .config import load_config
    from .data import CachedDataset, dropped_rows
    from .evaluate import evaluate
    from .trainer import resolve_device

    device = resolve_device(args.device)
    if args.run:
        config = load_config(Path(args.run) / "config.yaml")
        directory = Path(args.run) / "checkpoints" / args.checkpoint
    else:
        config = load_config()
        directory = Path(args.adapters)
    d = config.data
    dataset_name, root = args.dataset or d.dataset, args.root or d.root
    split, num_frames = args.split or d.test_split, args.num_frames or d.num_frames
    check_dataset(dataset_name, root, "--root")
    normalise = args.normalise or config.eval.normalise
    normalise_options = dict(config.eval.normalise_options) if normalise == config.eval.normalise else {}
    if args.querybank:
        normalise_options["querybank"] = args.querybank
    try:  # the querybank is read before any model is loaded: a wrong option stops here
        querybank = _querybank(normalise, normalise_options, dataset_name, root, d, num_frames)
    except (ConfigError, FileNotFoundError, ValueError) as error:
        print(f"vl-adapters eval: {error}", file=sys.stderr)
        return 2
    model = load_adapters(directory, pretrained=args.pretrained or config.model.pretrained, device=device,
                          allow_backbone_mismatch=args.allow_backbone_mismatch)
    options = {"size": model.backbone.dims.image_size, **d.options}
    dataset = build_dataset(dataset_name, root, split, num_frames=num_frames, sampler=d.sampler, train=False,
                            **options)
    dropped = dropped_rows(dataset)
    cache_root = args.cache or d.cache
    if cache_root:
        cache = FeatureCache(Path(cache_root) / split)
        cache.check(cache_fingerprint(model.backbone, sampler=d.sampler, num_frames=num_frames,
                                      patch_tokens=cache.fingerprint.get("patch_tokens", True), dataset=dataset))
        if model.uses_backbone_adapters:
            print("vl-adapters eval: the feature cache is refused (backbone adapters change the backbone's "
                  "forward); evaluating from videos", file=sys.stderr)
        else:
            dataset = CachedDataset(dataset, cache)
            model.text_store.open(cache.text_directory, model.backbone)
    rerank = args.rerank_k if args.rerank_k is not None else config.eval.rerank_k
    workers = args.num_workers if args.num_workers is not None else d.num_workers
    skipped: list[dict] = []
    metrics = evaluate(model, dataset, batch_size=args.batch_size or d.eval_batch_size, num_workers=workers,
                       rerank_k=rerank, autocast=device.type == "cuda", normalise=normalise,
                       normalise_options=normalise_options, querybank=querybank, skipped=skipped)
    text = json.dumps(metrics, indent=2)
    print(text)
    if args.output:
        from ..core.io import save_text

        save_text(args.output, text + "\n")
    beside = Path(args.output).with_suffix(".skipped.json") if args.output else None
    report_skipped("eval", skipped, dropped, beside)
    return 0


def cmd_extract(args) -> int:
    import yaml

    from .. import load_backbone, wrap
    from ..core import distributed
    from ..core.io import load_json
    from ..data import build_dataset
    from ..data.cache import INDEX_FILE, extract_features
    from ..data.text_cache import dataset_texts
    from .data import dropped_rows
    from .trainer import init_distributed, resolve_device

    options: dict = {}
    for item in args.option:
        key, _, value = item.partition("=")
        options[key] = yaml.safe_load(value)
    check_dataset(args.dataset, args.root, "--root")
    init_distributed()  # under torchrun: one rank per GPU, each with its share of the videos
    device = resolve_device(args.device or "auto")
    backbone = load_backbone(args.backbone, pretrained=args.pretrained, device=device, compile=args.compile)
    options = {"size": backbone.dims.image_size, **options}  # decode straight to the backbone's input size
    dataset = build_dataset(args.dataset, args.root, args.split, num_frames=args.num_frames, sampler=args.sampler,
                            train=False, on_bad_video=args.on_bad_video, **options)
    texts = None
    if args.adapters:
        model = wrap(backbone, args.adapters, task=dataset.task)
        if model.uses_backbone_adapters:
            print("vl-adapters extract: --adapters lists backbone adapters, which change the backbone's forward: "
                  "a feature cache cannot serve them", file=sys.stderr)
            return 2
        texts = dataset_texts(dataset, model)
    out = extract_features(dataset, backbone, args.out, sampler=args.sampler, num_frames=args.num_frames,
                           batch_size=args.batch_size, patch_tokens=not args.no_patch_tokens,
                           on_bad_video=args.on_bad_video, num_workers=args.num_workers, texts=texts)
    if distributed.rank() == 0:
        bad = load_json(Path(out) / INDEX_FILE).get("bad_videos", {})
        print(f"feature cache written to {out}")
        report_skipped("extract", [{"video_id": v, "reason": r} for v, r in bad.items()], dropped_rows(dataset),
                       Path(out) / "skipped.json")
    if distributed.is_distributed():
        import torch.distributed as dist

        dist.destroy_process_group()
    return 0
