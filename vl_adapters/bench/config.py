"""The bench's own settings: the `bench:` section of a training config file, or the command's options.

Everything else about a job (dataset, root, splits, backbone and weights, frames, sampler, optimiser,
epochs) is the training config that `vl-adapters train` reads; the bench varies only what a grid needs:
the rows (adapters), the seeds and the task heads.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from vl_adapters.core.config import ConfigError

LAUNCHERS = ("local", "slurm")


class BenchError(ValueError):
    """A grid that cannot run as given: a split with no readable video, one too small to time, ..."""

NORMALISERS = ("dsl", "qb_norm")


@dataclass
class BenchSettings:
    """adapters      the rows: registered names, `a+b` for a combination; [] = the named methods (grid.py).
                     The baselines and controls always run.
    all_adapters  add every other registered adapter as a row of its own
    seeds         training seeds; every number is the mean ± std over them
    tasks         task head -> overrides of the training config for that head, e.g.
                  {multiple_choice: {data: {options: {file: "mc_{split}.jsonl"}}}}; {} = the config's own task
    test_split    the split the table reports (training uses data.train_split; model selection and the
                  choice of the shuffled-training control use data.eval_split when it is a validation split)
    controls      the single-frame and shuffled-training controls
    control_metric  "<task>/<metric>" on the validation split that picks the shuffled-training control's
                  row ("" = the first task's default metric)
    report        "<task>/<metric>" columns of the main table ([] = each task's headline metrics)
    shuffle_test  every number again with each test video's frames in one fixed random order
    normalise     post-processing reported in its own columns beside the raw retrieval numbers
    querybank_size  QB-Norm's querybank: this many training captions (its beta is chosen on validation)
    cache         where the frozen features go ("" = <out>/cache): one feature cache per backbone, weights,
                  frames and sampler, shared by every row and seed
    workers       jobs at once on the CPU (one thread each: results do not depend on it)
    devices       CUDA devices to spread jobs over, one job per device at a time ([] = CPU workers)
    nproc_per_job  >1: each job runs data-parallel under torchrun on that many devices
    launcher      local | slurm (jobs submitted through submitit; `slurm` holds its parameters, e.g.
                  {partition: gpu, timeout_min: 240, gpus_per_node: 1}; {cluster: local} runs them locally)
    """

    adapters: list = field(default_factory=list)
    all_adapters: bool = False
    seeds: list = field(default_factory=lambda: [0, 1, 2])
    tasks: dict = field(default_factory=dict)
    test_split: str = "test"
    controls: bool = True
    control_metric: str = ""
    report: list = field(default_factory=list)
    shuffle_test: bool = True
    normalise: list = field(default_factory=lambda: list(NORMALISERS))
    querybank_size: int = 128
    cache: str = ""
    workers: int = 1
    devices: list = field(default_factory=list)
    nproc_per_job: int = 1
    launcher: str = "local"
    slurm: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        def bad(key: str, message: str) -> ConfigError:
            error = ConfigError(f"bench.{key}: {message}")
            error.key = f"bench.{key}"
            return error

        if not self.seeds or not all(isinstance(s, int) and not isinstance(s, bool) for s in self.seeds):
            raise bad("seeds", f"expected a non-empty list of integers, got {self.seeds!r}")
        if not all(isinstance(a, str) and a for a in self.adapters):
            raise bad("adapters", f"expected adapter names (a+b for a combination), got {self.adapters!r}")
        if self.launcher not in LAUNCHERS:
            raise bad("launcher", f"must be one of {LAUNCHERS}, got {self.launcher!r}")
        unknown = [n for n in self.normalise if n not in NORMALISERS]
        if unknown:
            raise bad("normalise", f"{unknown} unknown; known: {list(NORMALISERS)}")
        for key in ("workers", "nproc_per_job"):
            if getattr(self, key) < 1:
                raise bad(key, f"must be >= 1, got {getattr(self, key)}")
        for task, overrides in self.tasks.items():
            if not isinstance(overrides, dict) or not set(overrides) <= {"data", "model", "optim", "eval", "epochs"}:
                raise bad(f"tasks.{task}", "expected a mapping with some of data, model, optim, eval, epochs, got "
                          f"{overrides!r}")
        for key in (self.control_metric, *self.report):
            if key and "/" not in key:
                raise bad("report" if key in self.report else "control_metric",
                          f"{key!r}: expected '<task>/<metric>', e.g. 'retrieval/t2v_R@1'")


def load_bench(path: str | Path | None, changes: dict) -> tuple[dict, BenchSettings]:
    """(the training config as a mapping, without its `bench:` section; the bench settings) from a config
    file, with `changes` (the command's options) over the file's `bench:` section."""
    from vl_adapters.train.config import build_section, read_config_file

    data, text = read_config_file(path) if path is not None else ({}, "")
    section = data.pop("bench", None) or {}
    if not isinstance(section, dict):
        raise ConfigError(f"{path}: bench: expected a mapping, got {section!r}")
    settings = build_section(BenchSettings, {**section, **changes}, "bench", path=path, text=text)
    return data, settings
