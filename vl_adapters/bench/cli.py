"""`vl-adapters bench` and `vl-adapters pretrain-backbone` (registered through cli._SUBCOMMANDS)."""

from __future__ import annotations

from ..cli import _SUBCOMMANDS


def _register(subparsers) -> None:
    from ..backbones.pretrain import add_cli as add_pretrain

    add_pretrain(subparsers)
    try:
        from .run import add_cli as add_bench
    except ImportError:  # the harness is optional while it is being built
        return
    add_bench(subparsers)


if _register not in _SUBCOMMANDS:
    _SUBCOMMANDS.append(_register)
