"""Trained adapters shared the way peft shares them: a folder (or a Hugging Face Hub repo) holding
adapters.safetensors, adapters.json and a README.md model card; the frozen backbone is loaded from its
own public source.

  model.save_pretrained(dir)             the folder (see save_pretrained)
  vla.from_pretrained(dir or "user/name") the model back, backbone checked by fingerprint, in eval mode
  model.push_to_hub("user/name")         the same folder, uploaded with huggingface_hub (the `hf` extra)

Nothing is unpickled: a folder or repo that holds pickle files is refused before anything is read.
"""

from __future__ import annotations

import json
import re
import tempfile
from pathlib import Path

from .io import load_json, readable_directory, save_json, save_tensors, save_text
from .optional import require

CARD_FILE = "README.md"
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt", ".joblib")
REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
# Keys of a run's config that are paths on the machine it ran on: never written into a shared card.
LOCAL_KEYS = (("run_dir",), ("data", "root"), ("data", "cache"))
TASK_TAGS = {"retrieval": "video-text-retrieval", "multiple_choice": "video-question-answering",
             "open_qa": "video-question-answering"}


class PickleRefusedError(ValueError):
    """A folder or repo to load adapters from holds pickle files, which are never loaded."""


# ---- save -----------------------------------------------------------------------------------------
def save_pretrained(model, directory: str | Path, *, run: str | Path | None = None, name: str | None = None) -> Path:
    """Write `model`'s adapters to `directory`: adapters.safetensors (adapter and task-head weights),
    adapters.json (what save_adapters records: backbone spec, source and weight fingerprint, dims, the
    resolved adapter and task configs, library version; plus the training record) and README.md, a
    model card naming the backbone, adapters, dataset, training config and metrics.

    The training record comes from `run` (a training run directory: its config and evaluation
    metrics) or else from the model (one loaded by from_pretrained keeps the record it was saved with,
    and one loaded from a run directory has that run's). `name` is how the card's usage lines refer to
    the model (push_to_hub passes the repo id)."""
    from .model import ADAPTERS_FILE, CONFIG_FILE

    directory = Path(directory)
    record = run_record(run) if run is not None else getattr(model, "training_record", None)
    described = model.describe()
    if record:
        described["training"] = record
    save_tensors(directory / ADAPTERS_FILE, model.adapter_state_dict())
    save_json(directory / CONFIG_FILE, described)
    save_text(directory / CARD_FILE, model_card(model, described, name=name or str(directory)))
    return directory


def push_to_hub(model, repo_id: str, *, run: str | Path | None = None, private: bool | None = None,
                token: str | None = None, commit_message: str = "Upload vl-adapters adapters"):
    """save_pretrained into a temporary folder and upload it to the Hub repo `repo_id` (created if
    missing) with huggingface_hub's `HfApi.upload_folder`; returns what upload_folder returns."""
    hub = require("huggingface_hub", extra="hf", purpose="push_to_hub")
    if not REPO_ID.match(repo_id):
        raise ValueError(f"push_to_hub: {repo_id!r} is not a Hugging Face repo id (expected user/name)")
    api = hub.HfApi(token=token)
    with tempfile.TemporaryDirectory(prefix="vl-adapters-push-") as folder:
        save_pretrained(model, folder, run=run, name=repo_id)
        api.create_repo(repo_id, private=private, exist_ok=True)
        return api.upload_folder(repo_id=repo_id, folder_path=folder, commit_message=commit_message)


