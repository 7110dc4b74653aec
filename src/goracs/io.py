"""Safe array loading and atomic output writing (the I/O edge of the project)."""

from __future__ import annotations

import json
import os
import stat
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from goracs.errors import GoracsError


def load_array(path: str | os.PathLike, name: str | None = None) -> np.ndarray:
    """Load one array from ``.npy`` (never unpickled) or ``.safetensors``.

    A safetensors file must hold exactly one tensor unless ``name`` picks one.
    """
    p = Path(path)
    if not p.is_file():
        raise GoracsError(f"file not found: {p}")
    try:
        if p.suffix == ".npy":
            return np.load(p, allow_pickle=False)
        if p.suffix == ".safetensors":
            from safetensors.numpy import load_file

            tensors = load_file(str(p))
            if name is not None:
                if name not in tensors:
                    raise GoracsError(f"{p}: no tensor named {name!r}")
                return tensors[name]
            if len(tensors) != 1:
                raise GoracsError(
                    f"{p}: holds {len(tensors)} tensors ({', '.join(sorted(tensors))}); "
                    "expected exactly one"
                )
            return next(iter(tensors.values()))
    except GoracsError:
        raise
    except Exception as exc:  # numpy/safetensors raise many types for a corrupt file
        raise GoracsError(f"cannot read {p}: {type(exc).__name__}: {exc}") from None
    raise GoracsError(f"{p}: unsupported array format (use .npy or .safetensors)")


def read_json(path: str | os.PathLike, what: str = "") -> Any:
    """Parse a JSON file; a missing, unreadable or malformed file is a :class:`GoracsError`.

    ``what`` says in the message what the file should have been (e.g. "the item catalogue").
    """
    p = Path(path)
    if not p.is_file():
        raise GoracsError(f"file not found: {p}" + (f" ({what})" if what else ""))
    try:
        with open(p, encoding="utf-8") as f:
            return json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise GoracsError(f"{p}: not valid JSON ({exc})") from None
    except OSError as exc:
        raise GoracsError(f"cannot read {p}: {exc}") from None


def read_jsonl(path: str | os.PathLike, what: str = "") -> list[Any]:
    """Parse a JSON-lines file (blank lines skipped) as :func:`read_json` parses a JSON file."""
    p = Path(path)
    if not p.is_file():
        raise GoracsError(f"file not found: {p}" + (f" ({what})" if what else ""))
    try:
        with open(p, encoding="utf-8") as f:
            return [json.loads(line) for line in f if line.strip()]
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise GoracsError(f"{p}: not valid JSON lines ({exc})") from None
    except OSError as exc:
        raise GoracsError(f"cannot read {p}: {exc}") from None


def _umask_mode() -> int:
    """The mode a plainly created file gets (0o666 less the umask); mkstemp would give 0o600."""
    mask = os.umask(0)
    os.umask(mask)
    return (stat.S_IRUSR | stat.S_IWUSR | stat.S_IRGRP | stat.S_IWGRP | stat.S_IROTH
            | stat.S_IWOTH) & ~mask


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and a rename."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp", dir=p.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, _umask_mode())
        os.replace(tmp, p)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_json(path: str | os.PathLike, obj: Any, indent: int | None = 1) -> None:
    """Serialise ``obj`` as JSON and write it atomically."""
    atomic_write_text(path, json.dumps(obj, indent=indent, ensure_ascii=False) + "\n")


def atomic_save_npy(path: str | os.PathLike, arr: np.ndarray) -> None:
    """Save an array as ``.npy`` atomically."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp.npy", dir=p.parent)
    os.close(fd)
    try:
        np.save(tmp, np.asarray(arr), allow_pickle=False)
        os.chmod(tmp, _umask_mode())
        os.replace(tmp, p)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
