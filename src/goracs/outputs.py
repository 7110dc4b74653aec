"""Where a command writes: checked before any work, filled beside, swapped in whole.

One policy for every command that writes a folder (``prepare``, ``features``, ``select``,
``finetune``, ``evaluate``):

* Before any work, the output folder is checked: it is not a file, a symbolic link, a mount
  point, the current folder or one above it; it holds none of the command's inputs; it can be
  created (its nearest existing ancestor is a folder this process can create folders in); and
  it is new, empty, or holds the outputs of an earlier run of the same command.
* Outputs of an earlier run are recognised by the command's manifest (``meta.json``,
  ``features.json``, ``selection.json``, ``training.json``, ``metrics.json``): it must read
  as that command's manifest, and every other entry must be a name that command writes, a
  goracs output folder itself (recursively, e.g. ``features/`` inside a prepared folder), or
  a leftover of an interrupted goracs run (names carrying ``.goracs-``). Anything else -- a
  file goracs did not write, another command's outputs, an unreadable manifest -- and the
  folder is refused with one line.
* The new outputs are written into ``.NAME.goracs-partial`` beside the folder (where a
  resumable command also keeps its work) and swapped in when complete: the earlier folder
  goes whole, so old and new outputs never mix, and a run that fails leaves the earlier
  outputs as they were.

goracs never deletes a file it did not write: the swap re-checks the folder it replaces.
"""

from __future__ import annotations

import fnmatch
import os
import shutil
import signal
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from goracs.errors import GoracsError
from goracs.io import TMP_TAG, read_json

#: Points of the write path where ``GORACS_FAULT`` can kill the process (fault injection for
#: the test suite, tests/faults): the partial folder created, the outputs written into it,
#: the earlier folder moved aside, the new one swapped in.
FAULT_POINTS = ("begun", "written", "moved-old", "swapped")

PARTIAL = ".goracs-partial"
OLD = ".goracs-old-"
PROBE = ".goracs-probe-"
#: How deep nested goracs outputs are looked into when deciding what a folder holds.
MAX_NESTING = 8


@dataclass(frozen=True)
class Kind:
    """The outputs one command writes into its folder.

    Attributes
    ----------
    command : str
        The ``goracs`` command.
    manifest : str
        The file written last, whose presence marks a complete output.
    names : frozenset of str
        Every other entry the command writes (files or, like ``cache``, folders).
    patterns : tuple of str
        Shell patterns of further entries it writes (work folders keyed by a digest).
    keys : tuple of str
        Keys its manifest always holds (how the manifest is told from another JSON file).
    """

    command: str
    manifest: str
    names: frozenset[str]
    patterns: tuple[str, ...] = ()
    keys: tuple[str, ...] = ()

    def owns(self, name: str) -> bool:
        """Whether an entry named ``name`` is one this command writes."""
        return (name == self.manifest or name in self.names
                or any(fnmatch.fnmatchcase(name, p) for p in self.patterns))

    def is_manifest(self, doc: Any) -> bool:
        """Whether a parsed manifest is this command's."""
        return isinstance(doc, dict) and all(k in doc for k in self.keys)


KINDS: dict[str, Kind] = {k.command: k for k in (
    Kind("prepare", "meta.json",
         frozenset({"train.json", "valid.json", "test.json", "items.json",
                    "experiment-prepare.json"}),
         keys=("format", "counts")),
    Kind("features", "features.json",
         frozenset({"train_emb.npy", "valid_emb.npy", "grad_norms.npy", "el2n.npy",
                    "influence.npy", "train_labels.npy", "valid_labels.npy",
                    "llm_train_emb.npy", "llm_valid_emb.npy", "cache"}),
         keys=("task", "n_train", "files")),
    Kind("select", "selection.json", frozenset({"coreset.json"}), keys=("method", "indices")),
    Kind("finetune", "training.json",
         frozenset({"adapter_config.json", "adapter_model.safetensors"}),
         keys=("kind", "settings")),
    Kind("evaluate", "metrics.json", frozenset({"predictions.jsonl", "run.json"}),
         patterns=(".work-*",), keys=("task", "metrics")),
)}


def is_leftover(name: str) -> bool:
    """Whether ``name`` is a leftover of an interrupted goracs run: a partial or replaced
    output folder, an atomic write's temporary file, a write probe, or fine-tuning
    checkpoints (``.NAME.checkpoints``)."""
    return (name.startswith(".") and (TMP_TAG in name or name.endswith(".checkpoints")))


