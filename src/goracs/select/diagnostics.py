"""What a coreset looks like, whichever method chose it: arrays in, numbers out.

Three method-neutral figures put every selector on one scale, so a results table can say
whether a coreset that fine-tunes better was also closer to the validation set, harder, or
differently balanced:

- ``ot_to_valid``: exact optimal-transport cost between the coreset and the validation set
  (uniform weights, plain Euclidean distance between embeddings; no gradient term and no
  per-class split, so it means the same for every method);
- ``grad_norm_ratio``: the coreset's mean gradient norm over the pool's;
- ``positive_rate``: the share of label-1 samples in the coreset (binary tasks such as CTR).

The experiment computes them once, when it writes a selection, on the default embeddings of
the folder's features (whichever embeddings the method selected on), and stores them in the
manifest as ``"diagnostics"`` (:func:`selection_diagnostics`).
"""

from __future__ import annotations

import numpy as np
from scipy.spatial.distance import cdist

from goracs.errors import GoracsError
from goracs.select.base import SelectionData
from goracs.select.ot import exact_ot


def coreset_stats(
    indices: np.ndarray,
    train_emb: np.ndarray,
    valid_emb: np.ndarray,
    grad_norms: np.ndarray | None = None,
    train_labels: np.ndarray | None = None,
) -> dict[str, float | None]:
    """``ot_to_valid``, ``grad_norm_ratio`` and ``positive_rate`` of the pool rows
    ``indices``; a figure whose input is None is None."""
    idx = np.asarray(indices, dtype=np.int64)
    n = train_emb.shape[0]
    if idx.ndim != 1 or idx.size == 0:
        raise GoracsError("a coreset needs at least one index")
    if idx.min() < 0 or idx.max() >= n:
        raise GoracsError(f"coreset index out of range for a pool of {n}")
    # float64 throughout: these are figures to compare, not a hot loop
    dist = cdist(np.asarray(train_emb[idx], dtype=np.float64),
                 np.asarray(valid_emb, dtype=np.float64))
    out: dict[str, float | None] = {"ot_to_valid": exact_ot(dist)[0],
                                    "grad_norm_ratio": None, "positive_rate": None}
    if grad_norms is not None:
        g = np.asarray(grad_norms, dtype=np.float64)
        mean_pool = float(g.mean())
        if mean_pool > 0:
            out["grad_norm_ratio"] = float(g[idx].mean()) / mean_pool
    if train_labels is not None:
        out["positive_rate"] = float(np.mean(np.asarray(train_labels)[idx] == 1))
    return out


def selection_diagnostics(indices: np.ndarray, data: SelectionData) -> dict[str, float | None]:
    """:func:`coreset_stats` of the pool rows ``indices`` on ``data`` (its embeddings,
    gradient norms and training labels); empty when either embedding is absent."""
    if data.train_emb is None or data.valid_emb is None:
        return {}
    return coreset_stats(np.asarray(indices, dtype=np.int64), data.train_emb, data.valid_emb,
                         data.grad_norms, data.train_labels)
