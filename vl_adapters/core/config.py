"""Typed dataclass configs that round-trip to JSON (peft style)."""

from __future__ import annotations

import dataclasses
import json
import typing
from dataclasses import dataclass
from typing import Any, ClassVar


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
    """Base of every adapter config."""

    def require_at_least(self, minimum: int, *names: str) -> None:
        """Raise ConfigError naming the first field of `names` below `minimum` (for __post_init__)."""
        for name in names:
            value = getattr(self, name)
            if value < minimum:
                raise ConfigError(f"{type(self).__name__}.{name} must be >= {minimum}, got {value}")


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
