"""The layout of a prepared folder, which every stage after ``goracs prepare`` reads.

``DIR/train.json``, ``valid.json`` (and ``test.json``, ``items.json``) hold the records,
``DIR/meta.json`` the task and the split; ``DIR/features/`` holds what ``goracs features``
computed from them (arrays as ``.npy``) and its manifest ``features.json``, which records
digests of the records it was computed from, so that a later stage can tell stale features
from current ones.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from goracs.cache import path_fingerprint
from goracs.errors import GoracsError
from goracs.io import read_json

#: The features subfolder of a prepared folder.
FEATURES_DIR = "features"
#: The arrays selection reads from ``features/``, by their :class:`SelectionData` field.
SELECTION_ARRAYS = ("train_emb", "valid_emb", "grad_norms", "train_labels", "valid_labels")
#: Per-sample scores ``goracs features`` writes, by the name the importance baselines read
#: them under: EL2N for ``el2n``, influence for ``dealrec``.
SCORE_ARRAYS = ("el2n", "influence")


def folder_inputs(data_dir: str | os.PathLike) -> tuple[dict[str, Path], dict[str, Path]]:
    """The selection inputs a prepared folder's ``features/`` holds: the arrays by
    :class:`SelectionData` field, and the score files by score name (only those present)."""
    feats = Path(data_dir) / FEATURES_DIR
    arrays = {n: feats / f"{n}.npy" for n in SELECTION_ARRAYS if (feats / f"{n}.npy").is_file()}
    scores = {n: feats / f"{n}.npy" for n in SCORE_ARRAYS if (feats / f"{n}.npy").is_file()}
    return arrays, scores


def features_match(data_dir: str | os.PathLike, task: str,
                   require_digests: bool = True) -> dict[str, Any]:
    """The manifest of ``DIR/features`` after checking the features were computed for this
    task from the folder's current ``train.json`` and ``valid.json``; one line otherwise.

    Features from before digests were recorded are refused too (nothing says what they were
    computed from) unless ``require_digests`` is False (an experiment's folders, keyed by
    their settings, from before digests existed).
    """
    d = Path(data_dir)
    p = d / FEATURES_DIR / "features.json"
    doc = read_json(p, f"run `goracs features {d}`")
    if not isinstance(doc, dict):
        raise GoracsError(f"{p}: not a features manifest")
    rerun = f"rerun `goracs features {d}`"
    if doc.get("task") != task:
        raise GoracsError(f"{d}: its features were computed for the {doc.get('task')} task, "
                          f"not {task}; {rerun}")
    digests = doc.get("digests")
    if not isinstance(digests, dict):
        if not require_digests:
            return doc
        raise GoracsError(f"{p}: records no digest of the samples it was computed from; "
                          f"{rerun}")
    for split in ("train", "valid"):
        if digests.get(split) != path_fingerprint(d / f"{split}.json"):
            raise GoracsError(f"{d}/{split}.json changed since its features were computed; "
                              f"{rerun}")
    return doc
