"""The bench's result folder: tables a paper can cite, and everything behind them.

- results.md    one table per task head (mean ± std over seeds), a cost table (trainable parameters,
                step time, peak memory, CPU- or GPU-hours per row), raw beside DSL / QB-Norm retrieval
                numbers in a table of their own (never mixed), notes, and how to reproduce it;
- results.json  every metric of every seed, the loss curves, the resolved config of each task head, the
                environment; no timing, so the same grid writes it bit for bit wherever it ran;
- results.csv   one line per row and metric: mean, std, seeds;
- timing.json   every job's wall time, step time, peak memory, and the run's stages;
- results.png   the report columns as bars; loss_<task>.png the training loss of each row (mean of seeds).
Each job's own config.yaml, metrics.jsonl and result.json stay in <out>/jobs/<row>/<task>/seed<k>/.
"""

from __future__ import annotations

import csv
import json
import math
import platform
from pathlib import Path

from .grid import MEAN, SHUFFLED_SUFFIX, SINGLE_FRAME


def mean_std(values: list[float]) -> tuple[float, float]:
    mean = sum(values) / len(values)
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else 0.0
    return mean, std


def cell(values: list[float], digits: int = 1) -> str:
    if not values:
        return "-"
    mean, std = mean_std(values)
    return f"{mean:.{digits}f}" if len(values) == 1 else f"{mean:.{digits}f} ± {std:.{digits}f}"


def values(row: dict, key: str) -> list[float]:
    return [run["metrics"][key] for run in row["runs"] if key in run["metrics"]]


# ---------------------------------------------------------------- the summary
def environment(device: str) -> dict:
    import torch

    import vl_adapters

    env = {"vl_adapters": vl_adapters.__version__, "torch": torch.__version__, "python": platform.python_version(),
           "platform": platform.platform(terse=True), "device": device}
    if device.startswith("cuda") and torch.cuda.is_available():
        env["gpu"] = torch.cuda.get_device_name(torch.device(device))
    return env


def summarise(rows, results: dict, settings, configs: dict, grid, notes: list[str], *, synthetic: bool) -> dict:
    """The content of results.json: rows with every seed's metrics, and what produced them."""
    from .frozen import reads_frames

    out_rows = []
    tasks = list(configs)
    for index, row in enumerate(rows):
        runs = []
        for seed in settings.seeds if row.train else settings.seeds[:1]:
            found = {job.task: result for job, result in results.items()
                     if job.row_index == index and job.seed == seed}
            if not found:
                continue
            runs.append({"seed": seed,
                         "metrics": {f"{task}/{k}": v for task, r in found.items() for k, v in r["metrics"].items()},
                         "trainable_params": {task: r["trainable_params"] for task, r in found.items()},
                         "steps": {task: r["steps"] for task, r in found.items()},
                         "checkpoint": {task: r["checkpoint"] for task, r in found.items()},
                         "loss_curve": {task: r["loss_curve"] for task, r in found.items()}})
        out_rows.append({"name": row.name, "adapters": list(row.adapters), "trained": row.train,
                         "control": row.control, "train_view": row.train_view, "test_view": row.test_view,
                         "inputs": "frames" if reads_frames(row) else "features", "runs": runs})
    hidden = {"run_dir", "seed", "progress"}
    first = configs[tasks[0]]
    meta = {"backbone": first["model"]["backbone"], "pretrained": first["model"]["pretrained"],
            "dataset": first["data"]["dataset"], "tasks": tasks, "seeds": list(settings.seeds),
            "test_split": settings.test_split, "validation": grid.validation, "control_metric": grid.control_metric,
            "config": {task: {k: v for k, v in c.items() if k not in hidden} for task, c in configs.items()},
            "report": list(settings.report), "notes": notes, "synthetic": synthetic,
            "environment": environment(str(grid.device))}
    for config in meta["config"].values():
        config["data"] = {k: v for k, v in config["data"].items() if k != "cache"}
        config["model"] = {k: v for k, v in config["model"].items() if k != "adapters"}
    return {"meta": meta, "rows": out_rows}


