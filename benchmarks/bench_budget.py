"""How many steps does the bench need? The reference row trained with doubling budgets, on training data only.

    .venv/bin/python benchmarks/bench_budget.py --data DIR [--budgets 600 1200 2400 4800 --row temporal_transformer
                                                            --workers 2 --out benchmarks/results/budget]

The rule, fixed before any test number is read: the reference row (`temporal_transformer`, CLIP4Clip's seqTransf,
the first temporal row of the grid) is trained on each task through the bench's own `train_model` (the
default preset's data, schedule and batch; seed 0) for each budget N. The budget is converged when doubling
it lowers the final training loss (the mean of the last tenth of the curve) by less than 5%; the bench's
default is the smallest converged N. Only training loss and training accuracy are read: the held-out parts
are never loaded. A loss curve that flattens for a while is not enough (the default's first 600-step budget
was chosen that way and was not converged: a false plateau at step 60-300 that a longer schedule leaves).

Writes `budget.md`, `budget.json` and `budget.png` (the curves against the step) to `--out`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import multiprocessing as mp
import time
from pathlib import Path

import torch
from temporal_fit import load_parts  # noqa: I001  (benchmarks/ is the script's dir)

import vl_adapters as vla
from vl_adapters.bench.evaluate import evaluate_mc, test_order
from vl_adapters.bench.protocol import TASKS, BenchConfig, train_model

TOLERANCE = 0.05  # relative drop of the final training loss below which doubling the budget is not worth it
_STATE: dict = {}


def final_loss(curve: list[float]) -> float:
    tail = curve[-max(1, len(curve) // 10):]
    return sum(tail) / len(tail)


def _job(job: tuple[str, int]) -> tuple[tuple[str, int], dict]:
    task, steps = job
    backbone, part, row = _STATE["backbone"], _STATE["train"], _STATE["row"]
    cfg = dataclasses.replace(BenchConfig(), steps=steps)
    torch.manual_seed(0)
    model = vla.wrap(backbone, [row], task=task)
    start = time.perf_counter()
    curve = train_model(model, part, cfg, seed=0)
    result = {"curve": curve, "final_loss": final_loss(curve), "seconds": time.perf_counter() - start}
    if task == "multiple_choice":
        with torch.no_grad():
            result["train_mc"] = evaluate_mc(model, part, test_order(part, "all"), kinds=("temporal", "static"))
    return job, result


def converged_budget(final: dict[int, float]) -> int | None:
    """The smallest budget whose doubling lowers the final loss by less than TOLERANCE (None: none did)."""
    budgets = sorted(final)
    for small, large in zip(budgets, budgets[1:], strict=False):
        if large == 2 * small and final[small] - final[large] < TOLERANCE * abs(final[small]):
            return small
    return None


def plot(results: dict, path: Path, cfg: BenchConfig) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(TASKS), figsize=(11, 3.8))
    for ax, task in zip(axes, TASKS, strict=True):
        for steps, result in sorted(results[task].items()):
            curve = result["curve"]
            ax.plot([(i + 1) * cfg.curve_window for i in range(len(curve))], curve, label=f"{steps} steps")
        ax.set_title(task)
        ax.set_xlabel("step")
        ax.set_ylabel("training loss")
        ax.set_xscale("log")
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True, help="the default preset's synthetic data (generated if absent)")
    p.add_argument("--budgets", type=int, nargs="+", default=[600, 1200, 2400, 4800])
    p.add_argument("--row", default="temporal_transformer")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--out", default="benchmarks/results/budget")
    args = p.parse_args()
    torch.set_num_threads(1)
    cfg = BenchConfig()
    backbone, train = load_parts(args.data, cfg, ("train",), workers=args.workers)
    _STATE.update(backbone=backbone, row=args.row, train=train)
    jobs = [(task, steps) for steps in sorted(args.budgets, reverse=True) for task in TASKS]
    results: dict = {task: {} for task in TASKS}
    with mp.get_context("fork").Pool(args.workers, initializer=torch.set_num_threads, initargs=(1,)) as pool:
        for (task, steps), result in pool.imap_unordered(_job, jobs):
            results[task][steps] = result
            print(f"{task} {steps} steps: final training loss {result['final_loss']:.3f} "
                  f"({result['seconds']:.0f}s)", flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    choice = {task: converged_budget({s: r["final_loss"] for s, r in results[task].items()}) for task in TASKS}
    lines = [f"# Training budget of the bench: `{args.row}`, seed 0, training data only", "",
             f"Rule: the smallest budget whose doubling lowers the final training loss by less than "
             f"{TOLERANCE:.0%}. Command: `python benchmarks/bench_budget.py --data DIR "
             f"--budgets {' '.join(map(str, args.budgets))}`.", "",
             "| task | steps | final training loss | drop on doubling | training MC temporal | training MC static | seconds |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for task in TASKS:
        budgets = sorted(results[task])
        for steps in budgets:
            r = results[task][steps]
            after = results[task].get(2 * steps)
            drop = f"{(r['final_loss'] - after['final_loss']) / abs(r['final_loss']):.1%}" if after else ""
            mc = r.get("train_mc", {})
            lines.append(f"| {task} | {steps} | {r['final_loss']:.3f} | {drop} | {mc.get('mc/temporal', float('nan')):.1f} "
                         f"| {mc.get('mc/static', float('nan')):.1f} | {r['seconds']:.0f} |")
    lines += ["", "Converged budget: " + ", ".join(f"{t} {c if c else 'none of these'}" for t, c in choice.items())]
    (out / "budget.md").write_text("\n".join(lines) + "\n")
    (out / "budget.json").write_text(json.dumps({"row": args.row, "results": results, "choice": choice}, indent=1))
    plot(results, out / "budget.png", cfg)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