# ---- load -----------------------------------------------------------------------------------------
def from_pretrained(source: str | Path, backbone=None, *, revision: str | None = None,
                    allow_backbone_mismatch: bool = False, **backbone_kwargs):
    """The model saved in `source`, in eval mode: a save_pretrained folder, a training checkpoint
    (<run>/checkpoints/best), a training run directory (its best checkpoint, else its last) or a
    Hugging Face Hub repo id ("user/name", downloaded into or read from the huggingface_hub cache;
    HF_HUB_OFFLINE=1 reads the cache only).

    Without `backbone`, the backbone recorded in adapters.json is loaded from its recorded source
    (`pretrained=` and other keywords go to load_backbone); its weight fingerprint must match the
    recorded one (see load_adapters). A folder holding pickle files is refused (PickleRefusedError)."""
    from .model import CONFIG_FILE, load_adapters

    directory, run = resolve(source, revision=revision)
    refuse_pickles(directory, str(source))
    model = load_adapters(directory, backbone, allow_backbone_mismatch=allow_backbone_mismatch, **backbone_kwargs)
    saved = load_json(readable_directory(directory, CONFIG_FILE) / CONFIG_FILE)
    record = saved.get("training")
    if record is None and run is not None:
        state = directory / "state.json"
        record = run_record(run, step=load_json(state)["step"] if state.exists() else None)
    model.training_record = record
    return model


def resolve(source: str | Path, *, revision: str | None = None) -> tuple[Path, Path | None]:
    """(the folder holding adapters.json, the run directory it belongs to or None) for `source`."""
    from .model import CONFIG_FILE

    path = Path(source)
    if path.is_dir():
        if (readable_directory(path, CONFIG_FILE) / CONFIG_FILE).exists():
            run = path.parent.parent if path.parent.name == "checkpoints" else None
            return path, run if run is not None and (run / "config.json").exists() else None
        if (path / "checkpoints").is_dir():
            from ..train.checkpoint import find_checkpoint

            for name in ("best", "last"):
                try:
                    return find_checkpoint(path / "checkpoints" / name), path
                except FileNotFoundError:
                    continue
            raise FileNotFoundError(f"{path}: a training run without a checkpoint yet (checkpoints/best or last)")
        raise FileNotFoundError(f"{path}: not a vl-adapters model (no {CONFIG_FILE}), checkpoint or training run "
                                "directory")
    if not REPO_ID.match(str(source)):
        raise FileNotFoundError(f"{source}: no such directory, and not a Hugging Face repo id (user/name)")
    return _download(str(source), revision), None


def _download(repo_id: str, revision: str | None) -> Path:
    hub = require("huggingface_hub", extra="hf", purpose=f"loading {repo_id!r} from the Hugging Face Hub")
    try:
        return Path(hub.snapshot_download(repo_id, revision=revision))
    except Exception as error:  # offline with no cached copy, unknown repo, no access, network down
        first = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise FileNotFoundError(f"{repo_id}: no such directory here, and the Hugging Face Hub repo could not be "
                                f"read ({type(error).__name__}: {first})") from error


def refuse_pickles(directory: str | Path, name: str | None = None) -> None:
    """Raise PickleRefusedError when `directory` (recursively) holds a file with a pickle suffix."""
    directory = Path(directory)
    found = sorted(str(p.relative_to(directory)) for p in directory.rglob("*")
                   if p.suffix.lower() in PICKLE_SUFFIXES and p.is_file())
    if found:
        shown = found[:5] + (["..."] if len(found) > 5 else [])
        raise PickleRefusedError(f"{name or directory}: holds pickle file(s) {shown}; the library never unpickles "
                                 "(loading a pickle can run any code), so it loads adapters only from folders of "
                                 "safetensors + JSON: remove those files or use another source")


# ---- the training record and the card -------------------------------------------------------------
def run_record(run: str | Path, *, step: int | None = None) -> dict:
    """What a model card says about training, from a run directory: the dataset, the resolved config
    (without the paths of the machine it ran on), the steps, and the evaluation metrics at `step`
    (default: the run's last evaluation)."""
    run = Path(run)
    config = load_json(run / "config.json")
    for path in LOCAL_KEYS:
        node = config
        for key in path[:-1]:
            node = node.get(key, {})
        node.pop(path[-1], None)
    evals = []
    log = run / "metrics.jsonl"
    if log.exists():
        evals = [r for r in map(json.loads, log.read_text().splitlines()) if r.get("kind") == "eval"]
    if step is not None:
        evals = [r for r in evals if r["step"] == step]
    metrics = {k: v for k, v in evals[-1].items() if k not in ("kind", "time", "step", "epoch")} if evals else {}
    data = config.get("data", {})
    report = load_json(run / "report.json") if (run / "report.json").exists() else {}
    return {
        "dataset": {"name": data.get("dataset"), "train_split": data.get("train_split"),
                    "eval_split": data.get("eval_split"), "num_frames": data.get("num_frames"),
                    "sampler": data.get("sampler")},
        "config": config,
        "steps": evals[-1]["step"] if evals else report.get("step"),
        "metrics": metrics,
    }


