"""The selection package's edge: a prepared folder's inputs in, a selection's files out.

Both ``goracs select`` and the experiment's select stage read and write through here, so a
selection made either way reads the same arrays with the same checks and leaves the same
files.

Reading. A prepared folder's ``features/`` (laid out as :mod:`goracs.prepared` says) holds
the arrays selection takes, by :class:`~goracs.select.base.SelectionData` field, and the
optional per-sample scores of the importance baselines. The embeddings are the sentence
encoder's by default, or the scoring LLM's own (``embedding="llm"``: ``llm_train_emb.npy``
and ``llm_valid_emb.npy``, method.md section 2). Every array is checked as selection will
cast it (:func:`check_selection_arrays`), each fault one line naming the flag or file.

Writing. A selection is its manifest ``selection.json`` (the selector's
:meth:`~goracs.select.base.Selector.result` plus where its inputs came from) and, for a
prepared folder, the selected records ``coreset.json``. :func:`write_selection` writes them
beside the output folder, the manifest last, and swaps the folder in whole
(:class:`goracs.outputs.OutputPlace`): an earlier selection there goes with every file of it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from goracs.checks import real_array
from goracs.errors import GoracsError
from goracs.io import atomic_write_json, load_array, read_json
from goracs.outputs import OutputPlace
from goracs.prepared import FEATURES_DIR, SELECTION_ARRAYS, features_match, folder_inputs
from goracs.records import TOP_USERS, check_task, load_records, read_task, top_user_share
from goracs.select.base import SelectionData

#: The manifest of a selection.
SELECTION_FILE = "selection.json"
#: The selected records of a selection from a prepared folder, in index order.
CORESET_FILE = "coreset.json"
#: The embeddings a selection from a prepared folder may use (method.md section 2).
EMBEDDINGS = ("default", "llm")
#: The embedding fields an ``embedding`` choice replaces.
EMBEDDING_ARRAYS = ("train_emb", "valid_emb")
#: Largest embedding value accepted: the cost matrix is a float32 product of embeddings, which
#: must not overflow.
MAX_EMBEDDING = 1e15


class MissingEmbeddings(GoracsError):
    """The embedding files an ``embedding`` choice names are not in the folder's features;
    ``path`` is the first one missing."""

    def __init__(self, data_dir: Path, path: Path, embedding: str) -> None:
        self.path = path
        super().__init__(f"--embedding {embedding}: {path} not found (run `goracs features "
                         f"{data_dir} --embedding both`)")


# -- reading a prepared folder ----------------------------------------------------------------

def folder_task(data_dir: str | os.PathLike, given: str | None = None) -> str:
    """The task of a prepared folder: the one its ``meta.json`` names, or ``given`` (the
    ``--task`` flag) where it names none (a ``--dataset json`` folder); the two must agree
    when both are there."""
    data_dir = Path(data_dir)
    if given is None:
        return read_task(data_dir)
    task = check_task(given, "--task")
    if (data_dir / "meta.json").is_file():
        meta = read_json(data_dir / "meta.json")
        named = meta.get("task") if isinstance(meta, dict) else None
        if named is not None and named != task:
            raise GoracsError(f"--task {task}: {data_dir}/meta.json names the {named} task")
    return task


#: A validation set whose five heaviest users hold at least this share is worth a note: GORACS
#: matches the coreset to the validation set, so to those few people.
CONCENTRATED = 0.2


def validation_users(data_dir: str | os.PathLike, requires: Sequence[str],
                     data: SelectionData) -> dict[str, Any] | None:
    """Who the selection's validation set comes from, from the folder's ``valid.json``: its
    samples, users and the share the five heaviest users hold (``top5_share``). None for a
    method that does not look at the validation set (``requires``, its selector's), or when
    the records name no user or are not the samples ``data``'s validation embeddings hold."""
    path = Path(data_dir) / "valid.json"
    if "valid_emb" not in requires or data.valid_emb is None or not path.is_file():
        return None
    n_valid = data.valid_emb.shape[0]
    users = [r.get("user") for r in load_records(path)]
    if len(users) != n_valid or any(u is None for u in users):
        return None
    users = [str(u) for u in users]
    return {"samples": len(users), "users": len(set(users)),
            f"top{TOP_USERS}_share": round(top_user_share(users), 6)}


def concentration_note(valid_users: Mapping[str, Any] | None) -> str | None:
    """One line for a validation set held by a few people (:data:`CONCENTRATED`, some user
    giving several samples), else None."""
    if valid_users is None:
        return None
    share = valid_users[f"top{TOP_USERS}_share"]
    if share < CONCENTRATED or valid_users["users"] == valid_users["samples"]:
        return None
    return (f"note: the validation set's {valid_users['samples']:,} samples come from "
            f"{valid_users['users']:,} users, the {TOP_USERS} heaviest holding {share:.0%}; "
            "the coreset is matched to them (`goracs prepare --split user-time` gives one "
            "validation sample per user)")


def check_features(data_dir: str | os.PathLike, task: str,
                   require_digests: bool = True) -> dict[str, Any]:
    """The manifest of the folder's computed features, after checking they are there and
    were computed for ``task`` from the folder's current records (not just as many rows);
    see :func:`goracs.prepared.features_match`."""
    data_dir = Path(data_dir)
    if not (data_dir / FEATURES_DIR / "features.json").is_file():
        raise GoracsError(f"{data_dir}: no computed features (run `goracs features {data_dir}`)")
    return features_match(data_dir, task, require_digests=require_digests)


def embedding_files(data_dir: str | os.PathLike, embedding: str) -> dict[str, Path]:
    """The embedding files of an ``embedding`` choice, by field (``train_emb``,
    ``valid_emb``); :class:`MissingEmbeddings` when the LLM's are not there."""
    if embedding not in EMBEDDINGS:
        raise GoracsError(f"embedding must be one of {', '.join(EMBEDDINGS)}, got "
                          f"{embedding!r}")
    data_dir = Path(data_dir)
    feats = data_dir / FEATURES_DIR
    prefix = "" if embedding == "default" else f"{embedding}_"
    files = {f: feats / f"{prefix}{f}.npy" for f in EMBEDDING_ARRAYS}
    if embedding != "default":
        absent = [p for p in files.values() if not p.is_file()]
        if absent:
            raise MissingEmbeddings(data_dir, absent[0], embedding)
    return files


def selection_files(data_dir: str | os.PathLike, embedding: str = "default"
                    ) -> tuple[dict[str, Path], dict[str, Path]]:
    """The files a selection from a prepared folder reads: the arrays by
    :class:`SelectionData` field (those present, with the ``embedding`` choice's embeddings)
    and the score files by score name (those present)."""
    arrays, scores = folder_inputs(data_dir)
    if embedding != "default":
        arrays.update(embedding_files(data_dir, embedding))
    return arrays, scores


def flag_names() -> dict[str, str]:
    """How ``goracs select`` names each array in a message: by its flag."""
    return {f: f"--{f.replace('_', '-')}" for f in SELECTION_ARRAYS}


def check_selection_arrays(data: SelectionData, names: Mapping[str, str] | None = None,
                           score_names: Mapping[str, str] | None = None) -> None:
    """Check every array's rank and real dtype after the cast selection applies (float32
    embeddings, float64 gradient norms and scores, int64 labels), one line per fault; the
    labels are replaced by their int64 cast.

    ``names`` gives how a message names each field, ``score_names`` each score (default: the
    flags of ``goracs select``, ``--train-emb`` and ``--score NAME``).
    """
    names = {**flag_names(), **(names or {})}
    score_names = dict(score_names or {})
    for name in EMBEDDING_ARRAYS:
        arr = getattr(data, name)
        if arr is not None:
            real_array(arr, names[name], ndim=2, dtype=np.float32, max_abs=MAX_EMBEDDING)
    if data.grad_norms is not None:
        real_array(data.grad_norms, names["grad_norms"], ndim=1, non_negative=True)
    for name in ("train_labels", "valid_labels"):
        arr = getattr(data, name)
        if arr is not None:
            setattr(data, name, real_array(arr, names[name], ndim=1, dtype=np.int64))
    for key, arr in data.scores.items():
        real_array(arr, score_names.get(key, f"--score {key}"), ndim=1)


def load_selection_data(arrays: Mapping[str, str | os.PathLike | None],
                        scores: Mapping[str, str | os.PathLike] | None = None, *,
                        check: bool = True, by_path: bool = False) -> SelectionData:
    """Load the selection inputs, ``arrays`` by :class:`SelectionData` field (None or absent:
    not given) and ``scores`` by score name, and check them (:func:`check_selection_arrays`)
    unless ``check`` is False. Messages name each input by its ``goracs select`` flag, or
    with ``by_path`` by its file.

    Unchecked data is still checked by each selector's ``fit`` (presence, shapes, finite
    values: :meth:`SelectionData.validate`), for the inputs that method reads: an experiment
    loads a folder's arrays once for all its methods, and a broken array must fail only the
    methods that read it.
    """
    scores = dict(scores or {})
    # the scores first, then the arrays in field order: the first unreadable file is reported
    loaded_scores = {k: load_array(p) for k, p in scores.items()}
    # embeddings are mapped, not read: the streaming engine then pages a large pool in block
    # by block instead of holding a copy
    fields = {f: (None if arrays.get(f) is None
                  else load_array(arrays[f], mmap=f in ("train_emb", "valid_emb")))
              for f in SELECTION_ARRAYS}
    data = SelectionData(**fields, scores=loaded_scores)
    if not check:
        return data
    if by_path:
        check_selection_arrays(data, {f: str(p) for f, p in arrays.items() if p is not None},
                               {k: str(p) for k, p in scores.items()})
    else:
        check_selection_arrays(data)
    return data


def read_prepared(data_dir: str | os.PathLike, embedding: str = "default", *,
                  check: bool = True) -> SelectionData:
    """The selection inputs of a prepared folder's ``features/``, optional score files
    included, checked unless ``check`` is False (messages name the files)."""
    arrays, scores = selection_files(data_dir, embedding)
    return load_selection_data(arrays, scores, check=check, by_path=True)


def read_embeddings(data_dir: str | os.PathLike, embedding: str, *,
                    check: bool = True) -> dict[str, np.ndarray]:
    """The embeddings of an ``embedding`` choice, by field (``train_emb``, ``valid_emb``),
    checked unless ``check`` is False (messages name the files); :class:`MissingEmbeddings`
    when they are not there."""
    chosen = load_selection_data(embedding_files(data_dir, embedding), check=check,
                                 by_path=True)
    return {f: getattr(chosen, f) for f in EMBEDDING_ARRAYS}


def check_pool(records: Sequence[Any], n_train: int, data_dir: str | os.PathLike,
               hint: str = "") -> None:
    """Refuse a pool whose ``train.json`` has another number of records than its features
    have rows (``hint`` ends the message)."""
    if len(records) != n_train:
        raise GoracsError(f"{data_dir}/train.json does not match its features "
                          f"({n_train} rows){hint}")


# -- writing a selection ----------------------------------------------------------------------

def write_selection(place: OutputPlace, manifest: Mapping[str, Any],
                    records: Sequence[Any] | None = None) -> Path:
    """Write a selection into a checked output place, all or nothing: ``coreset.json`` (the
    ``records`` at the manifest's ``indices``, when given) and then ``selection.json``, beside
    the folder, swapped in whole. Returns the manifest's path."""
    part = place.begin()
    if records is not None:
        atomic_write_json(part / CORESET_FILE, [records[i] for i in manifest["indices"]])
    atomic_write_json(part / SELECTION_FILE, manifest)
    place.commit()
    return place.out / SELECTION_FILE
