"""Amazon reviews (the paper's 5-core format): a reviews file and a metadata file, one
record per line, plain or gzip.

Reviews are JSON objects with ``reviewerID, asin, overall, unixReviewTime`` (the 2018 dumps
add ``vote``, ``style``, ``verified``, ... which are ignored). Metadata lines carry ``asin``
and ``title``: JSON in 2018, Python dict literals in 2014, which are parsed with
:func:`ast.literal_eval` (literals only, never code).
"""

from __future__ import annotations

import ast
import html
import json
from pathlib import Path
from typing import Any

from goracs.data._files import iter_lines, require_file
from goracs.data.table import Interactions
from goracs.errors import GoracsError

REVIEW_KEYS = ("reviewerID", "asin", "overall", "unixReviewTime")
_SUFFIXES = (".json", ".json.gz", ".jsonl", ".jsonl.gz", ".gz")


def find_amazon_files(folder: str | Path) -> tuple[Path, Path]:
    """Pick the reviews and metadata files in ``folder``: metadata files start with
    ``meta_``; the one other JSON(-lines) file is the reviews file."""
    d = Path(folder)
    if not d.is_dir():
        raise GoracsError(f"Amazon folder not found: {d}")
    files = sorted(p for p in d.iterdir() if p.is_file() and p.name.endswith(_SUFFIXES))
    metas = [p for p in files if p.name.startswith("meta_")]
    reviews = [p for p in files if not p.name.startswith("meta_")]
    if len(metas) != 1 or len(reviews) != 1:
        raise GoracsError(
            f"{d}: expected one meta_*.json[.gz] and one reviews .json[.gz] file, found "
            f"{len(metas)} and {len(reviews)}; give --reviews FILE --meta FILE")
    return reviews[0], metas[0]


def parse_record(line: str, path: Path, lineno: int) -> dict[str, Any]:
    """One line as a dict: strict JSON first (fast), then a Python literal (2014 metadata)."""
    try:
        obj = json.loads(line)  # per line, where a bracket scan would cost too much
    except RecursionError:
        raise GoracsError(f"{path}: line {lineno} is nested too deeply to read") from None
    except json.JSONDecodeError:
        try:
            obj = ast.literal_eval(line)
        except (ValueError, SyntaxError, MemoryError, RecursionError):
            raise GoracsError(f"{path}: line {lineno} is neither JSON nor a Python dict "
                              "literal") from None
    if not isinstance(obj, dict):
        raise GoracsError(f"{path}: line {lineno} is not an object")
    return obj


def read_metadata(meta: str | Path) -> dict[str, str]:
    """Map each ``asin`` to its title (HTML entities decoded, whitespace trimmed); items
    without a usable title are left out."""
    p = require_file(meta, "Amazon metadata file")
    titles: dict[str, str] = {}
    seen_asin = False
    for k, line in enumerate(iter_lines(p, desc="metadata"), start=1):
        if not line.strip():
            continue
        obj = parse_record(line, p, k)
        asin = obj.get("asin")
        if not isinstance(asin, str):
            continue
        seen_asin = True
        title = obj.get("title")
        if isinstance(title, str):
            title = " ".join(html.unescape(title).split())
            if title:
                titles[asin] = title
    if not seen_asin:
        raise GoracsError(f"{p}: no line has an 'asin': is this an Amazon metadata file?")
    if not titles:
        raise GoracsError(f"{p}: no item has a title (is this an Amazon metadata file?)")
    return titles


def read_amazon(reviews: str | Path, meta: str | Path) -> Interactions:
    """Read Amazon reviews joined with their item titles.

    Reviews lacking one of ``REVIEW_KEYS``, reviews of items without a title, and exact
    repeats of a (user, item, time) review (the 2018 dumps hold duplicates) are skipped and
    counted in ``source``.
    """
    rp = require_file(reviews, "Amazon reviews file")
    titles = read_metadata(meta)
    users: list[str] = []
    items: list[str] = []
    ratings: list[float] = []
    stamps: list[int] = []
    seen: set[tuple[str, str, int]] = set()
    skipped = {"missing_fields": 0, "no_title": 0, "duplicates": 0}
    n_lines = 0
    for k, line in enumerate(iter_lines(rp, desc="reviews"), start=1):
        if not line.strip():
            continue
        n_lines += 1
        obj = parse_record(line, rp, k)
        if any(key not in obj for key in REVIEW_KEYS):
            skipped["missing_fields"] += 1
            continue
        asin = str(obj["asin"])
        title = titles.get(asin)
        if title is None:
            skipped["no_title"] += 1
            continue
        try:
            rating = float(obj["overall"])
            stamp = int(obj["unixReviewTime"])
        except (TypeError, ValueError):
            raise GoracsError(f"{rp}: line {k}: overall/unixReviewTime are not numbers") from None
        key = (str(obj["reviewerID"]), asin, stamp)
        if key in seen:
            skipped["duplicates"] += 1
            continue
        seen.add(key)
        users.append(key[0])
        items.append(title)
        ratings.append(rating)
        stamps.append(stamp)
    if n_lines and skipped["missing_fields"] == n_lines:
        raise GoracsError(f"{rp}: no line has {', '.join(REVIEW_KEYS)}: is this a reviews file?")
    if not users:
        raise GoracsError(f"{rp}: no review matched a titled item in {Path(meta).name}")
    return Interactions.from_columns(
        users, items, ratings, stamps,
        source={"layout": "amazon", "files": {"reviews": str(rp), "meta": str(meta)},
                "rows_read": n_lines, "rows_skipped": skipped})
