"""Atomic writes of safetensors and JSON: nothing already written is lost to a crash mid-write."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from torch import Tensor


def _atomic(path: Path, write) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
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


def save_json(path: str | Path, data: Any) -> None:
    text = json.dumps(data, indent=2, sort_keys=False)
    _atomic(Path(path), lambda tmp: Path(tmp).write_text(text + "\n"))


def load_json(path: str | Path) -> Any:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such JSON file")
    return json.loads(path.read_text())
