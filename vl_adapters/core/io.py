"""Atomic writes of files and directories: nothing already written is lost to a crash at any instant.

Files are written to a temporary sibling and renamed over the target. Directories (checkpoints) are
written to a temporary sibling and swapped in by `swap_directory`, whose every intermediate state
`recover_directory` can finish and `readable_directory` can read (see `swap_directory`). Files and
directories get the modes the umask gives, as an ordinary `open`/`mkdir` would (mkstemp's 0600 would
hide a shared run directory's checkpoints from the group).
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from pathlib import Path
from typing import Any

from torch import Tensor

TMP_SUFFIX = ".tmp"  # every temporary sibling ends with it; recover_directory removes orphaned ones


def _temp_sibling(path: Path, kind: str = "") -> Path:
    return path.with_name(f".{path.name}.{kind}{os.getpid()}-{uuid.uuid4().hex[:8]}{TMP_SUFFIX}")


def _atomic(path: Path, write) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temp_sibling(path)
    descriptor = os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)  # mode from the umask
    mode = os.fstat(descriptor).st_mode & 0o777
    os.close(descriptor)
    try:
        write(str(tmp))
        if os.stat(tmp).st_mode & 0o777 != mode:  # safetensors' writer replaces the file with a 0600 one
            os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def save_tensors(path: str | Path, tensors: dict[str, Tensor], metadata: dict[str, str] | None = None) -> None:
    from safetensors.torch import save_file

    flat = {name: t.detach().contiguous().cpu() for name, t in tensors.items()}
    _atomic(Path(path), lambda tmp: save_file(flat, tmp, metadata=metadata))


def load_tensors(path: str | Path, device: str = "cpu") -> dict[str, Tensor]:
    from safetensors.torch import load_file

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such safetensors file")
    return load_file(path, device=device)


def save_text(path: str | Path, text: str) -> None:
    _atomic(Path(path), lambda tmp: Path(tmp).write_text(text))


def save_bytes(path: str | Path, data: bytes) -> None:
    _atomic(Path(path), lambda tmp: Path(tmp).write_bytes(data))


def save_json(path: str | Path, data: Any) -> None:
    save_text(path, json.dumps(data, indent=2, sort_keys=False) + "\n")


def load_json(path: str | Path) -> Any:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such JSON file")
    return json.loads(path.read_text())


# ---- directories ---------------------------------------------------------------------------------
def temp_directory(target: str | Path) -> Path:
    """A new empty temporary sibling of `target` (mode from the umask) to write a directory into."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temp_sibling(target)
    tmp.mkdir()
    return tmp


def _new(target: Path) -> Path:
    return target.with_name(f".{target.name}.new")


def _old(target: Path) -> Path:
    return target.with_name(f".{target.name}.old")


def _discard(path: Path, target: Path) -> None:
    """Remove `path` (a sibling of `target`) by first renaming it to a temporary sibling of `target`, so
    that it is either whole under its name or gone, and a crash leaves only what remove_orphans removes."""
    if path.exists():
        trash = _temp_sibling(target, "trash-")
        os.replace(path, trash)
        shutil.rmtree(trash, ignore_errors=True)


def swap_directory(complete: str | Path, target: str | Path) -> None:
    """Put the complete directory `complete` (from temp_directory) in place of `target`.

    Renames, in order: complete -> .<target>.new; target -> .<target>.old; .new -> target; then .old is
    removed. Whatever rename a crash comes after, `.new` (if present) holds the newest whole copy and
    `target` or `.old` the previous one, so `recover_directory` can always finish the swap.
    """
    complete, target = Path(complete), Path(target)
    _discard(_new(target), target)  # an older whole copy that a crash left behind
    os.replace(complete, _new(target))
    _commit(target)


def _commit(target: Path) -> None:
    if target.exists():
        _discard(_old(target), target)
        os.replace(target, _old(target))
    os.replace(_new(target), target)
    _discard(_old(target), target)


def recover_directory(target: str | Path) -> None:
    """Finish a swap a crash interrupted and remove orphaned temporary siblings of `target`."""
    target = Path(target)
    if _new(target).exists():
        _commit(target)
    elif not target.exists() and _old(target).exists():
        os.replace(_old(target), target)
    else:
        _discard(_old(target), target)
    remove_orphans(target.parent, f".{target.name}.")


def remove_orphans(directory: str | Path, prefix: str = ".") -> None:
    """Remove the temporary siblings (files or directories) a crash left in `directory`; call it only
    where no other process is writing."""
    for orphan in Path(directory).glob(f"{prefix}*{TMP_SUFFIX}"):
        if orphan.is_dir():
            shutil.rmtree(orphan, ignore_errors=True)
        else:
            orphan.unlink(missing_ok=True)


def readable_directory(target: str | Path, marker: str) -> Path:
    """Where to read `target` without changing anything: the newest whole copy holding `marker` (a
    swap's `.new`, then `target`, then `.old`); `target` itself when none has it."""
    target = Path(target)
    for candidate in (_new(target), target, _old(target)):
        if (candidate / marker).exists():
            return candidate
    return target
