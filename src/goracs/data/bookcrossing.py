"""Book-Crossing (Ziegler et al., 2005): ``BX-Book-Ratings.csv`` and ``BX-Books.csv``.

Both files are ``;``-separated, quoted, latin-1, CRLF; some titles hold backslash-escaped
quotes. The data has no timestamps: the ratings file's own order stands in for time, so
"temporal" splits are splits by file position (the file is ordered by user id, so the test
split holds the last users' ratings). Ratings of 0 are implicit (no score) and are dropped
unless asked otherwise.
"""

from __future__ import annotations

import csv
import html
import io
from pathlib import Path

from goracs.data._files import read_text, require_file
from goracs.data.table import Interactions
from goracs.errors import GoracsError
from goracs.paths import cache_root

RATINGS_FILE = "BX-Book-Ratings.csv"
BOOKS_FILE = "BX-Books.csv"


def default_dir() -> Path:
    """Where ``scripts/fetch_data.py`` puts the files: ``<cache root>/data/book-crossing``
    (see :func:`goracs.paths.cache_root`)."""
    return cache_root() / "data" / "book-crossing"


def read_book_crossing(folder: str | Path | None = None,
                       explicit_only: bool = True) -> Interactions:
    """Read Book-Crossing ratings joined with book titles.

    Parameters
    ----------
    folder : path-like or None
        Folder holding the two CSV files; None means :func:`default_dir`.
    explicit_only : bool
        Drop the implicit ratings (0), keeping the 1-10 scores.
    """
    d = Path(folder) if folder is not None else default_dir()
    if not (d / RATINGS_FILE).is_file():
        hint = (" (run `python scripts/fetch_data.py`, or give --path)" if folder is None
                else "")
        raise GoracsError(f"Book-Crossing: {d / RATINGS_FILE} not found{hint}")
    rp = require_file(d / RATINGS_FILE, RATINGS_FILE)
    bp = require_file(d / BOOKS_FILE, BOOKS_FILE)
    titles, bad_books = _read_books(bp)
    rows = csv.reader(io.StringIO(read_text(rp, "latin-1")), delimiter=";", quotechar='"')
    header = next(rows, None)
    if header is None or [h.strip() for h in header[:3]] != ["User-ID", "ISBN", "Book-Rating"]:
        raise GoracsError(f"{rp}: expected the header \"User-ID\";\"ISBN\";\"Book-Rating\"")
    users: list[str] = []
    items: list[str] = []
    ratings: list[float] = []
    skipped = {"bad_lines": 0, "implicit": 0, "no_title": 0}
    n = 0
    for r in rows:
        if not r:
            continue
        n += 1
        if len(r) != 3:
            skipped["bad_lines"] += 1
            continue
        try:
            score = float(r[2])
        except ValueError:
            skipped["bad_lines"] += 1
            continue
        if explicit_only and score == 0:
            skipped["implicit"] += 1
            continue
        title = titles.get(r[1].strip())
        if title is None:
            skipped["no_title"] += 1
            continue
        users.append(r[0].strip())
        items.append(title)
        ratings.append(score)
    if not users:
        raise GoracsError(f"{rp}: no rating matched a titled book in {bp.name}")
    return Interactions.from_columns(
        users, items, ratings, None,
        source={"layout": "book-crossing", "files": {"ratings": str(rp), "books": str(bp)},
                "rows_read": n, "rows_skipped": skipped, "bad_book_lines": bad_books,
                "explicit_only": explicit_only,
                "time": "file order of the ratings (the data has no timestamps)"})


def _read_books(path: Path) -> tuple[dict[str, str], int]:
    """ISBN -> title; lines that do not split into the 8 columns are skipped and counted."""
    reader = csv.reader(io.StringIO(read_text(path, "latin-1")), delimiter=";", quotechar='"',
                        escapechar="\\")
    header = next(reader, None)
    if header is None or [h.strip() for h in header[:2]] != ["ISBN", "Book-Title"]:
        raise GoracsError(f"{path}: expected a header starting \"ISBN\";\"Book-Title\"")
    width = len(header)
    titles: dict[str, str] = {}
    bad = 0
    for r in reader:
        if not r:
            continue
        if len(r) != width:
            bad += 1
            continue
        title = " ".join(html.unescape(r[1]).split())
        if title:
            titles[r[0].strip()] = title
    return titles, bad
