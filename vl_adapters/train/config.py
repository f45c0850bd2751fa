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
NONFINITE_POLICIES = ("stop", "skip")


@dataclass
class DataConfig:
    dataset: str = "jsonl"  # a name build_dataset knows: msrvtt, msvd, msrvtt_qa, msvd_qa, sutd_trafficqa, ...
    root: str = ""  # the dataset's directory, laid out as its public release ships it
    train_split: str = "train"
    # The split evaluated after each epoch, which picks the best checkpoint. "auto": the dataset's validation
    # split when it has one apart from its test split (jsonl: root/val.jsonl), else test_split, which the
    # output and report.json then say (its metrics are optimistic: they chose the model).
    eval_split: str = "auto"
    test_split: str = "test"  # evaluated with the best checkpoint at the end when it is not eval_split
    num_frames: int = 12
    sampler: str = "uniform"
    # the frames a training step sees (data/views.py): all (in order) | middle (the middle frame only, also
    # at evaluation) | shuffled (a fresh random order each step; evaluation sees the frames in order)
    frame_view: str = "all"
    batch_size: int = 32
    eval_batch_size: int = 64
    num_workers: int = 4
    cache: str | None = None  # a directory written by `vl-adapters extract` (per split: <cache>/<split>)
    options: dict = field(default_factory=dict)  # extra keyword arguments for build_dataset


@dataclass
class ModelConfig:
    # open_clip:<name> | hf:<id or dir> | tiny:synthetic | tiny. The default is the tiny backbone pretrained on
    # the project's synthetic stills (what the bench freezes); plain `tiny` is the same network untrained
    # (seeded: for tests). Real videos need a real CLIP: open_clip:ViT-B-32 with pretrained: openai.
    backbone: str = "tiny:synthetic"
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
    nonfinite_loss: str = "stop"  # stop (raise naming the step) | skip (drop the batch, count it in the report)
    progress: bool | None = None  # progress bars; None = only on a TTY outside CI
    log_every: int = 10
    tensorboard: bool = False  # also log to TensorBoard under <run_dir>/tensorboard (the tensorboard extra)
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
        raise _error("on_bad_video", f"must be one of {BAD_VIDEO_POLICIES}, got {cfg.on_bad_video!r}")
    from ..data.views import FRAME_VIEWS

    if cfg.data.frame_view not in FRAME_VIEWS:
        raise _error("data.frame_view", f"must be one of {FRAME_VIEWS}, got {cfg.data.frame_view!r}")
    if cfg.nonfinite_loss not in NONFINITE_POLICIES:
        raise _error("nonfinite_loss", f"must be one of {NONFINITE_POLICIES}, got {cfg.nonfinite_loss!r}")
    checks = [("epochs", cfg.epochs >= 1), ("data.batch_size", cfg.data.batch_size >= 1),
              ("data.eval_batch_size", cfg.data.eval_batch_size >= 1), ("data.num_frames", cfg.data.num_frames >= 1),
              ("data.num_workers", cfg.data.num_workers >= 0), ("optim.accumulation", cfg.optim.accumulation >= 1),
              ("optim.lr", cfg.optim.lr > 0), ("optim.warmup_ratio", 0 <= cfg.optim.warmup_ratio <= 1),
              ("max_steps", cfg.max_steps >= 0)]
    for name, ok in checks:
        if not ok:
            raise _error(name, f"invalid value {_get(cfg, name)!r}")
    for i, spec in enumerate(cfg.model.adapters):
        _check_adapter(f"model.adapters.{i}", spec)
    from ..tasks.normalise import parse_options

    parse_options(cfg.eval.normalise, cfg.eval.normalise_options)


def _error(key: str, message: str) -> ConfigError:
    """A ConfigError about `key` (dotted; list items by index), which load_config turns into file:line."""
    error = ConfigError(f"{key}: {message}")
    error.key = key
    return error


