"""Bench results: markdown tables (mean ± std over seeds), JSON, CSV, a bar chart and a loss-curve chart
per task. results.json holds no timing (timing.json does), so the same command writes it bit for bit."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

from .grid import MEAN, SHUFFLED_SUFFIX, SINGLE_FRAME

SUMMARY = ("Each row is the frozen tiny:synthetic image backbone with one adapter (or none), trained "
           "separately for text-to-video retrieval and for multiple choice on synthetic videos whose "
           "'static' captions any single frame answers and whose 'temporal' captions only the order of "
           "the frames can (every video has a backward twin with the same frames). A model that uses time "
           "beats mean pooling in the temporal columns and loses that lead when its test frames are "
           "shuffled (shuffle drop); order-blind mean pooling drops by exactly 0.")

# (title, metric key); every key is a percentage, reported as mean ± std over seeds.
MC_COLUMNS = [("MC temporal", "multiple_choice/mc/temporal"),
              ("shuffle drop (MC temporal)", "multiple_choice/shuffle_drop/mc/temporal"),
              ("MC twin (2-way)", "multiple_choice/mc/twin"),
              ("shuffle drop (MC twin)", "multiple_choice/shuffle_drop/mc/twin"),
              ("MC static", "multiple_choice/mc/static"),
              ("val MC temporal", "multiple_choice/val/mc/temporal")]
RETRIEVAL_COLUMNS = [("temporal t2v R@1", "retrieval/temporal/t2v_R@1"),
                     ("temporal t2v R@5", "retrieval/temporal/t2v_R@5"),
                     ("temporal v2t R@1", "retrieval/temporal/v2t_R@1"),
                     ("shuffle drop (temporal t2v R@1)", "retrieval/shuffle_drop/temporal/t2v_R@1"),
                     ("twin (own video > twin)", "retrieval/temporal/twin"),
                     ("static t2v R@1", "retrieval/static/t2v_R@1"),
                     ("static v2t R@1", "retrieval/static/v2t_R@1")]
NORMALISED_COLUMNS = [(f"{kind} t2v R@1 {label}", f"retrieval/{kind}/{prefix}t2v_R@1")
                      for kind in ("temporal", "static")
                      for label, prefix in (("raw", ""), ("DSL", "dsl/"), ("QB-Norm", "qb_norm/"))]


def mean_std(values: list[float]) -> tuple[float, float]:
    mean = sum(values) / len(values)
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else 0.0
    return mean, std


def cell(values: list[float]) -> str:
    if not values:
        return "-"
    mean, std = mean_std(values)
    return f"{mean:.1f}" if len(values) == 1 else f"{mean:.1f} ± {std:.1f}"


def _values(row: dict, key: str) -> list[float]:
    return [run["metrics"][key] for run in row["runs"] if key in run["metrics"]]


def _params(row: dict, task: str) -> str:
    return f"{row['runs'][0]['trainable_params'][task]:,}"


def table(results: list[dict], columns: list[tuple[str, str]], task: str) -> str:
    head = "| model | inputs | " + " | ".join(t for t, _ in columns) + " | trainable params |"
    lines = [head, "|" + "---|" * (len(columns) + 3)]
    for row in results:
        cells = [cell(_values(row, key)) for _, key in columns]
        lines.append(f"| {row['name']} | {row['inputs']} | " + " | ".join(cells) + f" | {_params(row, task)} |")
    return "\n".join(lines)


def headline(results: list[dict], meta: dict) -> str:
    """The second summary sentence: the best row on temporal multiple choice against trained mean pooling."""
    by_name = {r["name"]: r for r in results}
    key, drop = "multiple_choice/mc/temporal", "multiple_choice/shuffle_drop/mc/temporal"
    adapters = [r for r in results if not r["control"] and _values(r, key)]
    if MEAN not in by_name or not adapters:
        return ""
    best = max(adapters, key=lambda r: mean_std(_values(r, key))[0])
    chance = meta.get("chance", {}).get("mc_temporal")
    chance_text = f", chance {chance:.1f}%" if chance else ""
    text = (f"In this run the best row on temporal multiple choice is {best['name']} with "
            f"{cell(_values(best, key))}% against {cell(_values(by_name[MEAN], key))}% for trained mean pooling"
            f"{chance_text}; shuffling its test frames costs it {cell(_values(best, drop))} points.")
    control = next((r for r in results if r["name"].endswith(SHUFFLED_SUFFIX)), None)
    if control is not None:
        text += (f" Trained on shuffled frames, {control['name'].removesuffix(SHUFFLED_SUFFIX)} reaches "
                 f"{cell(_values(control, key))}%.")
    if SINGLE_FRAME in by_name:
        static = "multiple_choice/mc/static"
        text += (f" On static multiple choice, the middle frame alone gives {cell(_values(by_name[SINGLE_FRAME], static))}% "
                 f"against {cell(_values(by_name[MEAN], static))}% with every frame.")
    return text


def markdown(results: list[dict], meta: dict) -> str:
    cfg, counts = meta["config"], meta["counts"]
    test = counts["test"]
    seeds = len(cfg["seeds"])
    lines = [f"# vl-adapters bench: {meta['backbone']}", "", meta["summary"], "", headline(results, meta), "",
             f"Mean ± std over {seeds} seeds (the zero-shot row has no seed); percentages. Test part: "
             f"{test['temporal_pool_videos']} videos in the temporal retrieval pool, {test['static_pool_videos']} in "
             f"the static pool, {test['mc_temporal']} temporal and {test['mc_static']} static "
             f"multiple-choice questions (chance {meta['chance']['mc_temporal']:.1f}% and "
             f"{meta['chance']['mc_static']:.1f}%). Every trained row: {cfg['steps']} AdamW steps of {cfg['batch_size']} per "
             f"task (lr {cfg['lr']}, warm-up + cosine), {cfg['num_frames']} frames, "
             f"{counts['train']['videos']} training videos. inputs: features = the frozen backbone's cached "
             "features; frames = frames through the backbone every step (adapters inside the backbone).", "",
             "## Multiple choice (each row trained with the multiple-choice head)", "",
             table(results, MC_COLUMNS, "multiple_choice"), "",
             "## Retrieval (each row trained with the retrieval head)", "",
             table(results, RETRIEVAL_COLUMNS, "retrieval"), ""]
    if any(_values(r, "retrieval/temporal/dsl/t2v_R@1") for r in results):
        lines += ["## Inference normalisation (retrieval; raw beside DSL and QB-Norm, t2v R@1)", "",
                  "DSL reads every test query at once (transductive). QB-Norm's querybank is "
                  f"{cfg['qb_bank_size']} training captions per pool and its beta is chosen on the validation part.",
                  "", table(results, NORMALISED_COLUMNS, "retrieval"), ""]
    if meta["notes"]:
        lines += ["## Notes", "", *[f"- {n}" for n in meta["notes"]], ""]
    return "\n".join(lines)


def write_results(out: str | Path, results: list[dict], meta: dict, timing: dict | None = None, *,
                  log=print) -> dict[str, Path]:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"markdown": out / "results.md", "json": out / "results.json", "csv": out / "results.csv",
             "png": out / "results.png", "loss_retrieval": out / "loss_retrieval.png",
             "loss_multiple_choice": out / "loss_multiple_choice.png"}
    paths["json"].write_text(json.dumps({"meta": meta, "results": results}, indent=1, sort_keys=True) + "\n")
    if timing is not None:
        paths["timing"] = out / "timing.json"
        paths["timing"].write_text(json.dumps(timing, indent=1, sort_keys=True) + "\n")
    keys = sorted({k for row in results for run in row["runs"] for k in run["metrics"]})
    with open(paths["csv"], "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["model", "seed", *keys])
        for row in results:
            for run in row["runs"]:
                writer.writerow([row["name"], run["seed"], *[run["metrics"].get(k, "") for k in keys]])
    text = markdown(results, meta)
    paths["markdown"].write_text(text)
    bar_chart(paths["png"], results)
    for task in ("retrieval", "multiple_choice"):
        loss_curves(paths[f"loss_{task}"], results, task, meta["config"])
    log(text)
    log(meta["summary"] + " " + headline(results, meta))
    return paths


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def bar_chart(path: Path, results: list[dict]) -> None:
    plt = _pyplot()
    keys = [("MC temporal", "multiple_choice/mc/temporal"), ("MC static", "multiple_choice/mc/static"),
            ("temporal t2v R@1", "retrieval/temporal/t2v_R@1"), ("static t2v R@1", "retrieval/static/t2v_R@1")]
    names = [r["name"] for r in results]
    fig, ax = plt.subplots(figsize=(max(7, 0.8 * len(names)), 4.5))
    width = 0.8 / len(keys)
    for j, (label, key) in enumerate(keys):
        stats = [mean_std(_values(row, key)) if _values(row, key) else (0.0, 0.0) for row in results]
        ax.bar([i + (j - (len(keys) - 1) / 2) * width for i in range(len(names))], [m for m, _ in stats], width,
               yerr=[s for _, s in stats], label=label)
    ax.set_xticks(range(len(names)))
    ax.set_xticklabels(names, rotation=30, ha="right", fontsize=7)
    ax.set_ylabel("% (mean ± std over seeds)")
    ax.set_title("vl-adapters bench (frozen tiny:synthetic)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100, metadata={"Software": None})
    plt.close(fig)


def loss_curves(path: Path, results: list[dict], task: str, cfg: dict) -> None:
    """Training loss against step, the mean over seeds of each row (shaded: min to max)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 4.5))
    window = cfg["curve_window"]
    for row in results:
        curves = [run["loss_curve"][task] for run in row["runs"] if run["loss_curve"].get(task)]
        if not curves:
            continue
        length = min(len(c) for c in curves)
        steps = [min((i + 1) * window, cfg["steps"]) for i in range(length)]
        mean = [sum(c[i] for c in curves) / len(curves) for i in range(length)]
        line, = ax.plot(steps, mean, label=row["name"], linewidth=1)
        ax.fill_between(steps, [min(c[i] for c in curves) for i in range(length)],
                        [max(c[i] for c in curves) for i in range(length)], color=line.get_color(), alpha=0.15)
    ax.set_xlabel(f"step (mean loss of each {window} steps)")
    ax.set_ylabel("training loss (task + auxiliary)")
    ax.set_title(f"training loss, {task.replace('_', ' ')} head")
    ax.legend(fontsize=6, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=100, metadata={"Software": None})
    plt.close(fig)
