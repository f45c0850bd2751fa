"""`vl-adapters bench`: registered by vl_adapters/cli.py, which lists the modules of its subcommands."""

from __future__ import annotations

import argparse
import functools

DESCRIPTION = """\
Benchmark adapter ablations: every row (the baselines, the controls, and each adapter or combination)
trained with each task head for each seed through the same trainer as `vl-adapters train`, evaluated
on the test split (in order and with shuffled frames), and reported as tables (mean ± std over seeds)
with the cost of each row. With no --config it runs the synthetic temporal benchmark, which it
generates itself (no download), on the tiny backbone it ships."""

EXAMPLES = """\
examples:
  vl-adapters bench                                  # the synthetic benchmark: about 20 minutes on 2 CPU cores
  vl-adapters bench --tiny --out /tmp/bench          # a miniature grid, for a first look
  vl-adapters bench --config examples/configs/bench_msrvtt.yaml --out runs/bench-msrvtt --devices 0 1 2 3
  vl-adapters bench --config base.yaml --adapters temporal_transformer tem_adapter finsta+trajectory_word \\
      --seeds 0 1 2 --estimate                       # print the cost of each row and stop
  vl-adapters bench --config base.yaml --launcher slurm        # one Slurm job per grid job (submitit)

The config is a training config as `vl-adapters train` reads it; its optional `bench:` section holds the
settings below (the options here override it). A stopped run resumes: run the same command again.
See docs/benchmark.md."""


def register(subparsers) -> None:
    p = subparsers.add_parser("bench", help="benchmark adapter ablations (any dataset and backbone, or the "
                                            "synthetic temporal benchmark)",
                              description=DESCRIPTION, epilog=EXAMPLES,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default=None,
                   help="a training config (YAML/JSON) with an optional bench: section; default: the synthetic preset")
    p.add_argument("--out", default="bench-results", help="the result folder (tables, JSON, CSV, PNG, jobs/, cache/)")
    p.add_argument("--suite", choices=("ablation", "perf"), default="ablation",
                   help="ablation (the grid) or perf (step time and memory per adapter)")
    size = p.add_mutually_exclusive_group()
    size.add_argument("--full", action="store_true", help="synthetic preset: more data and epochs (hours on a CPU)")
    size.add_argument("--tiny", action="store_true", help="synthetic preset: a miniature grid (about a minute)")
    p.add_argument("--adapters", nargs="+", default=None, metavar="ROW",
                   help="the rows (a+b for a combination); default: temporal_transformer and the named methods. "
                        "The mean-pooling baselines and the controls always run")
    p.add_argument("--all", dest="all_adapters", action="store_true", default=None,
                   help="add every other registered adapter as a row")
    p.add_argument("--seeds", type=int, nargs="+", default=None, help="training seeds (default 0 1 2)")
    p.add_argument("--report", nargs="+", default=None, metavar="TASK/METRIC",
                   help="the columns of the main tables, e.g. retrieval/t2v_R@1 multiple_choice/accuracy")
    p.add_argument("--cache", default=None, help="where the frozen features go (default OUT/cache)")
    p.add_argument("--data-dir", default=None, help="synthetic preset: where its videos go (default OUT/data)")
    p.add_argument("--workers", type=int, default=None,
                   help="CPU jobs at once, one thread each (default 2; results do not depend on it)")
    p.add_argument("--devices", nargs="+", default=None, metavar="GPU",
                   help="CUDA devices to spread the jobs over (e.g. 0 1 2 3), one job per device at a time")
    p.add_argument("--nproc-per-job", type=int, default=None,
                   help="run each job data-parallel under torchrun on this many devices")
    p.add_argument("--launcher", choices=("local", "slurm"), default=None,
                   help="slurm: submit each job through submitit (parameters in the config's bench.slurm)")
    p.add_argument("--estimate", action="store_true",
                   help="time a few training steps of each row, print how long the grid would take, and stop")
    p.add_argument("--yes", action="store_true", help="start a grid estimated at over an hour without asking")
    p.set_defaults(func=_run_cli)


def _run_cli(args) -> int:
    if args.suite == "perf":
        from .perf import run_perf

        run_perf(args.out, adapters=args.adapters, tiny=args.tiny)
        return 0
    from .run import run_bench

    changes = {key: value for key, value in (
        ("adapters", args.adapters), ("all_adapters", args.all_adapters), ("seeds", args.seeds),
        ("report", args.report), ("cache", args.cache), ("workers", args.workers), ("devices", args.devices),
        ("nproc_per_job", args.nproc_per_job), ("launcher", args.launcher)) if value is not None}
    if args.config is None and "workers" not in changes:
        changes["workers"] = 2
    preset = "full" if args.full else "tiny" if args.tiny else "default"
    if args.config is not None and (args.full or args.tiny or args.data_dir):
        raise ValueError("--full, --tiny and --data-dir choose the synthetic preset; they do not apply with --config")
    # flushed at once: a run's output is often a pipe or a file, and a worker's lines would otherwise wait
    # in its buffer for hours
    result = run_bench(args.out, config=args.config, preset=preset, changes=changes, data_dir=args.data_dir,
                       estimate_only=args.estimate, yes=args.yes, log=functools.partial(print, flush=True))
    return 1 if result.get("failed") else 0  # the table is written either way; the failed jobs are named
