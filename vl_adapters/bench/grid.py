"""The ablation grid, built from the adapter registry: a newly registered adapter is a new row, an
unregistered one is simply absent. Two controls ride along (docs/benchmark.md):

- single frame: trained mean pooling fed only each video's middle frame, in training and at test: how
  much of each part can be answered without time at all;
- shuffled training: the best temporal row, chosen before any test number is read (the highest mean
  validation accuracy on temporal multiple choice over the seeds; ties go to the earlier row), trained
  again on frames shuffled afresh every step and tested on frames in order. If that row's gain is order,
  it disappears here.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

# The three methods whose combination is the toolkit's headline configuration.
NAMED_COMBINATION = ("tem_adapter", "finsta", "trajectory_word")
# The default rows: CLIP4Clip's seqTransf as the reference temporal baseline, then the named methods.
NAMED_ROWS = ("temporal_transformer", "tem_adapter", "finsta", "trajectory_word", "multi_level_alignment")
# Parts that act only through a partner, run in the grid as their composite: alone, each would be mean
# pooling under another name (the scorer picks frames for cross adapters; the filter hands them over).
PARTS_ONLY = {"salient_frame_scorer": "salient_frames", "salient_frame_filter": "salient_frames"}
ZERO_SHOT, MEAN, SINGLE_FRAME = "mean (zero-shot)", "mean + temperature", "single frame (middle) + temperature"
SHUFFLED_SUFFIX = " (shuffled training)"


@dataclass(frozen=True)
class GridRow:
    name: str
    adapters: tuple[str, ...]
    train: bool
    train_view: str = "all"  # frames fed in training: "all" (in order), "middle", "shuffled"
    test_view: str = "all"  # frames fed at test ("middle" for the single-frame control)
    control: bool = False  # a baseline or control, never a candidate for the shuffled-training control


def registered_adapters() -> dict[str, str]:
    """name -> stage of every registered adapter."""
    import vl_adapters  # noqa: F401  (registers the built-in adapters)
    from vl_adapters.core.registry import ADAPTERS

    return {name: ADAPTERS.get(name).stage for name in ADAPTERS.names()}


def build_grid(adapters: list[str] | None = None, *, all_adapters: bool = False, controls: bool = True
               ) -> tuple[list[GridRow], list[str]]:
    """(rows, notes). Always: zero-shot mean pooling, trained mean pooling (temperature only) and, with
    `controls`, the single-frame control. Then the adapter rows: `adapters` (names, `a+b` for a
    combination), by default the reference and the named methods (NAMED_ROWS) and their combination;
    `all_adapters` adds every other registered adapter alone (backbone-stage ones included: they are fed
    frames; parts that act only through a partner run as their composite)."""
    registry = registered_adapters()
    notes: list[str] = []
    wanted = list(dict.fromkeys(adapters)) if adapters else default_rows(registry, notes)
    unknown = sorted({a for name in wanted for a in name.split("+") if a not in registry})
    if unknown:
        raise ValueError(f"--adapters: {unknown} not registered; registered: {sorted(registry)}")
    if all_adapters:
        wanted += [n for n in sorted(registry) if n not in wanted and n not in PARTS_ONLY]
        notes += [f"{part}: run as part of {whole} (alone it changes nothing a bench row could measure)"
                  for part, whole in PARTS_ONLY.items() if part in registry]
        wanted = list(dict.fromkeys(wanted))
    rows = [GridRow(ZERO_SHOT, (), False, control=True), GridRow(MEAN, (), True, control=True)]
    if controls:
        rows.append(GridRow(SINGLE_FRAME, (), True, train_view="middle", test_view="middle", control=True))
    rows += [GridRow(name, tuple(name.split("+")), True) for name in wanted]
    return rows, notes


def default_rows(registry: dict[str, str], notes: list[str]) -> list[str]:
    """The reference temporal row, each named method alone and their combination, as far as registered."""
    rows = [name for name in NAMED_ROWS if name in registry]
    missing = [name for name in NAMED_ROWS if name not in registry]
    if all(n in registry for n in NAMED_COMBINATION):
        rows.append("+".join(NAMED_COMBINATION))
    if missing:
        notes.append(f"default rows {missing} left out: not registered")
    return rows


def shuffled_control(rows: list[GridRow], val_temporal_mc: dict[str, float]) -> GridRow | None:
    """The shuffled-training control of the best temporal row: among the adapter rows (not the
    baselines or controls), the highest validation temporal multiple-choice accuracy, ties to the
    earlier row. `val_temporal_mc`: row name -> mean over seeds. None when there is no adapter row."""
    candidates = [r for r in rows if not r.control and r.name in val_temporal_mc]
    if not candidates:
        return None
    best = max(candidates, key=lambda r: (val_temporal_mc[r.name], -rows.index(r)))
    return replace(best, name=best.name + SHUFFLED_SUFFIX, train_view="shuffled", control=True)