def recognise(folder: Path) -> tuple[Kind | None, str | None]:
    """Which command's outputs ``folder`` holds, by its manifest.

    Returns
    -------
    (kind, problem)
        The kind (None when no manifest reads as one) and, when a manifest file is there but
        does not read as its command's, why not.
    """
    problem = None
    for kind in KINDS.values():
        p = folder / kind.manifest
        if not p.is_file() or p.is_symlink():
            continue
        try:
            doc = read_json(p)
        except GoracsError as exc:
            why = str(exc).removeprefix(f"{p}: ")
            problem = f"its {kind.manifest} is not a goracs manifest ({why})"
            continue
        if kind.is_manifest(doc) and (kind.command != "finetune"
                                      or doc.get("kind") == "goracs finetune"):
            return kind, None
        problem = problem or f"its {kind.manifest} is not a `goracs {kind.command}` manifest"
    return None, problem


def foreign_entry(folder: Path, kind: Kind, depth: int = 0) -> str | None:
    """The first entry of ``folder`` (a path relative to it) that no goracs run wrote, or
    None when every entry is ``kind``'s, a goracs output folder, or a goracs leftover."""
    try:
        entries = sorted(os.scandir(folder), key=lambda e: e.name)
    except OSError as exc:
        return f". (unreadable: {exc.strerror})"
    for entry in entries:
        name = entry.name
        if entry.is_symlink():
            return name
        if kind.owns(name) or is_leftover(name):
            continue
        if entry.is_dir() and depth < MAX_NESTING:
            sub, _ = recognise(Path(entry.path))
            if sub is not None:
                inner = foreign_entry(Path(entry.path), sub, depth + 1)
                if inner is None:
                    continue
                return f"{name}/{inner}"
        return name
    return None


def fault_point(name: str) -> None:
    """Kill this process with SIGKILL, as ``kill -9`` would, when the environment variable
    ``GORACS_FAULT`` names ``name``; do nothing otherwise (the normal case)."""
    if os.environ.get("GORACS_FAULT") == name:
        os.kill(os.getpid(), signal.SIGKILL)


