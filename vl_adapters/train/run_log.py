"""What a run shows while it trains (rank 0): one line per epoch on stdout, flushed, whether stdout is a
terminal or a file; curves.png in the run directory (the loss and the evaluation metrics against the
step, redrawn from metrics.jsonl after an epoch when the last drawing is CURVES_EVERY_S old, and when the
run ends; needs matplotlib, else skipped with one note); and
TensorBoard scalars under <run>/tensorboard when the config says `tensorboard: true`."""

from __future__ import annotations

import io
import json
import math
import time
import warnings
from pathlib import Path

CURVES_FILE = "curves.png"
TENSORBOARD_DIR = "tensorboard"
RANK_METRICS = ("MdR", "MnR")  # ranks (lower is better, another scale): a panel of their own
CURVES_EVERY_S = 30.0  # drawing takes a fraction of a second: short epochs (tests, smoke runs) redraw once

_matplotlib_noted = False


class RunLog:
    def __init__(self, run_dir: str | Path, *, tensorboard: bool = False, enabled: bool = True,
                 echo: bool = True) -> None:
        self.run_dir = Path(run_dir)
        self.enabled, self.echo = enabled, echo  # echo: the epoch line on stdout (a grid's jobs keep quiet)
        self.tensorboard = tensorboard and enabled
        self._writer = None
        if self.tensorboard:  # fail before training starts, not at the first record
            from ..core.optional import require

            require("tensorboard", extra="tensorboard", purpose="tensorboard: true (--tensorboard)")
        self._losses: list[float] = []
        self._started = self._drawn = time.perf_counter()
        self._undrawn = False

    def start_epoch(self) -> None:
        self._losses.clear()
        self._started = time.perf_counter()

    def step(self, loss: float) -> None:
        """One optimiser step's loss (averaged into the epoch's line)."""
        self._losses.append(loss)

    def record(self, record: dict) -> None:
        """A metrics.jsonl record, also written to TensorBoard: train/<key>, eval/<metric>."""
        if not self.tensorboard or record.get("kind") not in ("train", "eval"):
            return
        if self._writer is None:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(log_dir=str(self.run_dir / TENSORBOARD_DIR))
        for key, value in record.items():
            if key not in ("kind", "step", "epoch", "time") and isinstance(value, (int, float)):
                self._writer.add_scalar(f"{record['kind']}/{key}", value, global_step=record["step"])
        self._writer.flush()

    def end_epoch(self, *, epoch: int, epochs: int, step: int, metrics: dict, stopped: bool = False) -> None:
        """Print the epoch's line and redraw curves.png. `epoch` counts from 1."""
        if not self.enabled:
            return
        loss = f"{sum(self._losses) / len(self._losses):.4f}" if self._losses else "-"
        shown = "".join(f"  {k} {_number(v)}" for k, v in metrics.items())
        note = " (stopped: max_steps)" if stopped else ""
        if self.echo:
            print(f"epoch {epoch}/{epochs}{note}  step {step}  loss {loss}{shown}  "
                  f"time {time.perf_counter() - self._started:.1f}s", flush=True)
        self._undrawn = True
        if time.perf_counter() - self._drawn >= CURVES_EVERY_S:
            self._draw()

    def _draw(self) -> None:
        draw_curves(self.run_dir)
        self._drawn, self._undrawn = time.perf_counter(), False

    def close(self) -> None:
        """At the end of the run: the last curves, the TensorBoard files closed."""
        if self._undrawn:
            self._draw()
        if self._writer is not None:
            self._writer.close()
            self._writer = None


def _number(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def draw_curves(run_dir: str | Path) -> Path | None:
    """curves.png from <run_dir>/metrics.jsonl: the training loss, then the evaluation metrics (rank
    metrics apart) against the optimiser step. Returns its path, or None when matplotlib is missing."""
    global _matplotlib_noted
    try:
        from matplotlib.figure import Figure
        from matplotlib.ticker import MaxNLocator
    except ImportError:
        if not _matplotlib_noted:
            _matplotlib_noted = True
            warnings.warn("matplotlib is not installed, so curves.png is not drawn "
                          "(pip install 'vl-adapters[bench]')", RuntimeWarning, stacklevel=2)
        return None
    from ..core.io import save_bytes

    run_dir = Path(run_dir)
    log = run_dir / "metrics.jsonl"
    records = [json.loads(line) for line in log.read_text().splitlines() if line.strip()] if log.exists() else []
    train = [(r["step"], r["loss"]) for r in records if r.get("kind") == "train" and _finite(r.get("loss"))]
    evals = [r for r in records if r.get("kind") == "eval"]
    names = list(dict.fromkeys(k for r in evals for k, v in r.items()
                               if k not in ("kind", "step", "epoch", "time") and isinstance(v, (int, float))))
    scores = [n for n in names if not n.endswith(RANK_METRICS)]
    ranks = [n for n in names if n.endswith(RANK_METRICS)]
    panels = [("training loss", None)] + [(title, group) for title, group in
                                          (("evaluation", scores), ("evaluation: ranks (lower is better)", ranks))
                                          if group]
    figure = Figure(figsize=(5.2 * len(panels), 3.8), layout="constrained")
    axes = figure.subplots(1, len(panels), squeeze=False)[0]
    for ax, (title, group) in zip(axes, panels, strict=True):
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("step")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        if group is None:
            if train:
                ax.plot(*zip(*train, strict=True), color="tab:blue", linewidth=1.2, marker="." if len(train) < 60 else None)
            ax.set_ylabel("loss")
            continue
        for name in group:
            points = [(r["step"], r[name]) for r in evals if _finite(r.get(name))]
            if points:
                ax.plot(*zip(*points, strict=True), marker="o", markersize=3, linewidth=1.2, label=name)
        ax.legend(fontsize=7, ncol=2 if len(group) > 6 else 1)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110)
    path = run_dir / CURVES_FILE
    save_bytes(path, buffer.getvalue())
    return path


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)
