"""`vl-adapters bench`: registered by vl_adapters/cli.py, which lists the modules of its subcommands."""

from __future__ import annotations


def register(subparsers) -> None:
    from .run import add_cli

    add_cli(subparsers)