class OutputPlace:
    """The output folder of one command run (see the module docstring for the policy).

    Parameters
    ----------
    out : path
        The folder the outputs go to.
    command : str
        The command writing it (a key of :data:`KINDS`).
    inputs : iterable of paths
        Files and folders the run reads: none may be, or lie inside, ``out``.
    flag : str
        How messages name the folder (``--out``, or ``DIR/features``).
    """

    def __init__(self, out: str | os.PathLike, command: str, *,
                 inputs: tuple[str | os.PathLike | None, ...] | list[Any] = (),
                 flag: str = "--out") -> None:
        self.given = str(out)
        self.out = Path(os.path.abspath(out))
        self.kind = KINDS[command]
        self.inputs = [Path(p) for p in inputs if p is not None]
        self.label = f"{flag} {self.given}" if flag else self.given
        self.replaces = False

    @property
    def partial(self) -> Path:
        """The folder the new outputs are written into before the swap."""
        return self.out.parent / f".{self.out.name}{PARTIAL}"

    def _fail(self, why: str) -> GoracsError:
        return GoracsError(f"{self.label}: {why}")

    def check(self) -> OutputPlace:
        """Refuse, with one line, a place this command must not write; return ``self``."""
        out = self.out
        if out.is_symlink():
            raise self._fail("is a symbolic link; give the folder it points to")
        if out.parent == out:
            raise self._fail("is the root folder; give a folder to create")
        check_place(out, self._fail, self.inputs)
        real = out.resolve()
        cwd = Path.cwd().resolve()
        if real == cwd or real in cwd.parents:
            raise self._fail("is the current folder or holds it; give a folder to create "
                             "(its earlier contents are replaced whole)")
        if out.is_dir() and os.path.ismount(out):
            raise self._fail("is a mount point; give a folder inside it")
        if out.is_dir():
            self._check_contents()
        return self

    def _check_contents(self) -> None:
        try:
            entries = sorted(os.listdir(self.out))
        except OSError as exc:
            raise self._fail(f"cannot be read ({exc.strerror})") from None
        if not entries:
            return
        kind, problem = recognise(self.out)
        if kind is None:
            if problem is not None:
                raise self._fail(f"{problem}; remove it or choose another folder")
            raise self._fail(f"is not empty and holds no goracs output ({entries[0]}); "
                             "choose a new or empty folder")
        if kind.command != self.kind.command:
            raise self._fail(f"holds the outputs of `goracs {kind.command}` "
                             f"({kind.manifest}); choose another folder")
        bad = foreign_entry(self.out, kind)
        if bad is not None:
            raise self._fail(f"holds {bad}, which goracs did not write; remove it or choose "
                             "another folder")
        self.replaces = True

    def begin(self, keep: tuple[str, ...] | set[str] = ()) -> Path:
        """Create (or reuse) the partial folder, emptied of everything but ``keep``; return
        it. The work of an interrupted run kept there (``keep``) lets a rerun resume."""
        part = self.partial
        try:
            part.parent.mkdir(parents=True, exist_ok=True)
            if part.is_dir() and not part.is_symlink():
                for entry in os.scandir(part):
                    if entry.name not in keep:
                        _remove(Path(entry.path))
            else:
                if part.is_symlink() or part.exists():
                    part.unlink()
                part.mkdir()
        except OSError as exc:
            raise self._fail(f"cannot write beside it ({exc.strerror or exc})") from None
        fault_point("begun")
        return part

    def commit(self) -> Path:
        """Swap the complete partial folder in, replacing the earlier outputs whole; return
        the output folder."""
        part, out = self.partial, self.out
        if not (part / self.kind.manifest).is_file():
            raise AssertionError(f"{part} holds no {self.kind.manifest}")
        fault_point("written")
        for stale in out.parent.glob(f".{glob_escape(out.name)}{OLD}*"):
            _remove(stale)
        if out.is_dir() and not out.is_symlink():
            if not os.listdir(out):
                out.rmdir()
            else:
                kind, _ = recognise(out)
                bad = (None if kind is not None and kind.command == self.kind.command
                       else ".")
                bad = bad or foreign_entry(out, self.kind)
                if bad is not None:
                    raise self._fail(f"changed while this run worked ({bad} is not a goracs "
                                     f"{self.kind.command} output); the new outputs are "
                                     f"left in {part}")
                old = out.parent / f".{out.name}{OLD}{os.getpid()}"
                os.rename(out, old)
                fault_point("moved-old")
                os.rename(part, out)
                fault_point("swapped")
                shutil.rmtree(old, ignore_errors=True)
                return out
        elif out.exists() or out.is_symlink():
            raise self._fail(f"appeared as a file while this run worked; the new outputs are "
                             f"left in {part}")
        os.rename(part, out)
        return out

    def discard(self) -> None:
        """Remove the partial folder (a run that must leave nothing behind)."""
        _remove(self.partial)


def check_place(out: Path, fail: Callable[[str], GoracsError],
                inputs: list[Path] | tuple[Path, ...] = (), beside: bool = True) -> None:
    """The checks every output folder gets, whatever its command: not a file, none of
    ``inputs`` inside it, and creatable (its nearest existing ancestor is a folder this
    process can create folders in). ``beside`` probes the folder's parent (where a partial
    folder goes), otherwise the folder itself when it exists. ``fail`` turns a reason into
    the error raised."""
    if out.exists() and not out.is_dir():
        raise fail("is a file, not a folder")
    real = out.resolve()
    for p in inputs:
        rp = Path(p).resolve()
        if rp == real or real in rp.parents:
            raise fail(f"holds the input {p}; write the outputs elsewhere")
    anc = out if out.is_dir() and not beside else out.parent
    while not anc.exists() and anc.parent != anc:
        anc = anc.parent
    if not anc.is_dir():
        raise fail(f"cannot be created: {anc} is a file")
    probe_writable(anc, fail)


def probe_writable(folder: Path, fail: Any = None) -> None:
    """Refuse, with one line, a folder this process cannot create folders in (a read-only
    mount, missing permissions), by creating and removing one."""
    try:
        d = tempfile.mkdtemp(prefix=PROBE, dir=folder)
        os.rmdir(d)
    except OSError as exc:
        why = f"cannot write in {folder} ({exc.strerror or exc})"
        raise (fail(why) if fail is not None else GoracsError(why)) from None


def glob_escape(name: str) -> str:
    """``name`` with the shell-pattern characters escaped."""
    return "".join(f"[{c}]" if c in "*?[" else c for c in name)


def _remove(p: Path) -> None:
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p)
    elif p.exists() or p.is_symlink():
        p.unlink()