# ---------------------------------------------------------------- the tables
def report_columns(summary: dict, task: str) -> list[str]:
    """The metric keys (without the task) of a task's main table: the bench's `report` setting, else the
    task's headline metrics, per question type where the data has types, the shuffle drop and twins."""
    chosen = [k.partition("/")[2] for k in summary["meta"]["report"] if k.startswith(task + "/")]
    if chosen:
        return chosen
    keys = {k.partition("/")[2] for row in summary["rows"] for run in row["runs"] for k in run["metrics"]
            if k.startswith(task + "/")}
    base = ["t2v_R@1", "t2v_R@5", "v2t_R@1", "t2v_MdR"] if task == "retrieval" else ["accuracy"]
    typed = sorted(k for k in keys if k.startswith(base[0] + "/"))
    drops = [k for k in (f"shuffle_drop/{base[0]}", *[f"shuffle_drop/{t}" for t in typed]) if k in keys]
    twins = sorted(k for k in keys if k == "twin" or k.startswith("twin/"))
    return [k for k in (*base, *typed, *drops, *twins) if k in keys]


def title(key: str) -> str:
    return key.replace("shuffle_drop/", "shuffle drop ").replace("_", " ").replace("/", " ")


def metric_table(summary: dict, task: str) -> str:
    columns = report_columns(summary, task)
    lines = ["| row | inputs | " + " | ".join(title(c) for c in columns) + " |", "|" + "---|" * (len(columns) + 2)]
    for row in summary["rows"]:
        cells = [cell(values(row, f"{task}/{c}")) for c in columns]
        lines.append(f"| {row['name']} | {row['inputs']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def cost_table(summary: dict, timing: dict) -> str:
    """Per row: trainable parameters and step time per task, peak memory, device-hours over its jobs."""
    tasks = summary["meta"]["tasks"]
    unit = "GPU-hours" if timing["device"].startswith("cuda") else "CPU-hours"
    jobs = {}
    for job in timing["jobs"]:
        jobs.setdefault(job["row"], []).append(job)
    head = ["row", *[f"trainable params ({t})" for t in tasks], *[f"step ms ({t})" for t in tasks],
            "peak memory MiB", unit]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in summary["rows"]:
        mine = jobs.get(row["name"], [])
        params = [f"{row['runs'][0]['trainable_params'].get(t, 0):,}" if row["runs"] else "-" for t in tasks]
        steps = []
        for task in tasks:
            found = [1000 * j["cost"]["seconds_per_step"] for j in mine if j["task"] == task and j["cost"]]
            steps.append(cell(found, 0) if found else "-")
        peaks = [j["cost"]["peak_memory_bytes"] / 2**20 for j in mine if j["cost"]]
        seconds = sum((j["cost"].get("train_cpu_seconds", 0.0) if unit == "CPU-hours" else j["total"]) for j in mine
                      if j["cost"]) if mine else 0.0
        lines.append(f"| {row['name']} | " + " | ".join([*params, *steps, f"{max(peaks):.0f}" if peaks else "-",
                                                         f"{seconds / 3600:.3f}"]) + " |")
    return "\n".join(lines)


def normalised_table(summary: dict) -> str | None:
    """Retrieval t2v R@1: raw, DSL and QB-Norm side by side, overall and per caption type."""
    keys = {k for row in summary["rows"] for run in row["runs"] for k in run["metrics"]}
    kinds = [""] + sorted({k.rpartition("/")[2] for k in keys if k.startswith("retrieval/t2v_R@1/")})
    columns = [(f"{kind or 'all'} {label}", f"retrieval/{prefix}t2v_R@1{'/' + kind if kind else ''}")
               for kind in kinds for label, prefix in (("raw", ""), ("DSL", "dsl/"), ("QB-Norm", "qb_norm/"))]
    columns = [(t, k) for t, k in columns if k in keys]
    if not any(k.startswith(("retrieval/dsl/", "retrieval/qb_norm/")) for _, k in columns):
        return None
    lines = ["| row | " + " | ".join(t for t, _ in columns) + " |", "|" + "---|" * (len(columns) + 1)]
    lines += [f"| {row['name']} | " + " | ".join(cell(values(row, k)) for _, k in columns) + " |"
              for row in summary["rows"]]
    return "\n".join(lines)


def headline(summary: dict) -> str:
    """The synthetic benchmark's reading: the best row on temporal multiple choice against mean pooling."""
    rows = {r["name"]: r for r in summary["rows"]}
    key, drop = "multiple_choice/accuracy/temporal", "multiple_choice/shuffle_drop/accuracy/temporal"
    adapters = [r for r in summary["rows"] if not r["control"] and values(r, key)]
    if MEAN not in rows or not adapters:
        return ""
    best = max(adapters, key=lambda r: mean_std(values(r, key))[0])
    text = (f"In this run the best row on temporal multiple choice is {best['name']} with {cell(values(best, key))}% "
            f"against {cell(values(rows[MEAN], key))}% for trained mean pooling; shuffling its test frames costs it "
            f"{cell(values(best, drop))} points.")
    control = next((r for r in summary["rows"] if r["name"].endswith(SHUFFLED_SUFFIX)), None)
    if control is not None:
        name = control["name"].removesuffix(SHUFFLED_SUFFIX)
        chosen = "" if name == best["name"] else " (the shuffled-training control's row: the best on validation)"
        text += f" Trained on shuffled frames, {name}{chosen} reaches {cell(values(control, key))}%."
    if SINGLE_FRAME in rows:
        static = "multiple_choice/accuracy/static"
        text += (f" On static multiple choice, the middle frame alone gives {cell(values(rows[SINGLE_FRAME], static))}% "
                 f"against {cell(values(rows[MEAN], static))}% with every frame.")
    return text


def markdown(summary: dict, timing: dict) -> str:
    from .presets import SUMMARY

    meta = summary["meta"]
    seeds = len(meta["seeds"])
    lines = [f"# vl-adapters bench: {meta['dataset']} with {meta['backbone']}", ""]
    if meta["synthetic"]:
        lines += [SUMMARY, "", headline(summary), ""]
    lines += [f"Mean ± std over {seeds} seed{'s' * (seeds > 1)} (the zero-shot row has one); percentages, except "
              f"MdR. Reported on the `{meta['test_split']}` split; ranks and accuracies are tie-aware (expected "
              "over random tie-breaks). inputs: features = the frozen backbone's cached features; frames = frames "
              "through the backbone every step (adapters inside the backbone).", ""]
    for task in meta["tasks"]:
        config = meta["config"][task]
        lines += [f"## {task.replace('_', ' ')} (each row trained with the {task} head)", "",
                  f"{config['epochs']} epochs of batches of {config['data']['batch_size']}, lr {config['optim']['lr']}, "
                  f"{config['data']['num_frames']} frames ({config['data']['sampler']}).", "",
                  metric_table(summary, task), ""]
    lines += ["## Cost", "", cost_table(summary, timing), ""]
    table = normalised_table(summary)
    if table:
        lines += ["## Inference normalisation (retrieval t2v R@1: raw beside DSL and QB-Norm)", "",
                  "DSL reads every test query at once (transductive). QB-Norm's querybank is training captions; "
                  + ("its beta is chosen on the validation split." if meta.get("validation", True) else
                     "its beta is the default 20 (the data has no validation split to choose it on)."), "", table, ""]
    if meta["notes"]:
        lines += ["## Notes", "", *[f"- {n}" for n in meta["notes"]], ""]
    env = meta["environment"]
    lines += ["## Reproduce", "", f"`vl-adapters bench --config config.yaml` in this folder runs the same grid "
              "(finished jobs are read back from jobs/). Each job's resolved config, metrics log and result are in "
              f"jobs/<row>/<task>/seed<k>/. Environment: vl-adapters {env['vl_adapters']}, torch {env['torch']}, "
              f"{env.get('gpu', env['device'])}.", ""]
    return "\n".join(lines)


# ---------------------------------------------------------------- the files
def write_results(out: str | Path, summary: dict, timing: dict, *, log=print) -> dict[str, Path]:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"markdown": out / "results.md", "json": out / "results.json", "csv": out / "results.csv",
             "timing": out / "timing.json", "png": out / "results.png"}
    paths["json"].write_text(json.dumps(summary, indent=1, sort_keys=True) + "\n")
    paths["timing"].write_text(json.dumps(timing, indent=1, sort_keys=True) + "\n")
    keys = sorted({k for row in summary["rows"] for run in row["runs"] for k in run["metrics"]})
    with open(paths["csv"], "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["row", "metric", "mean", "std", "seeds"])
        for row in summary["rows"]:
            for key in keys:
                found = values(row, key)
                if found:
                    writer.writerow([row["name"], key, *(f"{v:.4f}" for v in mean_std(found)), len(found)])
    paths["markdown"].write_text(markdown(summary, timing))
    try:
        bar_chart(paths["png"], summary)
        for task in summary["meta"]["tasks"]:
            paths[f"loss_{task}"] = out / f"loss_{task}.png"
            loss_curves(paths[f"loss_{task}"], summary, task)
    except ImportError:
        paths.pop("png")
        log("[bench] note: matplotlib is not installed, so no PNG charts (pip install 'vl-adapters[bench]')")
    if summary["meta"]["synthetic"]:
        log(f"[bench] {headline(summary)}")
    return paths


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def bar_chart(path: Path, summary: dict) -> dict:
    """The report columns that are percentages, grouped by row; the legend sits below the axes (returns
    where, in axes coordinates, for the test that it covers no bar)."""
    plt = _pyplot()
    keys = [f"{task}/{c}" for task in summary["meta"]["tasks"] for c in report_columns(summary, task)
            if not c.endswith(("MdR", "MnR"))][:8]
    names = [r["name"] for r in summary["rows"]]
    fig, ax = plt.subplots(figsize=(max(8, 0.9 * len(names)), 5.5))
    width = 0.8 / max(len(keys), 1)
    colours = plt.get_cmap("tab10").colors
    for j, key in enumerate(keys):
        stats = [mean_std(values(row, key)) if values(row, key) else (0.0, 0.0) for row in summary["rows"]]
        ax.bar([i + (j - (len(keys) - 1) / 2) * width for i in range(len(names))], [m for m, _ in stats], width,
               yerr=[s for _, s in stats], label=title(key), color=colours[j % len(colours)])
    ax.set_xticks(range(len(names)))
    ax.set_xticklabels(names, rotation=30, ha="right", fontsize=7)
    ax.set_ylabel("% (mean ± std over seeds)")
    ax.set_title(f"vl-adapters bench ({summary['meta']['dataset']}, {summary['meta']['backbone']})")
    placed = {}
    if keys:
        legend = ax.legend(fontsize=7, ncol=4, loc="upper center", bbox_to_anchor=(0.5, -0.28))
        fig.canvas.draw()
        box = legend.get_window_extent().transformed(ax.transAxes.inverted())
        placed = {"legend_top": box.y1, "bars": len(keys)}
    fig.tight_layout()
    fig.savefig(path, dpi=100, bbox_inches="tight", metadata={"Software": None})
    plt.close(fig)
    return placed


def loss_curves(path: Path, summary: dict, task: str) -> list[tuple]:
    """Training loss against step, the mean over seeds of each trained row, each row its own colour and
    dash; the legend sits beside the axes. Returns each drawn line's (colour, dash)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(9, 4.5))
    colours, dashes = plt.get_cmap("tab20").colors, ("-", "--", ":", "-.")
    drawn, styles = 0, []
    for row in summary["rows"]:
        curves = [run["loss_curve"][task] for run in row["runs"] if run["loss_curve"].get(task)]
        if not curves:
            continue
        length = min(len(c) for c in curves)
        steps = [curves[0][i][0] for i in range(length)]
        mean = [sum(c[i][1] for c in curves) / len(curves) for i in range(length)]
        style = (colours[drawn % len(colours)], dashes[(drawn // len(colours)) % len(dashes)])
        ax.plot(steps, mean, label=row["name"], linewidth=1.2, color=style[0], linestyle=style[1])
        styles.append(style)
        drawn += 1
    ax.set_xlabel("optimiser step")
    ax.set_ylabel("training loss (task + auxiliary), mean of seeds")
    ax.set_title(f"training loss, {task.replace('_', ' ')} head")
    if drawn:
        ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.tight_layout()
    fig.savefig(path, dpi=100, bbox_inches="tight", metadata={"Software": None})
    plt.close(fig)
    return styles
