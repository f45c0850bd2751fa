"""The ablation grid, built from the adapter registry: unregistered adapters are simply absent."""

from __future__ import annotations

from dataclasses import dataclass

# The three methods whose combination is the toolkit's headline configuration.
NAMED_COMBINATION = ("tem_adapter", "finsta", "trajectory_word")


@dataclass(frozen=True)
class GridRow:
    name: str
    adapters: tuple[str, ...]
    train: bool


def registered_adapters() -> dict[str, str]:
    """name -> stage of every registered adapter."""
    import vl_adapters  # noqa: F401  (registers the built-in adapters)
    from vl_adapters.core.registry import ADAPTERS

    return {name: ADAPTERS.get(name).stage for name in ADAPTERS.names()}


def build_grid(adapters: list[str] | None = None) -> tuple[list[GridRow], list[str]]:
    """(rows, notes). Default: zero-shot mean pooling, trained mean pooling (temperature only),
    temporal_transformer, every other registered adapter alone, and the named combination.
    Backbone-stage adapters (LoRA, ST-Adapter) change the backbone's forward, so they cannot use the
    feature cache; they are left out of the grid, with a note."""
    registry = registered_adapters()
    notes: list[str] = []
    if adapters is not None:
        unknown = [a for name in adapters for a in name.split("+") if a not in registry]
        if unknown:
            raise ValueError(f"--adapters: {unknown} not registered; registered: {sorted(registry)}")
    rows = [GridRow("mean (zero-shot)", (), False), GridRow("mean + temperature", (), True)]
    singles = ["temporal_transformer"] + sorted(n for n in registry if n != "temporal_transformer")
    wanted = [n for n in singles if n in registry]
    if adapters is not None:
        wanted = list(adapters)
    for name in wanted:
        parts = tuple(name.split("+"))
        backbone_stage = [p for p in parts if registry[p] == "backbone"]
        if backbone_stage:
            notes.append(f"{name}: left out (backbone-stage adapter(s) {backbone_stage} need raw frames "
                         "every step; the cached benchmark does not run them)")
            continue
        rows.append(GridRow(name, parts, True))
    if adapters is None:
        if all(n in registry for n in NAMED_COMBINATION):
            rows.append(GridRow("+".join(NAMED_COMBINATION), NAMED_COMBINATION, True))
        else:
            missing = [n for n in NAMED_COMBINATION if n not in registry]
            notes.append(f"combination {'+'.join(NAMED_COMBINATION)}: left out, {missing} not registered")
    return rows, notes
