"""Sample construction as method.md section 1 describes it, in array arithmetic.

A *window* is one sample before rendering: a target interaction and the up-to-10 items the
same user interacted with just before it. Windows are built for every user, sorted globally
by the target's time, split temporally, and only the kept ones are rendered to text.

Two splits exist. ``global-time`` cuts the global order: the last windows are the test set,
the ones before them the validation set (:func:`split_sizes`). ``user-time`` cuts each user's
own sequence: a user's last window is a test sample and the one before it a validation
sample (:func:`user_time_split`), so every user with windows is tested once.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from goracs.data.table import Interactions
from goracs.errors import GoracsError

DEFAULT_SPLIT = 5000
MAX_SPLIT_FRACTION = 0.1
MAX_HISTORY = 10
SPLIT_KINDS = ("global-time", "user-time")
#: How SeqRec test negatives are drawn among the items a user never interacted with:
#: uniformly, or in proportion to each item's interactions in the whole data.
NEGATIVE_SAMPLING = ("uniform", "popularity")
# Stream numbers under ``seed`` for each seeded draw: the training subset uses
# ``default_rng(seed)``, the negatives ``default_rng([seed, 1])``, and the user-time
# validation and test subsets the two streams below.
VALID_STREAM = 2
TEST_STREAM = 3


@dataclass
class Windows:
    """Windows in global temporal order.

    ``order`` lists the table's rows user by user, each user in time order. Window ``k``
    targets row ``order[pos[k]]``; its history is rows ``order[pos[k] - hist_len[k]:pos[k]]``,
    oldest first. Windows are sorted by (target time, target row).
    """

    order: np.ndarray
    pos: np.ndarray
    hist_len: np.ndarray

    def __len__(self) -> int:
        return int(self.pos.shape[0])

    def target_rows(self) -> np.ndarray:
        return self.order[self.pos]

    def history_rows(self, k: int) -> np.ndarray:
        p = int(self.pos[k])
        return self.order[p - int(self.hist_len[k]):p]


def build_windows(table: Interactions, max_history: int = MAX_HISTORY) -> Windows:
    """All windows of all users, in global temporal order.

    For a user with L interactions (sorted by time, ties by file order), positions
    i = min(max_history, L - 1) ... L - 1 each give one window: target = item i,
    history = items max(0, i - max_history) ... i - 1. A user with a single interaction
    gives none (its only window would have an empty history).
    """
    if max_history < 1:
        raise GoracsError(f"max_history must be at least 1, got {max_history}")
    order, starts = table.user_sequences()
    lengths = np.diff(starts)
    owner = np.repeat(np.arange(len(lengths)), lengths)
    rank = np.arange(len(order), dtype=np.int64) - starts[owner]
    first = np.maximum(np.minimum(max_history, lengths - 1), 1)
    pos = np.flatnonzero(rank >= first[owner]).astype(np.int64)
    hist_len = np.minimum(rank[pos], max_history)
    rows = order[pos]
    # Global order: by target time, ties by the target's row number (file order), so the
    # split is reproducible however the source sorted its users.
    g = np.lexsort((rows, table.timestamp[rows]))
    return Windows(order=order, pos=pos[g], hist_len=hist_len[g])


def split_sizes(n: int, valid_size: int | None = None,
                test_size: int | None = None) -> tuple[int, int, int]:
    """(train, valid, test) counts of a global temporal split of ``n`` windows.

    A size left as None defaults to ``min(5000, n // 10)``: the paper's 5,000, scaled down so
    that small data keeps at least 80% for training. A given size is used as is; training
    must keep at least one window.
    """
    cap = min(DEFAULT_SPLIT, int(n * MAX_SPLIT_FRACTION))
    v = cap if valid_size is None else int(valid_size)
    t = cap if test_size is None else int(test_size)
    if v < 1 or t < 1:
        if valid_size is None or test_size is None:
            raise GoracsError(f"only {n} samples: too few for a train/validation/test split "
                              "(at least 10 are needed by default)")
        raise GoracsError("valid-size and test-size must be at least 1")
    if v + t >= n:
        raise GoracsError(f"valid-size {v} + test-size {t} leave no training samples out of {n}")
    return n - v - t, v, t


def subsample_train(n_train: int, max_train: int | None, seed: int) -> np.ndarray:
    """Indices of the training windows to keep, in time order.

    ``max_train`` of None (or at least ``n_train``) keeps all; otherwise a uniform draw
    without replacement with ``numpy.random.default_rng(seed)``, sorted back into time order.
    """
    if max_train is None or max_train >= n_train:
        return np.arange(n_train, dtype=np.int64)
    if max_train < 1:
        raise GoracsError(f"max-train must be positive, got {max_train}")
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(n_train, size=max_train, replace=False)).astype(np.int64)


def check_split(split: str) -> str:
    """Return ``split`` if it is one of ``SPLIT_KINDS``, else raise a one-line GoracsError."""
    if split not in SPLIT_KINDS:
        raise GoracsError(f"unknown split {split!r}; known: {', '.join(SPLIT_KINDS)}")
    return split


def user_time_split(win: Windows, window_users: np.ndarray
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Split windows per user: last window to test, the one before to validation.

    Parameters
    ----------
    win : Windows
        All windows, in global order.
    window_users : ndarray of int64, shape (len(win),)
        The user code of each window's target row.

    Returns
    -------
    pool, valid, test : ndarray of int64
        Window indices, each sorted ascending, which is global (target time, row) order.
        ``test`` holds one window per user that has any, ``valid`` one per user with at
        least two, and ``pool`` every earlier window. Within a user the windows are compared
        by position in the user's sequence, so ties in time cannot reorder them.
    """
    n = len(win)
    if window_users.shape[0] != n:
        raise ValueError("window_users must give one user per window")
    # ``order`` groups rows user by user, each user in time order, so sorting windows by
    # their position in it lines each user's windows up oldest first.
    seq = np.argsort(win.pos, kind="stable")
    u = window_users[seq]
    if n and (np.diff(u) < 0).any():
        raise ValueError("window_users do not follow the user grouping of win.order")
    last = np.ones(n, dtype=bool)
    last[:-1] = u[1:] != u[:-1]
    second = np.zeros(n, dtype=bool)
    second[:-1] = last[1:] & (u[:-1] == u[1:])
    pool = np.sort(seq[~(last | second)])
    return pool, np.sort(seq[second]), np.sort(seq[last])


def subsample_held_out(candidates: np.ndarray, size: int | None, seed: int, stream: int,
                       what: str) -> np.ndarray:
    """A seeded subset of held-out windows (user-time validation or test), in time order.

    Parameters
    ----------
    candidates : ndarray of int64
        Window indices, ascending (one per user).
    size : int or None
        How many to keep; None keeps all. More than there are candidates is an error: each
        candidate is a distinct user, and asking for more users than exist is a mistake.
    seed, stream : int
        The draw uses ``numpy.random.default_rng([seed, stream])``, a stream of its own
        that the training subset (``default_rng(seed)``) and the negatives (stream 1) do
        not share.
    what : str
        "validation" or "test", for the error message.
    """
    n = int(candidates.shape[0])
    if size is None:
        return candidates
    flag = "valid-size" if what == "validation" else "test-size"
    if size < 1:
        raise GoracsError(f"{flag} must be at least 1, got {size}")
    if size > n:
        raise GoracsError(f"{flag} {size} is more than the {n} users with a {what} sample "
                          "(user-time keeps one per user)")
    rng = np.random.default_rng([seed, stream])
    return np.sort(candidates[rng.choice(n, size=size, replace=False)])


def user_item_sets(table: Interactions) -> tuple[np.ndarray, np.ndarray]:
    """Every user's items, for excluding them from negatives.

    Returns ``(items, starts)``: user ``u``'s item codes are ``items[starts[u]:starts[u+1]]``.
    """
    order = np.lexsort((table.item_idx, table.user_idx))
    counts = np.bincount(table.user_idx, minlength=table.n_users)
    starts = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    return table.item_idx[order], starts


def sample_negatives(table: Interactions, users: np.ndarray, k: int, seed: int,
                     by: str = "uniform") -> np.ndarray:
    """``k`` distinct negative items for each entry of ``users``.

    A negative is an item the user never interacted with anywhere in the data (not in any
    split, and so never the target or a history item). Draws use
    ``numpy.random.default_rng([seed, 1])``, one call per sample in the given order.

    ``by="uniform"`` draws every such item with the same chance. ``by="popularity"`` draws
    them in proportion to their number of interactions in the whole table, so the negatives
    are as popular as the items people actually pick; under uniform negatives a rule that
    prefers popular items ranks the target high for that reason alone.

    Returns
    -------
    ndarray of int64, shape (len(users), k)
        Item codes, in draw order.
    """
    if k < 1:
        raise GoracsError(f"negatives must be at least 1, got {k}")
    if by not in NEGATIVE_SAMPLING:
        raise GoracsError(f"unknown negative sampling {by!r}; known: "
                          f"{', '.join(NEGATIVE_SAMPLING)}")
    weight = (np.bincount(table.item_idx, minlength=table.n_items).astype(np.float64)
              if by == "popularity" else None)
    items, starts = user_item_sets(table)
    rng = np.random.default_rng([seed, 1])
    out = np.empty((len(users), k), dtype=np.int64)
    allowed = np.ones(table.n_items, dtype=bool)
    for j, u in enumerate(users):
        seen = items[starts[u]:starts[u + 1]]
        allowed[seen] = False
        cand = np.flatnonzero(allowed)
        allowed[seen] = True
        if cand.shape[0] < k:
            raise GoracsError(f"user {table.users[u]!r} has only {cand.shape[0]} items never "
                              f"interacted with, fewer than the {k} negatives asked for "
                              "(lower --negatives)")
        if weight is None:
            out[j] = rng.choice(cand, size=k, replace=False)
        else:
            w = weight[cand]
            out[j] = rng.choice(cand, size=k, replace=False, p=w / w.sum())
    return out


def negatives_popularity(table: Interactions, targets: np.ndarray,
                         negatives: np.ndarray) -> dict[str, float]:
    """How popular the test negatives are beside their targets (item codes; ``negatives`` has
    one row per target), by interactions in the whole table: both medians, and the share of
    negatives with more interactions than their own target. Under uniform draws most
    negatives are obscure, so that share is small and popularity alone ranks targets high."""
    count = np.bincount(table.item_idx, minlength=table.n_items)
    t = count[np.asarray(targets, dtype=np.int64)]
    n = count[np.asarray(negatives, dtype=np.int64)]
    return {"target_median_interactions": float(np.median(t)) if t.size else 0.0,
            "negative_median_interactions": float(np.median(n)) if n.size else 0.0,
            "more_popular_than_target": round(float(np.mean(n > t[:, None])), 6)
            if n.size else 0.0}