def model_card(model, described: dict, *, name: str) -> str:
    """README.md for the folder: front matter the Hub reads, then what the adapters need and did."""
    backbone = described["backbone"]
    task = described["task"]
    adapters = [(a.name, a.stage, a.config.to_dict()) for a in model.adapters]
    record = described.get("training") or {}
    params = sum(t.numel() for t in model.adapter_state_dict().values())
    tags = ["vl-adapters", TASK_TAGS.get(task["type"], task["type"]), *[n for n, _, _ in adapters]]
    front = ["---", "library_name: vl-adapters", "tags:", *[f"- {t}" for t in dict.fromkeys(tags)]]
    spec = backbone["spec"]
    if spec.startswith("hf:") and REPO_ID.match(spec[3:]):
        front.append(f"base_model: {spec[3:]}")
    front.append("---")
    title = " + ".join(n for n, _, _ in adapters) or "no adapters"
    lines = [*front, "", f"# {title} on `{spec}` ({task['type']})", "",
             f"Adapters for a frozen `{spec}` backbone, made with vl-adapters {described['library_version']}. "
             f"This folder holds only the adapters and the task head ({params:,} parameters); the backbone "
             "is loaded from its own source and checked against the weight fingerprint below.", "",
             "## Backbone", "", "| | |", "|---|---|", f"| spec | `{spec}` |",
             f"| pretrained | `{backbone.get('pretrained')}` |", f"| weight fingerprint | `{backbone.get('fingerprint')}` |",
             *[f"| {k} | {v} |" for k, v in backbone["dims"].items()], "",
             "## Adapters", "", "In the order they run.", "", "| adapter | stage | config |", "|---|---|---|",
             *[f"| {n} | {stage} | `{json.dumps(cfg, sort_keys=True)}` |" for n, stage, cfg in adapters], "",
             "## Task", "", f"`{json.dumps(task, sort_keys=True)}`", ""]
    dataset = record.get("dataset") or {}
    lines += ["## Dataset", ""]
    lines += [f"- {k}: {v}" for k, v in dataset.items() if v is not None] or ["Not recorded."]
    lines += ["", "## Training", ""]
    if record.get("config"):
        import yaml

        lines += [f"{record.get('steps')} optimiser steps. The resolved training config:", "", "```yaml",
                  yaml.safe_dump(record["config"], sort_keys=False).rstrip(), "```"]
    else:
        lines.append("Not recorded.")
    metrics = record.get("metrics") or {}
    lines += ["", "## Metrics", ""]
    if metrics:
        split = dataset.get("eval_split")
        lines += [f"On the {split!r} split at step {record.get('steps')}." if split else "", "",
                  "| metric | value |", "|---|---|", *[f"| {k} | {_number(v)} |" for k, v in metrics.items()]]
    else:
        lines.append("Not recorded.")
    lines += ["", "## Use", "", "```python", "import vl_adapters as vla", f"model = vla.from_pretrained({name!r})"]
    if task["type"] == "retrieval":
        lines += ["scores = model.similarity([\"a caption\"], frames)   # frames: uint8 [B, T, 3, H, W], 0-255",
                  "```", "", "```bash",
                  f"vl-adapters search --model {name} --videos my_videos/ \"a dog jumps into a pool\""]
    else:
        candidates = " --candidates \"an answer\" \"another answer\"" if task["type"] == "multiple_choice" else ""
        lines += ["```", "", "```bash",
                  f"vl-adapters answer --model {name} clip.mp4 --question \"what happens?\"{candidates}"]
    return "\n".join([*lines, "```", ""])


def _number(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)
