"""The `vl-adapters` command line."""

from __future__ import annotations

import argparse
import sys


def _cmd_list(args: argparse.Namespace) -> int:
    import vl_adapters as vla
    from vl_adapters.core.registry import ADAPTERS, BACKBONES, SAMPLERS, TASKS

    for registry in (ADAPTERS, BACKBONES, TASKS, SAMPLERS):
        names = registry.names()
        print(f"{registry.kind}: {', '.join(names) if names else '(none)'}")
        if registry is ADAPTERS and args.verbose:
            for name in names:
                cls = registry.get(name)
                doc = (cls.__doc__ or "").strip().splitlines()[0] if cls.__doc__ else ""
                print(f"  {name:28s} stage={cls.stage:9s} {doc}")
    del vla
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vl-adapters", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    listing = sub.add_parser("list", help="list registered adapters, backbone families, tasks and samplers")
    listing.add_argument("-v", "--verbose", action="store_true", help="one line per adapter with its stage")
    listing.set_defaults(func=_cmd_list)
    _load_subcommand_modules()
    for register in _SUBCOMMANDS:
        register(sub)
    return parser


# Other modules add their subcommands here: each entry takes the subparsers object.
_SUBCOMMANDS: list = []

# Modules imported before the parser is built so that they can append to _SUBCOMMANDS.
_SUBCOMMAND_MODULES = ["vl_adapters.train.cli", "vl_adapters.bench.cli", "vl_adapters.adapters.tem_adapter.convert"]


def _load_subcommand_modules() -> None:
    import importlib

    for name in _SUBCOMMAND_MODULES:
        importlib.import_module(name)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    # `python -m vl_adapters.cli` (how torchrun starts it) runs this file as __main__; the subcommands
    # register with the package's own module, so run that one's main.
    from vl_adapters.cli import main as package_main

    sys.exit(package_main())
