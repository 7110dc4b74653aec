"""From an interaction table (or the user's own instruction files) to a prepared folder:
``train.json``, ``valid.json``, ``test.json``, ``items.json`` and ``meta.json``.

Everything is computed in memory first and written at the end, each file atomically and
``meta.json`` last, so a failed run leaves no half-written split behind.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

import goracs
from goracs.data.amazon import find_amazon_files, read_amazon
from goracs.data.bookcrossing import read_book_crossing
from goracs.data.movielens import read_latest_small, read_movielens
from goracs.data.samples import (
    MAX_HISTORY,
    NEGATIVE_SAMPLING,
    TEST_STREAM,
    VALID_STREAM,
    Windows,
    build_windows,
    check_split,
    negatives_popularity,
    sample_negatives,
    split_sizes,
    subsample_held_out,
    subsample_train,
    user_time_split,
)
from goracs.data.table import Interactions
from goracs.errors import GoracsError
from goracs.io import atomic_write_json, read_json
from goracs.outputs import OutputPlace
from goracs.prompts import DOMAINS, Domain, ctr_record, seqrec_record
from goracs.records import REQUIRED_FIELDS, TASKS, load_records, top_user_share

DATASETS = ("ml-1m", "ml-100k", "ml-latest-small", "amazon", "book-crossing")
SPLITS = ("train", "valid", "test")
OUTPUT_FILES = ("train.json", "valid.json", "test.json", "items.json", "meta.json")
DEFAULT_MAX_TRAIN = 20000
DEFAULT_NEGATIVES = 99
DEFAULT_SPLIT_KIND = "global-time"


@dataclass
class Prepared:
    """A prepared data set in memory: records per split, the catalogue, and meta.json."""

    splits: dict[str, list[dict[str, Any]]]
    items: list[str] | None
    meta: dict[str, Any] = field(default_factory=dict)


def default_domain(dataset: str) -> Domain | None:
    return {"ml-1m": DOMAINS["movies"], "ml-100k": DOMAINS["movies"],
            "ml-latest-small": DOMAINS["movies"], "book-crossing": DOMAINS["books"]}.get(dataset)


def default_like_threshold(dataset: str) -> float:
    """Ratings above this mean "liked": 3 on 1-5 scales; 5 on Book-Crossing's 1-10 scale,
    where above 3 would call nearly every rating a like."""
    return 5.0 if dataset == "book-crossing" else 3.0


def load_interactions(dataset: str, path: str | Path | None = None,
                      reviews: str | Path | None = None,
                      meta: str | Path | None = None) -> Interactions:
    """Read one of ``DATASETS`` into an interaction table.

    ``path`` overrides where the data comes from (a MovieLens folder in any supported layout,
    the Book-Crossing folder, or the Amazon folder); Amazon can instead take ``reviews`` and
    ``meta`` files.
    """
    if dataset in ("ml-1m", "ml-100k"):
        return read_movielens(path, dataset)
    if dataset == "ml-latest-small":
        return read_latest_small() if path is None else read_movielens(path)
    if dataset == "book-crossing":
        return read_book_crossing(path)
    if dataset == "amazon":
        if reviews is not None or meta is not None:
            if reviews is None or meta is None:
                raise GoracsError("Amazon needs both --reviews and --meta (or a folder as --path)")
            if path is not None:
                raise GoracsError("give either --path or --reviews/--meta, not both")
            return read_amazon(reviews, meta)
        if path is None:
            raise GoracsError("Amazon needs --reviews FILE --meta FILE, or a folder as --path")
        return read_amazon(*find_amazon_files(path))
    raise GoracsError(f"unknown dataset {dataset!r}; known: {', '.join(DATASETS)}, json")


def build_prepared(
    table: Interactions,
    task: str,
    domain: Domain,
    *,
    dataset: str = "custom",
    valid_size: int | None = None,
    test_size: int | None = None,
    max_train: int | None = DEFAULT_MAX_TRAIN,
    seed: int = 0,
    negatives: int = DEFAULT_NEGATIVES,
    negative_sampling: str = "uniform",
    like_threshold: float = 3.0,
    max_history: int = MAX_HISTORY,
    split: str = DEFAULT_SPLIT_KIND,
) -> Prepared:
    """Turn an interaction table into rendered splits (method.md section 1).

    Parameters
    ----------
    table : Interactions
        The source interactions.
    task : {"seqrec", "ctr"}
        Next-item recommendation (BIGRec style) or Yes/No preference (TALLRec style).
    domain : Domain
        The words the prompts use for the items.
    valid_size, test_size : int or None
        global-time: sizes of the last two temporal blocks; None scales the default (see
        :func:`goracs.data.samples.split_sizes`). user-time: keep a seeded random subset of
        this many of the per-user validation (test) samples, that is of this many users;
        None keeps one for every user.
    max_train : int or None
        Keep a seeded random subset of this many training windows (in time order); None
        keeps the whole training pool.
    seed : int
        Seeds the training subset (``default_rng(seed)``), the negatives (stream 1) and,
        under user-time, the validation and test subsets (``default_rng([seed, 2])`` and
        ``default_rng([seed, 3])``).
    negatives : int
        Negatives per SeqRec test sample.
    negative_sampling : {"uniform", "popularity"}
        How they are drawn (:func:`goracs.data.samples.sample_negatives`).
    like_threshold : float
        CTR: a rating above it is a "Yes".
    max_history : int
        Most history items per sample.
    split : {"global-time", "user-time"}
        global-time sorts all windows by time and holds out the last ones; user-time holds
        out each user's last window for test and the one before for validation, and pools
        the earlier ones for training (:func:`goracs.data.samples.user_time_split`).
    """
    if task not in TASKS:
        raise GoracsError(f"unknown task {task!r}; known: {', '.join(TASKS)}")
    check_split(split)
    if negative_sampling not in NEGATIVE_SAMPLING:
        raise GoracsError(f"unknown negative sampling {negative_sampling!r}; known: "
                          f"{', '.join(NEGATIVE_SAMPLING)}")
    win = build_windows(table, max_history)
    n = len(win)
    if n == 0:
        raise GoracsError("no samples: every user has fewer than 2 interactions")
    target_rows = win.target_rows()
    picks, n_train, held_out = _split_windows(win, table.user_idx[target_rows], split,
                                              valid_size, test_size, max_train, seed)
    n_valid, n_test = len(picks["valid"]), len(picks["test"])
    neg_codes = None
    neg_stats = None
    if task == "seqrec":
        test_users = table.user_idx[target_rows[picks["test"]]]
        neg_codes = sample_negatives(table, test_users, negatives, seed, negative_sampling)
        neg_stats = negatives_popularity(
            table, table.item_idx[target_rows[picks["test"]]], neg_codes)

    titles = table.titles
    if not math.isfinite(like_threshold):
        raise GoracsError(f"like-threshold must be a finite number, got {like_threshold}")
    liked = table.rating > like_threshold
    splits: dict[str, list[dict[str, Any]]] = {}
    split_counts: dict[str, dict[str, Any]] = {}
    total = sum(len(v) for v in picks.values())
    with tqdm(total=total, desc="rendering", unit=" samples", file=sys.stderr,
              mininterval=1.0, leave=False, disable=None) as bar:
        for name in SPLITS:
            records = []
            sample_users = table.user_idx[target_rows[picks[name]]]
            seen_users: set[int] = set()
            seen_items: set[int] = set()
            for j, k in enumerate(picks[name]):
                row = int(target_rows[k])
                hist = win.history_rows(int(k))
                hist_titles = [titles[c] for c in table.item_idx[hist]]
                target = titles[table.item_idx[row]]
                user = table.users[table.user_idx[row]]
                stamp = int(table.timestamp[row])
                if task == "seqrec":
                    rec = seqrec_record(domain, hist_titles, target, user, stamp)
                    if name == "test":
                        rec["negatives"] = [titles[c] for c in neg_codes[j]]
                else:
                    rec = ctr_record(domain, hist_titles, liked[hist].tolist(), target,
                                     bool(liked[row]), user, stamp)
                records.append(rec)
                seen_users.add(int(table.user_idx[row]))
                seen_items.update(int(c) for c in table.item_idx[hist])
                seen_items.add(int(table.item_idx[row]))
            bar.update(len(records))
            splits[name] = records
            counts: dict[str, Any] = {"samples": len(records), "users": len(seen_users),
                                      "items": len(seen_items),
                                      "top5_share": round(top_user_share(sample_users), 6)}
            if task == "ctr":
                counts["yes"] = sum(r["output"] == "Yes" for r in records)
            if len(records):
                counts["first_timestamp"] = records[0]["timestamp"]
                counts["last_timestamp"] = records[-1]["timestamp"]
            split_counts[name] = counts

    meta = {
        "dataset": dataset,
        "task": task,
        "format": "alpaca",
        "fields": list(REQUIRED_FIELDS) + ["user", "target", "timestamp"]
        + (["negatives (test only)"] if task == "seqrec" else []),
        "seqrec_output": "quoted title, no trailing newline" if task == "seqrec" else None,
        "domain": {"plural": domain.plural, "singular": domain.singular, "verb": domain.verb},
        "seed": seed,
        "split": split,
        "sizes": {
            "split": split,
            "valid_size": n_valid, "test_size": n_test,
            "valid_size_given": valid_size, "test_size_given": test_size,
            "max_train": max_train, "max_history": max_history,
            "negatives": negatives if task == "seqrec" else None,
            "negative_sampling": negative_sampling if task == "seqrec" else None,
            "like_threshold": like_threshold if task == "ctr" else None,
        },
        "time": ("file order (the source has no timestamps)" if table.time_is_file_order
                 else "timestamp, ties broken by file order"),
        "counts": {
            "interactions": len(table),
            "users": table.n_users,
            "items": table.n_items,
            "windows": n,
            "train_pool": n_train,
            **held_out,
            "splits": split_counts,
            **({"negatives": neg_stats} if neg_stats is not None else {}),
        },
        "source": table.source,
        "goracs_version": goracs.__version__,
    }
    return Prepared(splits=splits, items=list(titles), meta=meta)


def _split_windows(win: Windows, window_users: np.ndarray, split: str,
                   valid_size: int | None, test_size: int | None, max_train: int | None,
                   seed: int) -> tuple[dict[str, np.ndarray], int, dict[str, int]]:
    """Window indices of each split (ascending, so in global time order), the size of the
    training pool, and, under user-time, how many users had a validation and a test sample
    before any subset was drawn (for meta.json)."""
    if split == "global-time":
        n = len(win)
        n_train, n_valid, _ = split_sizes(n, valid_size, test_size)
        picks = {
            "train": subsample_train(n_train, max_train, seed),
            "valid": np.arange(n_train, n_train + n_valid, dtype=np.int64),
            "test": np.arange(n_train + n_valid, n, dtype=np.int64),
        }
        return picks, n_train, {}
    pool, valid, test = user_time_split(win, window_users)
    if valid.shape[0] == 0 or pool.shape[0] == 0:
        short = "validation" if valid.shape[0] == 0 else "training"
        raise GoracsError(f"user-time split leaves no {short} samples: no user has enough "
                          "windows (a user needs 2 windows for validation, 3 for training)")
    picks = {
        # The same draw as global-time, over the pool's positions, mapped back to windows.
        "train": pool[subsample_train(pool.shape[0], max_train, seed)],
        "valid": subsample_held_out(valid, valid_size, seed, VALID_STREAM, "validation"),
        "test": subsample_held_out(test, test_size, seed, TEST_STREAM, "test"),
    }
    held_out = {"valid_candidates": int(valid.shape[0]), "test_candidates": int(test.shape[0])}
    return picks, int(pool.shape[0]), held_out


def write_prepared(prepared: Prepared, out: str | Path,
                   inputs: tuple[str | Path | None, ...] = ()) -> list[Path]:
    """Write the prepared folder ``out`` whole (see :mod:`goracs.outputs`).

    The files are written into a partial folder beside ``out``, ``meta.json`` last, and
    swapped in: an earlier prepared folder there (its derived ``features/`` and selections
    included) is replaced whole, so nothing of it stays beside the new splits; a folder
    holding anything goracs did not write, or one of ``inputs``, is refused with one line.

    Returns
    -------
    list of Path
        The files written, as they lie in ``out``.
    """
    place = OutputPlace(out, "prepare", inputs=inputs).check()
    part = place.begin()
    names = []
    for name in SPLITS:
        if name in prepared.splits:
            atomic_write_json(part / f"{name}.json", prepared.splits[name])
            names.append(f"{name}.json")
    if prepared.items is not None:
        atomic_write_json(part / "items.json", prepared.items)
        names.append("items.json")
    # meta.json goes last: its presence marks a complete folder.
    atomic_write_json(part / "meta.json", prepared.meta)
    names.append("meta.json")
    place.commit()
    return [Path(out) / n for n in names]


# -- the user's own instruction data ----------------------------------------------------------

def prepare_json(train: str | Path, valid: str | Path, test: str | Path | None = None,
                 items: str | Path | None = None, task: str | None = None) -> Prepared:
    """Validate the user's own instruction files and pack them as a prepared folder.

    ``task`` (``seqrec`` or ``ctr``), when given, is recorded in ``meta.json`` so that later
    commands know it; CTR records must then answer ``Yes`` or ``No``.
    """
    if task is not None and task not in TASKS:
        raise GoracsError(f"unknown task {task!r}; known: {', '.join(TASKS)}")
    splits = {"train": load_records(train), "valid": load_records(valid)}
    if test is not None:
        splits["test"] = load_records(test)
    if task == "ctr":
        for name, recs in splits.items():
            for k, rec in enumerate(recs):
                if rec["output"].strip() not in ("Yes", "No"):
                    raise GoracsError(f"{name} record {k}: a ctr output must be Yes or No, "
                                      f"got {rec['output']!r}")
    catalogue = None
    if items is not None:
        p = Path(items)
        catalogue = read_json(p, "the item catalogue")
        if not (isinstance(catalogue, list) and catalogue
                and all(isinstance(x, str) for x in catalogue)):
            raise GoracsError(f"{p}: items must be a non-empty JSON list of titles")
    counts = {}
    for name, recs in splits.items():
        c: dict[str, Any] = {"samples": len(recs)}
        if task == "ctr":
            c["yes"] = sum(r["output"].strip() == "Yes" for r in recs)
        user_list = [str(r["user"]) for r in recs if "user" in r]
        if user_list:
            c["users"] = len(set(user_list))
        if user_list and len(user_list) == len(recs):
            c["top5_share"] = round(top_user_share(user_list), 6)
        targets = {str(r["target"]) for r in recs if "target" in r}
        if targets:
            c["target_items"] = len(targets)
        counts[name] = c
    meta = {
        "dataset": "json",
        "task": task,
        "format": "alpaca",
        "counts": {"items": len(catalogue) if catalogue is not None else None,
                   "splits": counts},
        "source": {"train": str(train), "valid": str(valid),
                   "test": None if test is None else str(test),
                   "items": None if items is None else str(items)},
        "goracs_version": goracs.__version__,
    }
    return Prepared(splits=splits, items=catalogue, meta=meta)
