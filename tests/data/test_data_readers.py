"""Every raw layout, written here as small files, read into the same interaction table."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from goracs.data import read_amazon, read_book_crossing, read_movielens
from goracs.data.amazon import find_amazon_files
from goracs.data.table import Interactions
from goracs.errors import GoracsError

# user, movie id, title, rating, time (file order). A latin-1 title, a title shared by two
# movie ids (they merge), and a tie in time for user 1.
MOVIES = {"1": "Toy Story (1995)", "2": "Misérables, Les (1998)", "3": "Heat (1995)",
          "4": "Heat (1995)"}
RATINGS = [("1", "1", 5, 978300760), ("1", "2", 3, 978300760), ("2", "3", 4, 978200000),
           ("1", "4", 2, 978100000), ("2", "1", 1, 978300000)]


def rows_of(t: Interactions) -> list[tuple[str, str, float, int]]:
    return [(t.users[u], t.titles[i], float(r), int(s))
            for u, i, r, s in zip(t.user_idx, t.item_idx, t.rating, t.timestamp, strict=True)]


EXPECTED = [(u, MOVIES[m], float(r), s) for u, m, r, s in RATINGS]


def write_recbole(d: Path) -> Path:
    d.mkdir()
    lines = ["user_id:token\titem_id:token\trating:float\ttimestamp:float"]
    lines += [f"1m_{u}\t{MOVIES[m]}\t{r}\t{s}" for u, m, r, s in RATINGS]
    (d / "ml-1m.inter").write_bytes(("\r\n".join(lines) + "\r\n").encode("utf-8"))
    return d


def write_dat(d: Path) -> Path:
    d.mkdir()
    (d / "movies.dat").write_bytes("".join(f"{k}::{v}::Comedy\n" for k, v in MOVIES.items())
                                   .encode("latin-1"))
    (d / "ratings.dat").write_text("".join(f"{u}::{m}::{r}::{s}\n" for u, m, r, s in RATINGS))
    return d


def write_100k(d: Path) -> Path:
    d.mkdir()
    (d / "u.item").write_bytes("".join(f"{k}|{v} |01-Jan-1995||http://x|0|1\n"
                                       for k, v in MOVIES.items()).encode("latin-1"))
    (d / "u.data").write_text("".join(f"{u}\t{m}\t{r}\t{s}\n" for u, m, r, s in RATINGS))
    return d


def write_csv(d: Path) -> Path:
    d.mkdir()
    movies = ["movieId,title,genres"] + [f'{k},"{v}",Drama' for k, v in MOVIES.items()]
    (d / "movies.csv").write_text("\n".join(movies) + "\n", encoding="utf-8")
    ratings = ["userId,movieId,rating,timestamp"] + [f"{u},{m},{r}.0,{s}"
                                                     for u, m, r, s in RATINGS]
    (d / "ratings.csv").write_text("\n".join(ratings) + "\n")
    return d


@pytest.mark.parametrize("writer,layout", [(write_recbole, "recbole"), (write_dat, "grouplens-dat"),
                                           (write_100k, "grouplens-100k"),
                                           (write_csv, "grouplens-csv")])
def test_movielens_layouts_give_the_same_table(tmp_path, writer, layout):
    t = read_movielens(writer(tmp_path / "ml"))
    assert t.source["layout"] == layout
    assert rows_of(t) == EXPECTED
    assert t.titles == ["Heat (1995)", "Misérables, Les (1998)", "Toy Story (1995)"]
    assert t.users == ["1", "2"]  # RecBole's "1m_" prefix is dropped


def test_recbole_inter_file_path_and_header_errors(tmp_path):
    d = write_recbole(tmp_path / "ml")
    assert rows_of(read_movielens(d / "ml-1m.inter")) == EXPECTED
    bad = tmp_path / "bad.inter"
    bad.write_text("user\titem\nA\tB\n")
    with pytest.raises(GoracsError, match="not a RecBole .inter header"):
        read_movielens(bad)
    short = tmp_path / "short.inter"
    short.write_text("user_id:token\titem_id:token\trating:float\ttimestamp:float\nA\tB\t5\n")
    with pytest.raises(GoracsError, match="line 2 has 3"):
        read_movielens(short)


def test_movielens_layout_errors(tmp_path):
    with pytest.raises(GoracsError, match="not found"):
        read_movielens(tmp_path / "missing")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(GoracsError, match="no MovieLens files found"):
        read_movielens(empty)
    half = tmp_path / "half"
    half.mkdir()
    (half / "ratings.dat").write_text("1::1::5::1\n")
    with pytest.raises(GoracsError, match="no movies.dat"):
        read_movielens(half)
    d = write_dat(tmp_path / "dat")
    (d / "ratings.dat").write_text("1::9::5::1\n")
    with pytest.raises(GoracsError, match="rates movie '9'"):
        read_movielens(d)
    (d / "ratings.dat").write_text("1,1,5,1\n")
    with pytest.raises(GoracsError, match="line 1 is not UserID::MovieID"):
        read_movielens(d)
    (d / "ratings.dat").write_text("1::1::five::1\n")
    with pytest.raises(GoracsError, match="rating 'five' is not a number"):
        read_movielens(d)


# -- Amazon ---------------------------------------------------------------------------------

def write_gz_or_plain(path: Path, lines: list[str], gz: bool) -> Path:
    data = ("\n".join(lines) + "\n").encode("utf-8")
    if gz:
        path.write_bytes(gzip.compress(data, mtime=0))
    else:
        path.write_bytes(data)
    return path


def amazon_2014(d: Path, gz: bool) -> tuple[Path, Path]:
    d.mkdir()
    reviews = [
        {"reviewerID": "A1", "asin": "B01", "reviewerName": "x", "helpful": [0, 0],
         "reviewText": "fun", "overall": 5.0, "summary": "s", "unixReviewTime": 1300000000,
         "reviewTime": "03 13, 2011"},
        {"reviewerID": "A2", "asin": "B02", "overall": 2.0, "unixReviewTime": 1200000000},
        {"reviewerID": "A1", "asin": "B03", "overall": 4.0, "unixReviewTime": 1100000000},
        {"reviewerID": "A2", "asin": "B09", "overall": 4.0, "unixReviewTime": 1100000000},
    ]
    # 2014 metadata is Python literals, not JSON: single quotes, an apostrophe title in
    # double quotes, an item without a title (B09).
    meta = ["{'asin': 'B01', 'title': 'Super Mario Bros', 'salesRank': {'Games': 3}}",
            "{'asin': 'B02', 'title': \"Assassin's Creed\", 'categories': [['Video Games']]}",
            "{'asin': 'B03', 'title': 'Zelda &amp; Link'}",
            "{'asin': 'B09', 'price': 1.0}"]
    r = write_gz_or_plain(d / ("reviews_Video_Games_5.json" + (".gz" if gz else "")),
                          [json.dumps(x) for x in reviews], gz)
    m = write_gz_or_plain(d / ("meta_Video_Games.json" + (".gz" if gz else "")), meta, gz)
    return r, m


def amazon_2018(d: Path) -> tuple[Path, Path]:
    d.mkdir()
    base = {"verified": True, "reviewTime": "x", "style": {"Format:": " Video Game"},
            "vote": "3", "reviewerName": "n", "reviewText": "t", "summary": "s"}
    reviews = [
        {**base, "overall": 5.0, "reviewerID": "A1", "asin": "B01", "unixReviewTime": 1300000000},
        {**base, "overall": 2.0, "reviewerID": "A2", "asin": "B02", "unixReviewTime": 1200000000},
        {**base, "overall": 2.0, "reviewerID": "A2", "asin": "B02", "unixReviewTime": 1200000000},
        {**base, "overall": 4.0, "reviewerID": "A1", "asin": "B03", "unixReviewTime": 1100000000},
        {**base, "overall": 4.0, "reviewerID": "A3", "asin": "B03"},
    ]
    meta = [{"asin": "B01", "title": "Super Mario Bros", "brand": "N", "feature": []},
            {"asin": "B02", "title": "Assassin's Creed", "also_buy": ["B01"]},
            {"asin": "B03", "title": "  Zelda &amp; Link "}]
    r = write_gz_or_plain(d / "Video_Games_5.json", [json.dumps(x) for x in reviews], False)
    m = write_gz_or_plain(d / "meta_Video_Games.json", [json.dumps(x) for x in meta], False)
    return r, m


AMAZON_ROWS = [("A1", "Super Mario Bros", 5.0, 1300000000),
               ("A2", "Assassin's Creed", 2.0, 1200000000),
               ("A1", "Zelda & Link", 4.0, 1100000000)]


@pytest.mark.parametrize("gz", [False, True])
def test_amazon_2014_style(tmp_path, gz):
    t = read_amazon(*amazon_2014(tmp_path / "a", gz))
    assert rows_of(t) == AMAZON_ROWS
    assert t.source["rows_skipped"] == {"missing_fields": 0, "no_title": 1, "duplicates": 0}


def test_amazon_2018_style_and_folder_lookup(tmp_path):
    reviews, meta = amazon_2018(tmp_path / "a")
    assert find_amazon_files(tmp_path / "a") == (reviews, meta)
    t = read_amazon(reviews, meta)
    assert rows_of(t) == AMAZON_ROWS
    assert t.source["rows_skipped"] == {"missing_fields": 1, "no_title": 0, "duplicates": 1}


def test_amazon_errors(tmp_path):
    reviews, meta = amazon_2018(tmp_path / "a")
    with pytest.raises(GoracsError, match="is this a reviews file"):
        read_amazon(meta, meta)
    with pytest.raises(GoracsError, match="an Amazon metadata file"):
        read_amazon(reviews, reviews)
    junk = tmp_path / "junk.json"
    junk.write_text('{"asin": "B01", "title": "x"}\nimport os; os.system("echo hi")\n')
    with pytest.raises(GoracsError, match="line 2 is neither JSON nor a Python dict literal"):
        read_amazon(reviews, junk)
    with pytest.raises(GoracsError, match="not found"):
        read_amazon(tmp_path / "nope.json", meta)
    other = tmp_path / "other"
    other.mkdir()
    write_gz_or_plain(other / "meta_X.json", ['{"asin": "B99", "title": "t"}'], False)
    write_gz_or_plain(other / "X_5.json", [json.dumps({"reviewerID": "A", "asin": "B01",
                                                       "overall": 1, "unixReviewTime": 1})], False)
    with pytest.raises(GoracsError, match="no review matched a titled item"):
        read_amazon(*find_amazon_files(other))
    with pytest.raises(GoracsError, match="expected one meta_"):
        find_amazon_files(tmp_path)


# -- Book-Crossing --------------------------------------------------------------------------

def write_bx(d: Path) -> Path:
    d.mkdir()
    books = [
        '"ISBN";"Book-Title";"Book-Author";"Year-Of-Publication";"Publisher";"Image-URL-S";'
        '"Image-URL-M";"Image-URL-L"',
        '"0001";"Clara Callan";"R. Wright";"2001";"Harper";"s";"m";"l"',
        '"0002";"Peterman Rides Again: the Real \\"J. Peterman\\" &amp; Co";"J";"2000";"P";"s";'
        '"m";"l"',
        '"0003";"Über Café";"A";"1999";"P";"s";"m";"l"',
        '"0004";"Clara Callan";"R. Wright";"2003";"Harper";"s";"m";"l"',
        '"0005";"broken";"line";"with";"too";"many";"fields";"here";"x"',
    ]
    ratings = ['"User-ID";"ISBN";"Book-Rating"', '"7";"0001";"8"', '"7";"0002";"0"',
               '"9";"0003";"3"', '"9";"0004";"10"', '"7";"0005";"6"', '"9";"9999";"5"',
               '"8";"0002";"7"']
    (d / "BX-Books.csv").write_bytes(("\r\n".join(books) + "\r\n").encode("latin-1"))
    (d / "BX-Book-Ratings.csv").write_bytes(("\r\n".join(ratings) + "\r\n").encode("latin-1"))
    return d


def test_book_crossing_reader(tmp_path):
    t = read_book_crossing(write_bx(tmp_path / "bx"))
    assert rows_of(t) == [("7", "Clara Callan", 8.0, 0), ("9", "Über Café", 3.0, 1),
                          ("9", "Clara Callan", 10.0, 2),
                          ("8", 'Peterman Rides Again: the Real "J. Peterman" & Co', 7.0, 3)]
    assert t.time_is_file_order
    assert t.source["rows_skipped"] == {"bad_lines": 0, "implicit": 1, "no_title": 2}
    assert t.source["bad_book_lines"] == 1
    every = read_book_crossing(tmp_path / "bx", explicit_only=False)
    assert len(every) == 5


def test_book_crossing_missing_files(tmp_path, monkeypatch):
    monkeypatch.setenv("GORACS_CACHE", str(tmp_path / "nocache"))
    with pytest.raises(GoracsError, match="fetch_data.py"):
        read_book_crossing()
    d = write_bx(tmp_path / "bx")
    (d / "BX-Books.csv").unlink()
    with pytest.raises(GoracsError, match="BX-Books.csv not found"):
        read_book_crossing(d)
