"""Claims that let several processes of one experiment share its work without doubling it.

Before a process computes a unit (a group's features, or one run's stages), it claims the
unit by creating ``OUT/.claims/NAME.claim`` exclusively (``O_CREAT | O_EXCL``: of two
processes that try at once, exactly one succeeds); the file names the process and host. Other
processes skip a claimed run and wait for claimed features. A claim whose process is gone
(same host, no such pid) is stale and taken over, so a killed worker never blocks the next
invocation; the claim is removed when the unit ends, finished or failed.
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from goracs.errors import GoracsError
from goracs.io import read_json

CLAIMS_DIR = ".claims"
#: An unreadable claim younger than this is a claim being written, not a stale one.
FRESH_SECONDS = 30.0


class Claimed(Exception):
    """The unit is claimed by another live process (``holder`` describes it)."""

    def __init__(self, holder: str) -> None:
        super().__init__(holder)
        self.holder = holder


def _alive(doc: dict) -> bool:
    """Whether the claim's process may still run: another host's claims are assumed live."""
    if doc.get("host") != socket.gethostname():
        return True
    pid = doc.get("pid")
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _read(path: Path) -> dict | None:
    try:
        doc = read_json(path)
    except GoracsError:
        return None
    return doc if isinstance(doc, dict) else None


def _age(path: Path) -> float:
    try:
        return time.time() - path.stat().st_mtime
    except OSError:
        return float("inf")


def holder_of(path: Path) -> str | None:
    """A description of the live process holding ``path``'s claim, or None."""
    doc = _read(path)
    if doc is None or not _alive(doc):
        return None
    return f"pid {doc.get('pid')} on {doc.get('host')}"


@contextmanager
def claim(out: Path, name: str) -> Iterator[None]:
    """Hold the claim ``name`` under ``out`` while the block runs; raise :class:`Claimed`
    when another live process holds it."""
    folder = Path(out) / CLAIMS_DIR
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.claim"
    doc = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time()}
    for _ in range(2):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            old = _read(path)
            if old is not None and _alive(old):
                raise Claimed(f"pid {old.get('pid')} on {old.get('host')}") from None
            if old is None and _age(path) < FRESH_SECONDS:
                raise Claimed("a process that is writing its claim") from None
            # stale (its process is gone) or unreadable (its writer died mid-write)
            path.unlink(missing_ok=True)
            continue
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(doc, f)
        break
    else:
        old = _read(path) or {}
        raise Claimed(f"pid {old.get('pid')} on {old.get('host')}")
    try:
        yield
    finally:
        path.unlink(missing_ok=True)
