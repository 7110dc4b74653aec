"""Safe array loading and atomic output writing (the I/O edge of the project)."""

from __future__ import annotations

import json
import os
import stat
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from goracs.checks import MAX_DEPTH, check_json_depth, check_nesting
from goracs.errors import GoracsError

#: Temporary files of atomic writes are named ``.NAME.goracs-XXXX.tmp``: recognisably ours,
#: so that a leftover of a killed run can be told from a user's file.
TMP_TAG = ".goracs-"


def load_array(path: str | os.PathLike, name: str | None = None,
               mmap: bool = False) -> np.ndarray:
    """Load one array from ``.npy`` (never unpickled) or ``.safetensors``.

    A safetensors file must hold exactly one tensor unless ``name`` picks one. With ``mmap``
    a ``.npy`` file is mapped read-only instead of read, so that a large pool's embeddings
    are paged in as a computation touches them rather than copied into memory.
    """
    p = Path(path)
    if not p.is_file():
        raise GoracsError(f"file not found: {p}")
    try:
        if p.suffix == ".npy":
            return np.load(p, allow_pickle=False, mmap_mode="r" if mmap else None)
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


def loads_json(text: str, source: str, max_depth: int = MAX_DEPTH) -> Any:
    """Parse JSON text nested at most ``max_depth`` levels; any fault is one
    :class:`GoracsError` naming ``source`` (a file, or a flag such as ``--param``)."""
    check_json_depth(text, source, max_depth)
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise GoracsError(f"{source}: not valid JSON ({exc})") from None
    except RecursionError:  # unreachable after the depth check; kept as a backstop
        raise GoracsError(f"{source}: nested too deeply to read") from None


def read_text(path: str | os.PathLike, what: str = "") -> str:
    """The UTF-8 text of a file; a missing, unreadable or undecodable file is one
    :class:`GoracsError` line (``what`` says what the file should have been)."""
    p = Path(path)
    if not p.is_file():
        if p.exists():
            raise GoracsError(f"not a file: {p}" + (f" ({what})" if what else ""))
        raise GoracsError(f"file not found: {p}" + (f" ({what})" if what else ""))
    try:
        with open(p, encoding="utf-8") as f:
            return f.read()
    except UnicodeDecodeError as exc:
        raise GoracsError(f"{p}: not UTF-8 text (byte {exc.start})") from None
    except OSError as exc:
        raise GoracsError(f"cannot read {p}: {exc.strerror or exc}") from None


def loads_json_or_lines(text: str, source: str, max_depth: int = MAX_DEPTH) -> Any:
    """Parse a JSON document, or, when the text is not one, JSON lines (blank lines skipped),
    nested at most ``max_depth`` levels; any fault is one :class:`GoracsError`."""
    check_json_depth(text, source, max_depth)
    try:
        return json.loads(text)
    except json.JSONDecodeError as first:
        lines = [ln for ln in text.splitlines() if ln.strip()]
        out = []
        for k, ln in enumerate(lines, start=1):
            try:
                out.append(json.loads(ln))
            except json.JSONDecodeError:
                if k == 1:
                    raise GoracsError(f"{source}: not valid JSON (line {first.lineno}: "
                                      f"{first.msg})") from None
                raise GoracsError(f"{source}: JSON lines file, line {k} is not valid "
                                  "JSON") from None
        return out


def read_json(path: str | os.PathLike, what: str = "") -> Any:
    """Parse a JSON file; a missing, unreadable, malformed or too deeply nested file is a
    :class:`GoracsError`.

    ``what`` says in the message what the file should have been (e.g. "the item catalogue").
    """
    p = Path(path)
    return loads_json(read_text(p, what), str(p))


def read_jsonl(path: str | os.PathLike, what: str = "") -> list[Any]:
    """Parse a JSON-lines file (blank lines skipped) as :func:`read_json` parses a JSON file."""
    p = Path(path)
    text = read_text(p, what)
    out = []
    for k, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        check_json_depth(line, f"{p} line {k}")
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError as exc:
            raise GoracsError(f"{p}: not valid JSON lines (line {k}: {exc.msg})") from None
    return out


def loads_toml(text: str, source: str, max_depth: int = MAX_DEPTH) -> dict[str, Any]:
    """Parse TOML text nested at most ``max_depth`` levels; any fault is one
    :class:`GoracsError` naming ``source``."""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        try:
            import tomli as tomllib  # type: ignore[no-redef]
        except ModuleNotFoundError:
            raise GoracsError("reading TOML needs Python 3.11+ or the tomli package") from None
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise GoracsError(f"{source}: not valid TOML ({exc})") from None
    except RecursionError:  # the pure-Python parser recurses once per nested array/table
        raise GoracsError(f"{source}: nested more than {max_depth} levels deep") from None
    return check_nesting(doc, source, max_depth)


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
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}{TMP_TAG}", suffix=".tmp", dir=p.parent)
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
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}{TMP_TAG}", suffix=".tmp.npy",
                                dir=p.parent)
    os.close(fd)
    try:
        np.save(tmp, np.asarray(arr), allow_pickle=False)
        os.chmod(tmp, _umask_mode())
        os.replace(tmp, p)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