def _check_adapter(key: str, spec) -> None:
    """Build the adapter's config now (not its module), so a wrong name or key stops the run before
    any dataset or model is built."""
    from ..core.registry import ADAPTERS

    if isinstance(spec, str):
        name, settings = spec, None
    elif isinstance(spec, dict):
        if "type" not in spec:
            raise _error(key, f"an adapter mapping needs a 'type' key naming a registered adapter, got {sorted(spec)}")
        name, settings = spec["type"], spec
    else:
        raise _error(key, f"expected an adapter name or a mapping with 'type', got {spec!r}")
    try:
        config_class = ADAPTERS.get(name).config_class
    except KeyError as error:
        raise _error(key, str(error)) from None
    if settings is None:
        return
    unknown = sorted(set(settings) - {"type"} - {f.name for f in dataclasses.fields(config_class)})
    try:
        config_class.from_dict(settings)
    except ConfigError as error:
        raise _error(f"{key}.{unknown[0]}" if unknown else key, str(error)) from None


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
        raise _error(where.rstrip(".") or "config", f"expected a mapping, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        error = ConfigError(f"unknown key(s) {[f'{where}{k}' for k in unknown]} in the config; "
                            f"known keys{' under ' + where.rstrip('.') if where else ''}: {sorted(fields)}")
        error.key = f"{where}{unknown[0]}"
        raise error
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
        raise _error(name, "may not be null")
    if origin is typing.Union or str(origin) == "<class 'types.UnionType'>":
        inner = [a for a in args if a is not type(None)]
        return _coerce(name, inner[0], value) if len(inner) == 1 else value
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise _error(name, f"expected a list, got {value!r}")
        return tuple(_coerce(name, args[0], v) for v in value)
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint is float and isinstance(value, str):  # YAML 1.1 reads "3e-4" as a string
        try:
            return float(value)
        except ValueError:
            raise _error(name, f"expected a number, got {value!r}") from None
    if hint in (int, float, bool, str) and (not isinstance(value, hint) or (hint is int and isinstance(value, bool))):
        raise _error(name, f"expected {hint.__name__}, got {value!r}")
    if hint is list and not isinstance(value, list):
        raise _error(name, f"expected a list, got {value!r}")
    if hint is dict and not isinstance(value, dict):
        raise _error(name, f"expected a mapping, got {value!r}")
    return value


def read_config_file(path: str | Path) -> tuple[dict, str]:
    """(the mapping, the text) of a YAML/JSON config file; a missing file or bad YAML raises one line."""
    import yaml

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such config file")
    text = path.read_text()
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        raise ConfigError(f"{where}: not valid YAML ({getattr(error, 'problem', None) or error})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}:1: expected a mapping at the top level")
    return data, text


def load_config(path: str | Path | None = None, overrides: list[str] | dict | None = None, *,
                sections: tuple[str, ...] = ()) -> TrainConfig:
    """A TrainConfig from a YAML/JSON file (or defaults) with `key.sub=value` overrides applied on top
    (values parsed as YAML: `optim.lr=3e-4`, `model.adapters=[temporal_transformer]`). A ConfigError
    about a key that the file sets names the file and the line: `cfg.yaml:7: model.adapters.0: ...`.
    `sections`: top-level keys that another command reads from the same file (the bench's `bench:`)."""
    import yaml

    data: dict = {}
    text = ""
    if path is not None:
        path = Path(path)
        data, text = read_config_file(path)
        data = {k: v for k, v in data.items() if k not in sections}
    items = overrides.items() if isinstance(overrides, dict) else [_split(o) for o in overrides or []]
    overridden = set()
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
        overridden.add(key)
    try:
        return TrainConfig.from_dict(data)
    except ConfigError as error:
        key = getattr(error, "key", None)
        if path is None or key is None or any(key == o or key.startswith(o + ".") for o in overridden):
            raise
        line = _line_of(text, key.split("."))
        raise ConfigError(f"{path}{f':{line}' if line else ''}: {error}") from None


def build_section(cls, data: Any, where: str, *, path: str | Path | None = None, text: str = ""):
    """A typed dataclass section (unknown keys and wrong types raise ConfigError, like the training
    config's); with the file's `path` and `text`, the error names its line."""
    try:
        return _build(cls, data, f"{where}." if where else "")
    except ConfigError as error:
        key = getattr(error, "key", None)
        if path is None or key is None:
            raise
        line = _line_of(text, key.split("."))
        raise ConfigError(f"{path}{f':{line}' if line else ''}: {error}") from None


def _line_of(text: str, keys: list[str]) -> int | None:
    """The 1-based line where the YAML `text` sets the dotted key path (the deepest part it has)."""
    import yaml

    try:
        node = yaml.compose(text)
    except yaml.YAMLError:
        return None
    line = None
    for key in keys:
        if isinstance(node, yaml.MappingNode):
            match = [(k, v) for k, v in node.value if getattr(k, "value", None) == key]
            if not match:
                break
            line, node = match[0][0].start_mark.line + 1, match[0][1]
        elif isinstance(node, yaml.SequenceNode) and key.isdigit() and int(key) < len(node.value):
            node = node.value[int(key)]
            line = node.start_mark.line + 1
        else:
            break
    return line


def _split(override: str) -> tuple[str, str]:
    key, sep, value = override.partition("=")
    if not sep or not key:
        raise ConfigError(f"override {override!r}: expected key.sub=value")
    return key.strip(), value
