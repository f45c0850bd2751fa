"""Optional dependencies: import one, or say in one line which extra installs it."""

from __future__ import annotations

import importlib
from types import ModuleType


class MissingPackageError(ImportError):
    """A feature was asked for whose optional package is not installed."""


def require(module: str, *, extra: str, purpose: str) -> ModuleType:
    """`module` imported, or MissingPackageError naming `purpose` and the pip extra that installs it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        package = module.split(".")[0]
        raise MissingPackageError(f"{purpose} needs the {package} package, which is not installed "
                                  f"(pip install 'vl-adapters[{extra}]')") from None
