"""Small file helpers shared by the readers: existence checks, gzip sniffing, progress."""

from __future__ import annotations

import gzip
import io
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO

from tqdm import tqdm

from goracs.errors import GoracsError

_GZIP_MAGIC = b"\x1f\x8b"


def require_file(path: str | os.PathLike, what: str = "file") -> Path:
    """Return ``path`` as a Path, or raise a one-line error if it is not a readable file."""
    p = Path(path)
    if not p.exists():
        raise GoracsError(f"{what} not found: {p}")
    if not p.is_file():
        raise GoracsError(f"{what} is not a file: {p}")
    return p


def open_text(path: Path, encoding: str = "utf-8") -> TextIO:
    """Open a text file, transparently decompressing gzip (sniffed from the magic bytes, since
    Amazon dumps circulate both compressed and not, whatever their name says)."""
    with open(path, "rb") as f:
        magic = f.read(2)
    if magic == _GZIP_MAGIC:
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding=encoding, newline="")
    return open(path, encoding=encoding, newline="")


def iter_lines(path: Path, encoding: str = "utf-8", desc: str | None = None) -> Iterator[str]:
    """Yield the lines of a (possibly gzip) text file without their line ends, with a tqdm
    line counter on stderr; decoding errors become a one-line GoracsError."""
    lineno = 0
    try:
        with open_text(path, encoding) as f:
            bar = tqdm(f, desc=desc or path.name, unit=" lines", file=sys.stderr,
                       mininterval=1.0, leave=False, disable=None)
            for line in bar:
                lineno += 1
                yield line.rstrip("\r\n")
    except UnicodeDecodeError as exc:
        raise GoracsError(f"{path}: near line {lineno + 1}: not valid {encoding} text "
                          f"({exc.reason})") from None
    except (OSError, EOFError) as exc:
        raise GoracsError(f"cannot read {path}: {exc}") from None


def read_text(path: Path, encoding: str) -> str:
    """Whole-file read with decoding errors turned into a one-line GoracsError."""
    try:
        with open_text(path, encoding) as f:
            return f.read()
    except UnicodeDecodeError as exc:
        raise GoracsError(f"{path}: not valid {encoding} text at byte {exc.start}") from None
    except (OSError, EOFError) as exc:
        raise GoracsError(f"cannot read {path}: {exc}") from None
