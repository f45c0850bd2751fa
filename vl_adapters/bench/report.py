"""Bench results as a markdown table, JSON, CSV and a PNG bar chart."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

# (column title, metric key) shown in the markdown table; JSON/CSV hold every metric.
TABLE_COLUMNS = [
    ("static t2v R@1", "static/t2v_R1"), ("static v2t R@1", "static/v2t_R1"),
    ("temporal t2v R@1", "temporal/t2v_R1"), ("temporal t2v R@5", "temporal/t2v_R5"),
    ("temporal v2t R@1", "temporal/v2t_R1"),
    ("MC static", "mc/static"), ("MC temporal", "mc/temporal"),
    ("shuffle drop (temporal t2v R@1)", "shuffle_drop/temporal_t2v_R1"),
    ("shuffle drop (MC temporal)", "shuffle_drop/mc_temporal"),
    ("trainable params", "trainable_params"), ("train s", "train_seconds"),
]


def _fmt(values: list[float], key: str) -> str:
    if not values:
        return "-"
    mean = sum(values) / len(values)
    if key == "trainable_params":
        return f"{int(mean):,}"
    if key == "train_seconds":
        return f"{mean:.1f}"
    scale = 100.0  # metrics are fractions; show percentages
    if len(values) == 1:
        return f"{mean * scale:.1f}"
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))
    return f"{mean * scale:.1f} ± {std * scale:.1f}"


def markdown_table(results: list[dict]) -> str:
    """results: [{"name", "runs": [metrics per seed]}] -> a markdown table (percentages; mean ± std over seeds)."""
    head = "| model | " + " | ".join(t for t, _ in TABLE_COLUMNS) + " |"
    rule = "|" + "---|" * (len(TABLE_COLUMNS) + 1)
    lines = [head, rule]
    for row in results:
        cells = [_fmt([r[k] for r in row["runs"] if k in r], k) for _, k in TABLE_COLUMNS]
        lines.append(f"| {row['name']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_results(out: str | Path, results: list[dict], meta: dict) -> dict[str, Path]:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "results.json", "csv": out / "results.csv", "markdown": out / "results.md",
             "png": out / "results.png"}
    paths["json"].write_text(json.dumps({"meta": meta, "results": results}, indent=2, sort_keys=True))
    keys = sorted({k for row in results for run in row["runs"] for k in run})
    with open(paths["csv"], "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["model", "seed", *keys])
        for row in results:
            for run in row["runs"]:
                writer.writerow([row["name"], run.get("seed", ""), *[run.get(k, "") for k in keys]])
    paths["markdown"].write_text(markdown_table(results) + "\n")
    bar_chart(paths["png"], results)
    return paths


def bar_chart(path: Path, results: list[dict]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = [("static t2v R@1", "static/t2v_R1"), ("temporal t2v R@1", "temporal/t2v_R1"),
            ("MC static", "mc/static"), ("MC temporal", "mc/temporal")]
    names = [r["name"] for r in results]
    fig, ax = plt.subplots(figsize=(max(6, 1.3 * len(names)), 4))
    width = 0.8 / len(keys)
    for j, (label, key) in enumerate(keys):
        means, errs = [], []
        for row in results:
            vals = [run[key] for run in row["runs"] if key in run]
            mean = sum(vals) / len(vals) if vals else 0.0
            std = math.sqrt(sum((v - mean) ** 2 for v in vals) / (len(vals) - 1)) if len(vals) > 1 else 0.0
            means.append(100 * mean)
            errs.append(100 * std)
        ax.bar([i + (j - (len(keys) - 1) / 2) * width for i in range(len(names))], means, width, yerr=errs,
               label=label)
    ax.set_xticks(range(len(names)))
    ax.set_xticklabels(names, rotation=25, ha="right", fontsize=8)
    ax.set_ylabel("%")
    ax.set_title("vl-adapters bench: synthetic temporal benchmark (frozen tiny:synthetic)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
