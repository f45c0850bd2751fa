"""TrainConfig: typed, nested dataclasses loaded from YAML or JSON and overridden by flags.

Unknown keys (at any depth) raise ConfigError before any work starts, naming the key and the known ones.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..core.config import ConfigError

BAD_VIDEO_POLICIES = ("skip", "raise")


@dataclass
class DataConfig:
    dataset: str = "jsonl"  # a name build_dataset knows: msrvtt, msvd, msrvtt_qa, msvd_qa, sutd_trafficqa, ...
    root: str = ""  # the dataset's directory, laid out as its public release ships it
    train_split: str = "train"
    eval_split: str = "test"
    num_frames: int = 12
    sampler: str = "uniform"
    batch_size: int = 32
    eval_batch_size: int = 64
    num_workers: int = 4
    cache: str | None = None  # a directory written by `vl-adapters extract` (per split: <cache>/<split>)
    options: dict = field(default_factory=dict)  # extra keyword arguments for build_dataset


@dataclass
class ModelConfig:
    backbone: str = "tiny"  # open_clip:<name> | hf:<dir> | tiny
    pretrained: str | None = None
    precision: str = "auto"  # auto (bf16 on CUDA) | fp32 | bf16
    adapters: list = field(default_factory=list)  # names or {"type": name, ...} dicts, in any order
    task: Any = "retrieval"  # a name or {"type": name, ...}


@dataclass
class OptimConfig:
    lr: float = 1e-4
    weight_decay: float = 0.01
    betas: tuple[float, float] = (0.9, 0.98)
    eps: float = 1e-6
    warmup_ratio: float = 0.1  # fraction of the optimiser steps spent warming up linearly
    min_lr_ratio: float = 0.0  # the cosine decays to lr * min_lr_ratio
    grad_clip: float = 1.0  # max global grad norm; <= 0 disables clipping
    accumulation: int = 1  # batches per optimiser step


@dataclass
class EvalConfig:
    every_epoch: bool = True
    rerank_k: int = 50  # cross adapters re-rank each text's top-k videos; <= 0 scores every pair
    metric: str = ""  # the metric that picks the best checkpoint; "" = the task's default
    normalise: str = "none"  # none | dsl | qb_norm: reported beside the raw metrics (docs/normalisation.md)
    normalise_options: dict = field(default_factory=dict)  # dsl: temperature; qb_norm: querybank, beta, k, ...


@dataclass
class TrainConfig:
    run_dir: str = "runs/run"
    epochs: int = 5
    seed: int = 0
    max_steps: int = 0  # stop after this many optimiser steps (0 = run every epoch); for smoke runs
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    on_bad_video: str = "skip"  # skip (count, list in the run report) | raise
    progress: bool | None = None  # progress bars; None = only on a TTY outside CI
    log_every: int = 10
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def __post_init__(self) -> None:
        validate(self)

    def to_dict(self) -> dict[str, Any]:
        return _to_plain(dataclasses.asdict(self))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        return _build(cls, data, "")


def validate(cfg: TrainConfig) -> None:
    if cfg.on_bad_video not in BAD_VIDEO_POLICIES:
        raise ConfigError(f"on_bad_video must be one of {BAD_VIDEO_POLICIES}, got {cfg.on_bad_video!r}")
    checks = [("epochs", cfg.epochs >= 1), ("data.batch_size", cfg.data.batch_size >= 1),
              ("data.eval_batch_size", cfg.data.eval_batch_size >= 1), ("data.num_frames", cfg.data.num_frames >= 1),
              ("data.num_workers", cfg.data.num_workers >= 0), ("optim.accumulation", cfg.optim.accumulation >= 1),
              ("optim.lr", cfg.optim.lr > 0), ("optim.warmup_ratio", 0 <= cfg.optim.warmup_ratio <= 1),
              ("max_steps", cfg.max_steps >= 0)]
    for name, ok in checks:
        if not ok:
            raise ConfigError(f"{name}: invalid value {_get(cfg, name)!r}")
    from ..tasks.normalise import parse_options

    parse_options(cfg.eval.normalise, cfg.eval.normalise_options)


def _get(cfg, dotted: str):
    for part in dotted.split("."):
        cfg = getattr(cfg, part)
    return cfg


def _to_plain(value):
    if isinstance(value, dict):
        return {k: _to_plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_to_plain(v) for v in value]
    return value


def _build(cls, data: Any, where: str):
    if not isinstance(data, dict):
        raise ConfigError(f"{where or 'config'}: expected a mapping, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(f"unknown key(s) {[f'{where}{k}' for k in unknown]} in the training config; "
                          f"known keys{' under ' + where.rstrip('.') if where else ''}: {sorted(fields)}")
    hints = typing.get_type_hints(cls)
    values = {}
    for name, value in data.items():
        hint = hints[name]
        if dataclasses.is_dataclass(hint):
            values[name] = _build(hint, value, f"{where}{name}.")
        else:
            values[name] = _coerce(f"{where}{name}", hint, value)
    return cls(**values)


def _coerce(name: str, hint, value):
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if value is None:
        if hint is Any or type(None) in args:
            return None
        raise ConfigError(f"{name}: may not be null")
    if origin is typing.Union or str(origin) == "<class 'types.UnionType'>":
        inner = [a for a in args if a is not type(None)]
        return _coerce(name, inner[0], value) if len(inner) == 1 else value
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{name}: expected a list, got {value!r}")
        return tuple(_coerce(name, args[0], v) for v in value)
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint is float and isinstance(value, str):  # YAML 1.1 reads "3e-4" as a string
        try:
            return float(value)
        except ValueError:
            raise ConfigError(f"{name}: expected a number, got {value!r}") from None
    if hint in (int, float, bool, str) and (not isinstance(value, hint) or (hint is int and isinstance(value, bool))):
        raise ConfigError(f"{name}: expected {hint.__name__}, got {value!r}")
    if hint is list and not isinstance(value, list):
        raise ConfigError(f"{name}: expected a list, got {value!r}")
    if hint is dict and not isinstance(value, dict):
        raise ConfigError(f"{name}: expected a mapping, got {value!r}")
    return value


def load_config(path: str | Path | None = None, overrides: list[str] | dict | None = None) -> TrainConfig:
    """A TrainConfig from a YAML/JSON file (or defaults) with `key.sub=value` overrides applied on top
    (values parsed as YAML: `optim.lr=3e-4`, `model.adapters=[temporal_transformer]`)."""
    import yaml

    data: dict = {}
    if path is not None:
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"{path}: no such config file")
        data = yaml.safe_load(path.read_text()) or {}
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: expected a mapping at the top level")
    items = overrides.items() if isinstance(overrides, dict) else [_split(o) for o in overrides or []]
    for key, value in items:
        if isinstance(value, str) and not isinstance(overrides, dict):
            value = yaml.safe_load(value) if value != "" else ""
        node = data
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {key!r}: {part!r} is not a section")
        node[parts[-1]] = value
    return TrainConfig.from_dict(data)


def _split(override: str) -> tuple[str, str]:
    key, sep, value = override.partition("=")
    if not sep or not key:
        raise ConfigError(f"override {override!r}: expected key.sub=value")
    return key.strip(), value
