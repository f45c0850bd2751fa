"""The `vl-adapters` command line.

Errors in what the user gave (a config, an annotation file, a path, a name) print one line naming the
input and what was expected, and exit with status 2; `--debug` (or VLA_DEBUG=1) shows the traceback.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import warnings

# The modules that add subcommands, in the order `--help` lists them; each has register(subparsers).
SUBCOMMAND_MODULES = (
    "vl_adapters.train.cli",  # train, eval, extract
    "vl_adapters.apps.search",  # search
    "vl_adapters.apps.answer",  # answer
    "vl_adapters.bench.cli",  # bench
    "vl_adapters.backbones.pretrain",  # pretrain-backbone
    "vl_adapters.adapters.tem_adapter.convert",  # convert-tem-adapter
)

INPUT_ERROR, RUN_ERROR = 2, 1  # exit statuses


def _cmd_list(args: argparse.Namespace) -> int:
    from vl_adapters.core.registry import ADAPTERS, BACKBONES, SAMPLERS, TASKS

    for registry in (ADAPTERS, BACKBONES, TASKS, SAMPLERS):
        names = registry.names()
        print(f"{registry.kind}: {', '.join(names) if names else '(none)'}")
        if registry is ADAPTERS and args.verbose:
            import textwrap

            for name in names:
                cls = registry.get(name)
                head, about = f"  {name:28s} stage={cls.stage:9s} ", first_sentence(cls.__doc__ or "")
                print(textwrap.fill(about, width=120, initial_indent=head, subsequent_indent=" " * len(head),
                                    break_on_hyphens=False) if about else head.rstrip())
    from vl_adapters.data import DATASETS

    print(f"dataset: {', '.join(sorted(DATASETS))}")
    return 0


def first_sentence(doc: str) -> str:
    """The first sentence of a docstring's first paragraph, whole, however its lines were wrapped."""
    import re

    paragraph = " ".join(doc.strip().split("\n\n")[0].split())
    end = re.search(r"(?<!\bal)(?<!\be\.g)(?<!\bi\.e)\.(?=\s|$)", paragraph)  # not "et al." nor "e.g."
    return paragraph[:end.end()] if end else paragraph


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vl-adapters", description=__doc__.splitlines()[0])
    parser.add_argument("--debug", action="store_true",
                        help="show the full traceback of an error (also VLA_DEBUG=1)")
    sub = parser.add_subparsers(dest="command", required=True)
    listing = sub.add_parser("list", help="list registered adapters, backbone families, tasks and samplers")
    listing.add_argument("-v", "--verbose", action="store_true", help="each adapter with its stage and the first sentence of its description")
    listing.set_defaults(func=_cmd_list)
    for name in SUBCOMMAND_MODULES:
        importlib.import_module(name).register(sub)
    for command in sub.choices.values():  # `--debug` after the subcommand works too
        command.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    return parser


def input_errors() -> tuple[type[BaseException], ...]:
    """Exceptions that mean "what the user gave is wrong" (not a bug): one line and exit status 2."""
    from vl_adapters.backbones.base import BackboneWeightsError
    from vl_adapters.bench.config import BenchError
    from vl_adapters.core.config import ConfigError
    from vl_adapters.core.features import FeatureShapeError
    from vl_adapters.core.hub import PickleRefusedError
    from vl_adapters.core.model import BackboneMismatchError, CacheRefusedError, CompositionError
    from vl_adapters.core.optional import MissingPackageError
    from vl_adapters.core.registry import RegistryError
    from vl_adapters.data.base import AnnotationError, BadVideoError
    from vl_adapters.data.cache import StaleCacheError
    from vl_adapters.train.data import BadVideoError as TrainBadVideoError
    from vl_adapters.train.data import NothingLeftError

    return (BackboneWeightsError, BenchError, ConfigError, FeatureShapeError, BackboneMismatchError,
            CacheRefusedError, CompositionError, RegistryError, AnnotationError, BadVideoError, TrainBadVideoError,
            NothingLeftError, StaleCacheError, FileNotFoundError, NotADirectoryError, PickleRefusedError,
            MissingPackageError)


def one_line(error: BaseException) -> str:
    text = " ".join(str(error.args[0] if isinstance(error, KeyError) and error.args else error).split())
    return text or type(error).__name__


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.debug or os.environ.get("VLA_DEBUG", "") not in ("", "0"):
        return args.func(args)
    from vl_adapters.train.trainer import NonFiniteError

    def show(message, category, filename, lineno, file=None, line=None):  # one line, as errors are
        print(f"vl-adapters {args.command}: warning: {message}", file=file or sys.stderr)

    try:
        with warnings.catch_warnings():
            warnings.showwarning = show
            return args.func(args)
    except input_errors() as error:
        print(f"vl-adapters {args.command}: {one_line(error)}", file=sys.stderr)
        return INPUT_ERROR
    except NonFiniteError as error:
        print(f"vl-adapters {args.command}: {one_line(error)}", file=sys.stderr)
        return RUN_ERROR


if __name__ == "__main__":
    # `python -m vl_adapters.cli` (how torchrun starts it) runs this file as __main__; the subcommands
    # register with the package's own module, so run that one's main.
    from vl_adapters.cli import main as package_main

    sys.exit(package_main())
