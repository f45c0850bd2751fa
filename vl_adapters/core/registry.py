"""One small registry type, used for adapters, backbones, task heads and frame samplers."""

from __future__ import annotations

import difflib
from collections.abc import Callable
from importlib.metadata import entry_points
from typing import Generic, TypeVar

T = TypeVar("T")


class RegistryError(KeyError):
    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class Registry(Generic[T]):
    """Names to objects. Duplicates raise; unknown names list the known ones and the closest match.

    `entry_point_group`, when given, is read once on the first lookup so that installed plugins
    register themselves without an explicit import.
    """

    def __init__(self, kind: str, *, entry_point_group: str | None = None) -> None:
        self.kind = kind
        self.entry_point_group = entry_point_group
        self._items: dict[str, T] = {}
        self._lazy: dict[str, tuple[str, tuple[str, ...]]] = {}  # name -> (module, packages it needs)
        self._plugins_loaded = entry_point_group is None

    def register_lazy(self, name: str, module: str, *, requires: tuple[str, ...] = ()) -> None:
        """Reserve `name` for what importing `module` registers; the import waits for the first get().
        `requires` names optional packages the module imports: without them the name is not listed,
        and get() says which package is missing."""
        self._lazy[name] = (module, tuple(requires))

    def register(self, name: str, obj: T | None = None) -> Callable[[T], T] | T:
        """Register `obj` under `name`; usable as a decorator when `obj` is omitted."""
        if not isinstance(name, str) or not name.isidentifier():
            raise RegistryError(f"{self.kind} name must be a Python identifier like 'my_aligner', got {name!r}")

        def add(item: T) -> T:
            reserved = self._lazy.get(name, (None,))[0]
            owner = getattr(item, "__module__", "")
            if reserved is not None and owner != reserved and not owner.startswith(reserved + "."):
                raise RegistryError(
                    f"{self.kind} name {name!r} is already taken (by {reserved}); pick another name for yours"
                )
            if name in self._items and self._items[name] is not item:
                owner = getattr(self._items[name], "__module__", "?")
                raise RegistryError(
                    f"{self.kind} name {name!r} is already taken (by {owner}); pick another name for yours"
                )
            self._items[name] = item
            return item

        return add if obj is None else add(obj)

    def registered(self, name: str) -> T | None:
        """What is registered under `name` so far, without loading plugins (None if nothing)."""
        return self._items.get(name)

    def unregister(self, name: str) -> None:
        self._items.pop(name, None)

    def get(self, name: str) -> T:
        self._load_plugins()
        if name not in self._items and name in self._lazy:
            self._import_lazy(name)
        if name not in self._items:
            known = self.names()
            close = difflib.get_close_matches(name, known, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise RegistryError(f"unknown {self.kind} {name!r}.{hint} Known: {', '.join(known) or '(none)'}")
        return self._items[name]

    def names(self) -> list[str]:
        self._load_plugins()
        return sorted(set(self._items) | {n for n in self._lazy if not self._missing(n)})

    def __contains__(self, name: str) -> bool:
        self._load_plugins()
        return name in self._items or (name in self._lazy and not self._missing(name))

    def _missing(self, name: str) -> list[str]:
        from importlib.util import find_spec

        return [p for p in self._lazy[name][1] if find_spec(p) is None]

    def _import_lazy(self, name: str) -> None:
        import importlib
        import warnings

        module, _ = self._lazy[name]
        missing = self._missing(name)
        if missing:
            raise RegistryError(f"{self.kind} {name!r} needs the package(s) {missing}, which are not installed "
                                "(pip install 'vl-adapters[all]' installs every optional dependency)")
        with warnings.catch_warnings():
            # torch_geometric calls torch.jit.script at import, which torch deprecates: nothing a user can
            # act on, so it is not printed.
            warnings.filterwarnings("ignore", message=r".*torch\.jit\.script.* is deprecated", category=FutureWarning)
            importlib.import_module(module)

    def _load_plugins(self) -> None:
        if self._plugins_loaded:
            return
        self._plugins_loaded = True
        for entry in entry_points(group=self.entry_point_group):
            try:
                entry.load()  # importing the module runs its @register decorators
            except Exception as error:  # a broken plugin must not break the library
                import warnings

                warnings.warn(f"plugin {entry.name!r} ({entry.value}) failed to load: {error}", stacklevel=3)


ADAPTERS: Registry = Registry("adapter", entry_point_group="vl_adapters.adapters")
BACKBONES: Registry = Registry("backbone family")
TASKS: Registry = Registry("task")
SAMPLERS: Registry = Registry("frame sampler")
