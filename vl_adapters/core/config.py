"""Typed dataclass configs that round-trip to JSON (peft style)."""

from __future__ import annotations

import dataclasses
import json
import typing
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    from .adapter import BackboneDims


class ConfigError(ValueError):
    """A config has an unknown key, a wrong type or a value that does not serialise."""


@dataclass
class Config:
    """Base of every typed config. Subclasses are dataclasses whose fields are JSON values;
    `type_name` is the registered name of what the config builds."""

    type_name: ClassVar[str] = ""

    def to_dict(self) -> dict[str, Any]:
        data = {"type": self.type_name, **dataclasses.asdict(self)}
        try:
            json.dumps(data)
        except TypeError as error:
            raise ConfigError(
                f"{type(self).__name__} does not serialise to JSON ({error}); config fields must be "
                "str, int, float, bool, None, or lists/dicts of those"
            ) from None
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Config:
        data = dict(data)
        kind = data.pop("type", cls.type_name)
        if cls.type_name and kind != cls.type_name:
            raise ConfigError(f"{cls.__name__} got a config of type {kind!r}, expected {cls.type_name!r}")
        known = {f.name for f in dataclasses.fields(cls) if f.init}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(
                f"unknown key(s) {unknown} for {cls.__name__} ({kind!r}); known keys: {sorted(known)}"
            )
        hints = typing.get_type_hints(cls)
        for name, value in data.items():
            data[name] = _coerce(cls.__name__, name, hints.get(name), value)
        return cls(**data)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Config:
        return cls.from_dict(json.loads(text))


@dataclass
class AdapterConfig(Config):
    """Base of every adapter config.

    A width or head count that depends on the backbone defaults to None ("follow the backbone") and is set
    by `resolve` when the adapter is built; the adapter keeps (and saves) the resolved copy, so a saved
    adapter reloads with the shapes it was trained with whatever the defaults later become."""

    def require_at_least(self, minimum: int, *names: str) -> None:
        """Raise ConfigError naming the first field of `names` below `minimum` (for __post_init__); None (a
        value still to be resolved from the backbone) passes."""
        for name in names:
            value = getattr(self, name)
            if value is not None and value < minimum:
                raise ConfigError(f"{type(self).__name__}.{name} must be >= {minimum}, got {value}")

    def resolve(self, dims: BackboneDims) -> AdapterConfig:
        """This config with its backbone-dependent defaults (None widths and head counts) set from `dims`, as a
        copy (the caller's config object may serve another backbone); explicit values are kept. Configs
        without such fields return themselves."""
        return self


def fit_width(width: int | None, *, paper: int, dims: BackboneDims) -> int:
    """`width` when given; else the method's published width (sized for ViT-B), capped at the backbone's
    narrowest feature width (embedding, vision or text): the paper's width on ViT-B, never wider than the
    backbone on a smaller one."""
    if width is not None:
        return width
    return min(paper, dims.embed_dim, dims.vision_width, dims.text_width)


def fit_heads(heads: int | None, *, width: int, paper: int, head_width: int = 32) -> int:
    """`heads` when given; else the published head count if every head is at least `head_width` channels
    wide, fewer on a narrow width: the largest count up to `paper` that divides `width` into heads at least
    that wide (1 when none does). Heads of a few channels cost as much as wide ones and see less."""
    if heads is not None:
        return heads
    for count in range(paper, 1, -1):
        if width % count == 0 and width // count >= head_width:
            return count
    return 1


@dataclass
class TaskConfig(Config):
    """Base of every task-head config."""


def _coerce(owner: str, name: str, hint: Any, value: Any) -> Any:
    """JSON has no tuples; turn lists back into tuples where the field is a tuple."""
    origin = typing.get_origin(hint)
    if origin is tuple and isinstance(value, list):
        return tuple(value)
    if hint in (int, float, bool, str) and value is not None:
        if hint is float and isinstance(value, int) and not isinstance(value, bool):
            return float(value)
        if not isinstance(value, hint) or (hint is int and isinstance(value, bool)):
            raise ConfigError(f"{owner}.{name}: expected {hint.__name__}, got {value!r}")
    return value
