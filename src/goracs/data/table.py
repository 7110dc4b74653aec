"""The interaction table every reader produces and every sample builder consumes.

One row per interaction, kept in the order the source file lists them: that order is the
tie-break wherever two interactions share a timestamp, so it must survive every step.
Users and item titles are stored as integer codes into sorted vocabularies, which keeps a
million-row table small and makes every later step array arithmetic.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from goracs.errors import GoracsError


@dataclass
class Interactions:
    """Interactions as parallel columns, in source-file order.

    Attributes
    ----------
    users : list of str
        Sorted distinct user ids; ``user_idx`` indexes into it.
    titles : list of str
        Sorted distinct item titles (the catalogue); ``item_idx`` indexes into it. The title
        is the item's identity: two source items with the same title are one item.
    user_idx, item_idx : ndarray of int64, shape (R,)
        Codes of each row's user and item.
    rating : ndarray of float64, shape (R,)
        The rating as the source gives it.
    timestamp : ndarray of int64, shape (R,)
        Seconds since the epoch, or the row number where the source has no time
        (``time_is_file_order``).
    time_is_file_order : bool
        True when the source has no timestamps and file order stands in for time.
    source : dict
        Where the rows came from (layout, files, rows skipped and why): goes to meta.json.
    """

    users: list[str]
    titles: list[str]
    user_idx: np.ndarray
    item_idx: np.ndarray
    rating: np.ndarray
    timestamp: np.ndarray
    time_is_file_order: bool = False
    source: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.user_idx.shape[0])

    @property
    def n_users(self) -> int:
        return len(self.users)

    @property
    def n_items(self) -> int:
        return len(self.titles)

    @classmethod
    def from_columns(
        cls,
        users: Iterable[str],
        titles: Iterable[str],
        ratings: Iterable[float],
        timestamps: Iterable[int] | None,
        source: dict[str, Any] | None = None,
    ) -> Interactions:
        """Build a table from per-row values in file order.

        Parameters
        ----------
        users, titles, ratings : iterables of equal length
            One value per interaction.
        timestamps : iterable of int, or None
            None when the source has no time: the row number is used instead and
            ``time_is_file_order`` is set.
        source : dict, optional
            Provenance recorded in meta.json.
        """
        user_list = list(users)
        title_list = list(titles)
        rating_arr = np.asarray(_as_sequence(ratings), dtype=np.float64)
        n = len(user_list)
        if len(title_list) != n or rating_arr.shape[0] != n:
            raise ValueError("columns differ in length")
        if timestamps is None:
            ts = np.arange(n, dtype=np.int64)
            file_order = True
        else:
            ts = np.asarray(_as_sequence(timestamps), dtype=np.int64)
            if ts.shape[0] != n:
                raise ValueError("columns differ in length")
            file_order = False
        if n == 0:
            raise GoracsError("no interactions were read (empty or unusable input)")
        if not np.isfinite(rating_arr).all():
            raise GoracsError("ratings contain NaN or inf")
        user_vocab, user_idx = _factorize(user_list)
        title_vocab, item_idx = _factorize(title_list)
        return cls(
            users=user_vocab,
            titles=title_vocab,
            user_idx=user_idx,
            item_idx=item_idx,
            rating=rating_arr,
            timestamp=ts,
            time_is_file_order=file_order,
            source=dict(source or {}),
        )

    def user_sequences(self) -> tuple[np.ndarray, np.ndarray]:
        """Rows grouped by user, each user's rows sorted by (time, file order).

        Returns
        -------
        order : ndarray of int64, shape (R,)
            Row numbers: user by user, each user's interactions in time order. The user order
            follows the sorted user vocabulary.
        starts : ndarray of int64, shape (U + 1,)
            ``order[starts[u]:starts[u + 1]]`` are user ``u``'s rows.
        """
        rows = np.arange(len(self), dtype=np.int64)
        # lexsort's last key is the primary one; the row number makes the sort total, so
        # equal timestamps keep their file order (ML-1M has 529,046 such rows).
        order = np.lexsort((rows, self.timestamp, self.user_idx)).astype(np.int64)
        counts = np.bincount(self.user_idx, minlength=self.n_users)
        starts = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        return order, starts


def _as_sequence(values: Iterable[Any]) -> Any:
    return values if isinstance(values, (np.ndarray, list, tuple)) else list(values)


def _factorize(values: Sequence[str]) -> tuple[list[str], np.ndarray]:
    """Sorted distinct values and each value's code (dict pass: far faster than np.unique
    on a million Python strings)."""
    first: dict[str, int] = {}
    codes = np.fromiter((first.setdefault(v, len(first)) for v in values), dtype=np.int64,
                        count=len(values))
    vocab = sorted(first)
    remap = np.empty(len(first), dtype=np.int64)
    for new, v in enumerate(vocab):
        remap[first[v]] = new
    return vocab, remap[codes]
