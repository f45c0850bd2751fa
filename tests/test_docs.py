"""Every repository path, `vl-adapters` command and flag, and Python name that README.md, docs/ and the
bench's result pages (benchmarks/results/) mention exists: paths are files or directories of the
repository (or of vl_adapters/, for "data/cache.py"), commands and flags are in the parser that
vl_adapters/cli.py builds (a benchmarks/ script's flags in that script), `vl_adapters.*` names import and
`vla.*` names are attributes of the package, and a bare "X.md" is a document of the repository.

A failure lists each offence as `doc:line: what`. Docs are found by glob, so new ones are checked too.
"""

from __future__ import annotations

import argparse
import importlib
import re
import shlex
import subprocess
from pathlib import Path

import pytest

import vl_adapters

ROOT = Path(__file__).resolve().parents[1]
DOCS = sorted({ROOT / "README.md", *ROOT.glob("docs/*.md"), *ROOT.glob("docs/*/*.md"),
               *ROOT.glob("benchmarks/results/**/*.md")})


TOP_LEVEL = {p.name for p in ROOT.iterdir() if not p.name.startswith(".")} | {".ci"}
PATH_TOKEN = re.compile(r"(?<![\w./<-])((?:\.ci|vl_adapters|docs|tests|benchmarks|examples)/[\w./*-]*[\w/*])")
PACKAGE_PATH_TOKEN = re.compile(r"(?<![\w./<-])((?:core|data|train|tasks|backbones|adapters|bench)/[\w/.-]*\.py)")
MODULE_TOKEN = re.compile(r"(?<![\w./])(vl_adapters(?:\.\w+)+)")
VLA_TOKEN = re.compile(r"(?<![\w.])vla\.(\w+)")
MARKDOWN_FILE = re.compile(r"(?<![\w./<-])([A-Za-z][\w-]*\.md)\b")
COMMAND = re.compile(r"(?:\bvl-adapters|\bvl_adapters\.cli)\s+([^`|;&#]*)")
FLAG = re.compile(r"(--[a-z][a-z0-9-]*)")
SCRIPT_COMMAND = re.compile(r"\bpython3?\s+(benchmarks/[\w/.-]+\.py)([^`|;&#]*)")


def _tracked_files() -> set[str]:
    try:
        out = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):  # not a git checkout: every file on disk counts
        return {str(p.relative_to(ROOT)) for p in ROOT.rglob("*") if p.is_file()}
    return set(out.splitlines())


TRACKED = _tracked_files()
TRACKED_NAMES = {Path(p).name for p in TRACKED}


def _script_flags() -> dict[str, set[str]]:
    """The "--flag" strings each benchmarks/ script's source holds (what its argparse accepts)."""
    return {str(path.relative_to(ROOT)): set(re.findall(r"[\"'](--[a-z][a-z0-9-]*)[\"']", path.read_text()))
            for path in sorted(ROOT.glob("benchmarks/*.py"))}


SCRIPT_FLAGS = _script_flags()


def _parser_options() -> tuple[dict[str, set[str]], set[str]]:
    """{subcommand: its option strings} and the top-level options, from the CLI's own parser."""
    from vl_adapters.cli import build_parser

    parser = build_parser()
    top = {s for action in parser._actions for s in action.option_strings}
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return {name: {s for action in p._actions for s in action.option_strings} | top
            for name, p in sub.choices.items()}, top


def _logical_lines(text: str):
    """(line number, text) with shell continuations (a trailing backslash) joined."""
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        start, line = i + 1, lines[i]
        while line.rstrip().endswith("\\") and i + 1 < len(lines):
            i += 1
            line = line.rstrip()[:-1] + " " + lines[i].strip()
        yield start, line
        i += 1


def _path_exists(token: str) -> bool:
    token = token.rstrip("/.")
    if "*" in token:
        return any(Path(p).match(token) or p.startswith(token.split("*")[0]) for p in TRACKED)
    return (ROOT / token).exists() or any(p == token or p.startswith(token + "/") for p in TRACKED)


def _check_command(args: str, commands: dict[str, set[str]], top: set[str]) -> list[str]:
    try:
        words = shlex.split(args, comments=True)
    except ValueError:
        words = args.split()
    words = [w for w in words if w not in top]
    if not words or not re.fullmatch(r"[a-z][a-z-]*", words[0]):
        return []  # a placeholder ("<command>", "..."), a message ("vl-adapters train: ..."), prose
    name = words[0]
    if name not in commands:
        return [f"`vl-adapters {name}`: no such subcommand (known: {', '.join(sorted(commands))})"]
    known = commands[name]
    return [f"`vl-adapters {name} {w.split('=')[0]}`: no such option of {name}"
            for w in words[1:] if w.startswith("--") and w.split("=")[0] not in known]


def offences(doc: Path, commands: dict[str, set[str]], top: set[str]) -> list[tuple[int, str]]:
    """(line, what) for each path, command, flag or Python name of `doc` that does not exist."""
    every_flag = set().union(*commands.values())
    found: list[tuple[int, str]] = []
    for number, line in _logical_lines(doc.read_text()):
        for token in PATH_TOKEN.findall(line):
            if not _path_exists(token):
                found.append((number, f"{token}: no such file or directory in the repository"))
        for token in PACKAGE_PATH_TOKEN.findall(line):  # "data/text_cache.py": a path inside the package
            if not _path_exists(f"vl_adapters/{token}"):
                found.append((number, f"{token}: no such file in vl_adapters/"))
        for name in MARKDOWN_FILE.findall(line):
            if name not in TRACKED_NAMES:
                found.append((number, f"{name}: no such document in the repository"))
        for module in MODULE_TOKEN.findall(line):
            problem = _import_problem(module)
            if problem:
                found.append((number, f"{module}: {problem}"))
        for name in VLA_TOKEN.findall(line):
            if not hasattr(vl_adapters, name):
                found.append((number, f"vla.{name}: vl_adapters has no attribute {name!r}"))
        for args in COMMAND.findall(line):
            found.extend((number, problem) for problem in _check_command(args, commands, top))
        for script, args in SCRIPT_COMMAND.findall(line):
            known = SCRIPT_FLAGS.get(script, set())
            found.extend((number, f"`python {script} {flag}`: the script has no such option")
                         for flag in FLAG.findall(args) if known and flag not in known)
        for span in re.findall(r"`(--[^`]*)`", line):  # a flag named on its own: a subcommand or script has it
            flag = FLAG.match(span)
            if flag and flag.group(1) not in every_flag | set().union(*SCRIPT_FLAGS.values()):
                found.append((number, f"`{flag.group(1)}`: no vl-adapters subcommand or benchmarks/ script has "
                                      "this option"))
    return found


def _import_problem(dotted: str) -> str | None:
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for attribute in parts[cut:]:
            if not hasattr(obj, attribute):
                return f"{'.'.join(parts[:cut])} has no attribute {attribute!r}"
            obj = getattr(obj, attribute)
        return None
    return "does not import"


def test_every_path_command_flag_and_name_in_the_docs_exists():
    commands, top = _parser_options()
    seen = []
    for doc in DOCS:
        name = str(doc.relative_to(ROOT))
        seen += [f"{name}:{number}: {what}" for number, what in offences(doc, commands, top)]
    assert not seen, "docs name things that do not exist:\n" + "\n".join(seen)


@pytest.mark.parametrize("line, expected", [
    ("see `vl_adapters/no_such.py` and docs/nowhere.md", ["vl_adapters/no_such.py", "docs/nowhere.md"]),
    ("(data/no_such_cache.py)", ["data/no_such_cache.py: no such file in vl_adapters/"]),
    ("`vl-adapters trian --root x`", ["`vl-adapters trian`"]),
    ("`vl-adapters train --no-such-flag 3`", ["--no-such-flag`: no such option of train"]),
    ("the `--never-heard-of` flag", ["`--never-heard-of`"]),
    ("`python benchmarks/text_small_calls.py --through model --trough x`", ["--trough`: the script has no such"]),
    ("`vl_adapters.core.model.no_such_name`", ["has no attribute 'no_such_name'"]),
    ("`vla.no_such_function(x)`", ["vla.no_such_function"]),
    ("as DESIGN.md says", ["DESIGN.md: no such document"]),
    ("vl-adapters train --config examples/configs/msrvtt.yaml \\\n    --resume --overwrite", []),
    ("`vl_adapters.core.model.wrap`, `vla.load_adapters`, docs/training.md, `vl-adapters eval --run r`", []),
])
def test_the_checker_catches_each_kind_of_offence(tmp_path, line, expected):
    doc = tmp_path / "doc.md"
    doc.write_text(line + "\n")
    found = [what for _, what in offences(doc, *_parser_options())]
    assert len(found) == len(expected) and all(e in f for e, f in zip(expected, found, strict=True)), found
