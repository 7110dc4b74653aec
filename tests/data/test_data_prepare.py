"""``goracs prepare`` end to end: small files in, prepared folders out; real packaged data
with pinned counts and the temporal-split and negatives invariants."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from goracs.cli import main
from goracs.data import build_prepared, load_interactions, read_movielens
from goracs.data.bookcrossing import default_dir as bx_default_dir
from goracs.data.movielens import packaged_dir
from goracs.prompts import DOMAINS

FILES = ("train.json", "valid.json", "test.json", "items.json", "meta.json")


def write_small_100k(d: Path, n_users: int = 12, n_items: int = 30, seed: int = 0) -> Path:
    """A u.data/u.item folder: every user rates 12-20 of 30 movies at random times."""
    rng = np.random.default_rng(seed)
    d.mkdir(parents=True)
    (d / "u.item").write_bytes("".join(f"{i}|Movie {i} ({1980 + i})|x||u|0\n"
                                       for i in range(1, n_items + 1)).encode("latin-1"))
    lines = []
    for u in range(1, n_users + 1):
        for m in rng.choice(n_items, size=int(rng.integers(12, 21)), replace=False):
            lines.append(f"{u}\t{m + 1}\t{int(rng.integers(1, 6))}\t"
                         f"{int(rng.integers(880000000, 880000400))}\n")
    (d / "u.data").write_text("".join(lines))
    return d


def run(argv: list[str], capsys) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def load(d: Path, name: str):
    return json.loads((d / name).read_text(encoding="utf-8"))


def check_invariants(d: Path, user_items: dict[str, set[str]] | None = None) -> None:
    """Temporal split and negatives, checked on the written files."""
    train, valid, test = (load(d, f"{s}.json") for s in ("train", "valid", "test"))
    last_train = max(r["timestamp"] for r in train)
    assert last_train <= min(r["timestamp"] for r in valid)
    assert max(r["timestamp"] for r in valid) <= min(r["timestamp"] for r in test)
    for recs in (train, valid, test):
        stamps = [r["timestamp"] for r in recs]
        assert stamps == sorted(stamps)
    items = set(load(d, "items.json"))
    for r in test:
        if "negatives" not in r:
            continue
        neg = r["negatives"]
        assert len(set(neg)) == len(neg) and set(neg) <= items
        assert r["target"] not in neg
        history = set(json.loads("[" + r["input"].split("before: ", 1)[1] + "]"))
        assert not history & set(neg)
        if user_items is not None:
            assert not user_items[r["user"]] & set(neg)


def test_prepare_small_files_seqrec(tmp_path, capsys):
    raw = write_small_100k(tmp_path / "raw")
    out = tmp_path / "out"
    code, stdout, _ = run(["prepare", "--dataset", "ml-100k", "--path", raw, "--task", "seqrec",
                           "--out", out, "--negatives", "5", "--max-train", "40"], capsys)
    assert code == 0
    meta = load(out, "meta.json")
    c = meta["counts"]
    n = c["windows"]
    assert c["interactions"] == len((raw / "u.data").read_text().splitlines())
    assert n == c["interactions"] - 10 * c["users"]  # every user has at least 11 ratings
    assert c["splits"]["valid"]["samples"] == c["splits"]["test"]["samples"] == n // 10
    assert c["splits"]["train"]["samples"] == 40 and c["train_pool"] == n - 2 * (n // 10)
    assert f"{c['users']} users, {c['items']} items" in stdout
    assert "train" in stdout and "valid" in stdout and "test" in stdout
    assert sorted(p.name for p in out.iterdir()) == sorted(FILES)
    check_invariants(out)
    test = load(out, "test.json")
    assert all(len(r["negatives"]) == 5 for r in test)
    assert set(load(out, "train.json")[0]) == {"instruction", "input", "output", "user",
                                               "target", "timestamp"}
    # Same inputs and seed: byte-identical files.
    out2 = tmp_path / "out2"
    assert run(["prepare", "--dataset", "ml-100k", "--path", raw, "--task", "seqrec",
                "--out", out2, "--negatives", "5", "--max-train", "40"], capsys)[0] == 0
    for f in FILES:
        assert (out / f).read_bytes() == (out2 / f).read_bytes(), f
    # Another seed draws another training subset and other negatives.
    out3 = tmp_path / "out3"
    assert run(["prepare", "--dataset", "ml-100k", "--path", raw, "--task", "seqrec",
                "--out", out3, "--negatives", "5", "--max-train", "40", "--seed", "1"],
               capsys)[0] == 0
    assert (out / "train.json").read_bytes() != (out3 / "train.json").read_bytes()
    assert (out / "valid.json").read_bytes() == (out3 / "valid.json").read_bytes()


def test_prepare_small_files_ctr_keeps_whole_pool(tmp_path, capsys):
    raw = write_small_100k(tmp_path / "raw")
    out = tmp_path / "out"
    code, stdout, _ = run(["prepare", "--dataset", "ml-100k", "--path", raw, "--task", "ctr",
                           "--out", out, "--max-train", "all", "--valid-size", "7",
                           "--test-size", "9"], capsys)
    assert code == 0
    meta = load(out, "meta.json")
    sizes = {k: v["samples"] for k, v in meta["counts"]["splits"].items()}
    assert sizes == {"train": meta["counts"]["windows"] - 16, "valid": 7, "test": 9}
    check_invariants(out)
    rows = [ln.split("\t") for ln in (raw / "u.data").read_text().splitlines()]
    titles = {ln.split("|")[0]: ln.split("|")[1] for ln in
              (raw / "u.item").read_text().splitlines()}
    rated = {(u, titles[m], int(t)): int(r) for u, m, r, t in rows}
    for rec in load(out, "train.json"):
        assert rec["output"] == ("Yes" if rated[(rec["user"], rec["target"],
                                                  rec["timestamp"])] > 3 else "No")
        assert "negatives" not in rec
    assert "yes" in stdout


def check_user_time(d: Path) -> None:
    """Per user: every training sample is no later than the validation sample, which is no
    later than the test sample; one validation and one test sample per user; each split in
    time order."""
    train, valid, test = (load(d, f"{s}.json") for s in ("train", "valid", "test"))
    for recs in (train, valid, test):
        stamps = [r["timestamp"] for r in recs]
        assert stamps == sorted(stamps)
    v = {r["user"]: r["timestamp"] for r in valid}
    t = {r["user"]: r["timestamp"] for r in test}
    assert len(v) == len(valid) and len(t) == len(test)
    for user, stamp in v.items():
        if user in t:
            assert stamp <= t[user]
    for r in train:
        assert r["timestamp"] <= min(v.get(r["user"], np.inf), t.get(r["user"], np.inf))


def test_prepare_small_files_user_time(tmp_path, capsys):
    raw = write_small_100k(tmp_path / "raw")
    rows = [ln.split("\t") for ln in (raw / "u.data").read_text().splitlines()]
    out = tmp_path / "out"
    argv = ["prepare", "--dataset", "ml-100k", "--path", raw, "--task", "seqrec", "--out", out,
            "--negatives", "5", "--split", "user-time", "--max-train", "30"]
    code, stdout, _ = run(argv, capsys)
    assert code == 0
    assert "user-time split" in stdout and "top5" in stdout
    meta = load(out, "meta.json")
    assert meta["split"] == meta["sizes"]["split"] == "user-time"
    c = meta["counts"]
    assert c["splits"]["test"]["samples"] == c["splits"]["test"]["users"] == 12
    assert c["splits"]["valid"]["samples"] == c["splits"]["valid"]["users"] == 12
    assert c["splits"]["train"]["samples"] == 30
    # Every user rated 12-20 movies, so has 2-10 windows: all but two per user are the pool.
    assert c["train_pool"] == c["windows"] - 24
    check_user_time(out)
    # The test sample is the user's last rating (by time; in this file ties are rare, and
    # the rating listed last wins a tie).
    last: dict[str, int] = {}
    for u, _, _, ts in rows:
        last[u] = max(last.get(u, 0), int(ts))
    assert {r["user"]: r["timestamp"] for r in load(out, "test.json")} == last
    assert all(len(r["negatives"]) == 5 for r in load(out, "test.json"))
    # Subsets of users: seeded, one sample per user, reproducible to the byte.
    sub, sub2, sub3 = (tmp_path / n for n in ("sub", "sub2", "sub3"))
    for d, seed in ((sub, "0"), (sub2, "0"), (sub3, "1")):
        assert run([*argv[:-1], "30", "--valid-size", "5", "--test-size", "4", "--seed", seed,
                    "--out", d], capsys)[0] == 0
    for f in FILES:
        assert (sub / f).read_bytes() == (sub2 / f).read_bytes(), f
    assert (sub / "test.json").read_bytes() != (sub3 / "test.json").read_bytes()
    assert len(load(sub, "valid.json")) == 5 and len(load(sub, "test.json")) == 4
    check_user_time(sub)
    # The subset's records are among the full run's, in the same order (negatives aside: they
    # are drawn per kept test sample in turn).
    strip = [{k: v for k, v in r.items() if k != "negatives"} for r in load(out, "test.json")]
    kept = [{k: v for k, v in r.items() if k != "negatives"} for r in load(sub, "test.json")]
    assert [r for r in strip if r in kept] == kept


def test_prepare_amazon_with_domain_word(tmp_path, capsys):
    d = tmp_path / "amz"
    d.mkdir()
    rng = np.random.default_rng(1)
    reviews = [json.dumps({"reviewerID": f"U{u}", "asin": f"B{i:03d}", "overall": float(r),
                           "unixReviewTime": int(t), "vote": "2", "verified": True})
               for u in range(8) for i, r, t in zip(
                   rng.choice(150, 12, replace=False), rng.integers(1, 6, 12),
                   rng.integers(1.3e9, 1.4e9, 12), strict=True)]
    (d / "Video_Games_5.json").write_text("\n".join(reviews) + "\n")
    (d / "meta_Video_Games.json").write_text("\n".join(
        repr({"asin": f"B{i:03d}", "title": f"Game {i}"}) for i in range(150)) + "\n")
    out = tmp_path / "out"
    code, _, err = run(["prepare", "--dataset", "amazon", "--task", "seqrec", "--out", out,
                        "--path", d], capsys)
    assert code == 2 and "needs --domain-word" in err and not out.exists()
    code, stdout, _ = run(["prepare", "--dataset", "amazon", "--task", "seqrec", "--out", out,
                           "--reviews", d / "Video_Games_5.json", "--meta",
                           d / "meta_Video_Games.json", "--domain-word", "video games",
                           "--negatives", "20"], capsys)
    assert code == 0
    rec = load(out, "valid.json")[0]
    assert rec["input"].startswith("The user has played the following video games before: ")
    assert "recommend a new video game" in rec["instruction"]
    assert "8 users" in stdout
    check_invariants(out)


@pytest.mark.parametrize("argv,message", [
    (["--dataset", "ml-1m", "--out", "{out}"], "needs --task seqrec or --task ctr"),
    (["--dataset", "ml-1m", "--task", "seqrec", "--out", "{out}", "--path", "{tmp}/nothing"],
     "not found"),
    (["--dataset", "amazon", "--task", "ctr", "--out", "{out}", "--domain-word", "games"],
     "unknown domain word"),
    (["--dataset", "amazon", "--task", "ctr", "--out", "{out}", "--domain-word", "books"],
     "needs --reviews FILE --meta FILE"),
    (["--dataset", "ml-100k", "--task", "seqrec", "--out", "{out}", "--valid-size", "60000",
      "--test-size", "40000"], "leave no training samples"),
    (["--dataset", "json", "--out", "{out}", "--train", "{tmp}/t.json"], "needs --train FILE"),
    (["--dataset", "json", "--path", "x", "--out", "{out}"], "not --path"),
    (["--dataset", "json", "--split", "user-time", "--out", "{out}", "--train", "x",
      "--valid", "y"], "not --split"),
    (["--dataset", "ml-100k", "--task", "ctr", "--out", "{out}", "--split", "user-time",
      "--valid-size", "944"], "valid-size 944 is more than the 943 users"),
    (["--dataset", "ml-1m", "--task", "ctr", "--out", "{out}", "--train", "x"],
     "only go with --dataset json"),
])
def test_prepare_errors_are_one_line_and_write_nothing(tmp_path, capsys, argv, message):
    out = tmp_path / "out"
    argv = [a.format(out=out, tmp=tmp_path) for a in argv]
    code, _, err = run(["prepare", *argv], capsys)
    assert code == 2
    assert err.startswith("goracs: error: ") and err.count("\n") == 1
    assert message in err
    assert not out.exists()


def test_prepare_json_validates_copies_and_drops_stale_files(tmp_path, capsys):
    raw = write_small_100k(tmp_path / "raw")
    src = tmp_path / "src"
    assert run(["prepare", "--dataset", "ml-100k", "--path", raw, "--task", "ctr", "--out", src],
               capsys)[0] == 0
    out = tmp_path / "out"
    code, stdout, _ = run(["prepare", "--dataset", "json", "--train", src / "train.json",
                           "--valid", src / "valid.json", "--test", src / "test.json",
                           "--items", src / "items.json", "--out", out], capsys)
    assert code == 0
    for f in ("train.json", "valid.json", "test.json", "items.json"):
        assert load(out, f) == load(src, f)
    assert load(out, "meta.json")["counts"]["splits"]["valid"]["samples"] == len(
        load(src, "valid.json"))
    assert "valid" in stdout
    # JSON lines input, no test split: the earlier test.json and items.json must go.
    jl = tmp_path / "train.jsonl"
    jl.write_text("\n".join(json.dumps(r) for r in load(src, "train.json")) + "\n")
    assert run(["prepare", "--dataset", "json", "--train", jl, "--valid", src / "valid.json",
                "--out", out], capsys)[0] == 0
    assert sorted(p.name for p in out.iterdir()) == ["meta.json", "train.json", "valid.json"]
    assert load(out, "train.json") == load(src, "train.json")
    # Parquet input gives the same prepared folder
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = load(src, "train.json")
    pq.write_table(pa.table({k: [r[k] for r in rows] for k in rows[0]}), tmp_path / "t.parquet")
    pq_out = tmp_path / "pq"
    assert run(["prepare", "--dataset", "json", "--train", tmp_path / "t.parquet", "--valid",
                src / "valid.json", "--out", pq_out], capsys)[0] == 0
    assert load(pq_out, "train.json") == rows
    # A record without "output": one-line error, nothing overwritten.
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{"instruction": "i", "input": "x"}]))
    before = (out / "train.json").read_bytes()
    code, _, err = run(["prepare", "--dataset", "json", "--train", bad, "--valid",
                        src / "valid.json", "--out", out], capsys)
    assert code == 2 and "record 0 has no field 'output'" in err
    assert (out / "train.json").read_bytes() == before
    (tmp_path / "notjson.json").write_text("{oops")
    code, _, err = run(["prepare", "--dataset", "json", "--train", tmp_path / "notjson.json",
                        "--valid", src / "valid.json", "--out", out], capsys)
    assert code == 2 and "not valid JSON" in err


# -- real packaged data ---------------------------------------------------------------------

def raw_user_items(inter: Path) -> dict[str, set[str]]:
    """Each user's items, read from the .inter file with csv: independent of the reader."""
    seen: dict[str, set[str]] = {}
    with open(inter, encoding="utf-8", newline="") as f:
        rows = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        next(rows)
        for r in rows:
            seen.setdefault(r[0].split("_", 1)[1], set()).add(r[1])
    return seen


def test_ml100k_packaged_seqrec_counts_and_invariants(tmp_path, capsys):
    out = tmp_path / "out"
    code, stdout, _ = run(["prepare", "--dataset", "ml-100k", "--task", "seqrec", "--out", out],
                          capsys)
    assert code == 0
    assert ("ml-100k seqrec: 943 users, 1,664 items, 100,000 interactions, 90,570 samples "
            "(training pool 80,570)") in stdout
    c = load(out, "meta.json")["counts"]["splits"]
    assert [c[s]["samples"] for s in ("train", "valid", "test")] == [20000, 5000, 5000]
    assert len(load(out, "items.json")) == 1664
    test = load(out, "test.json")
    assert all(len(r["negatives"]) == 99 for r in test)
    check_invariants(out, raw_user_items(packaged_dir("ml-100k") / "ml-100k.inter"))


def test_ml100k_recbole_equals_grouplens_rewrite(tmp_path):
    """The packaged RecBole file, rewritten in GroupLens' u.data/u.item layout, reads back
    to the same table: the layouts are interchangeable."""
    rec = read_movielens(None, "ml-100k")
    ids = {t: str(k + 1) for k, t in enumerate(rec.titles)}
    d = tmp_path / "ml-100k"
    d.mkdir()
    (d / "u.item").write_bytes("".join(f"{ids[t]}|{t}|||x|0\n" for t in rec.titles)
                               .encode("latin-1"))
    (d / "u.data").write_text("".join(
        f"{rec.users[u]}\t{ids[rec.titles[i]]}\t{int(r)}\t{s}\n"
        for u, i, r, s in zip(rec.user_idx, rec.item_idx, rec.rating, rec.timestamp,
                              strict=True)))
    gl = read_movielens(d)
    assert gl.users == rec.users and gl.titles == rec.titles
    for col in ("user_idx", "item_idx", "rating", "timestamp"):
        assert np.array_equal(getattr(gl, col), getattr(rec, col))


def test_ml_latest_small_counts():
    t = load_interactions("ml-latest-small")
    assert (len(t), t.n_users, t.n_items) == (99_997, 671, 9_059)
    assert t.source["rows_dropped_no_title"] == 7
    assert "Toy Story (1995)" in t.titles


@pytest.mark.slow
def test_ml1m_packaged_counts_ties_and_invariants(tmp_path, capsys):
    t = read_movielens(None, "ml-1m")
    order, _ = t.user_sequences()
    u, s = t.user_idx[order], t.timestamp[order]
    assert int(((u[1:] == u[:-1]) & (s[1:] == s[:-1])).sum()) == 529_046
    out = tmp_path / "out"
    code, stdout, _ = run(["prepare", "--dataset", "ml-1m", "--task", "ctr", "--out", out],
                          capsys)
    assert code == 0
    assert ("ml-1m ctr: 6,040 users, 3,706 items, 1,000,209 interactions, 939,809 samples "
            "(training pool 929,809)") in stdout
    check_invariants(out)


@pytest.mark.slow
def test_book_crossing_counts(tmp_path, capsys):
    if not (bx_default_dir() / "BX-Book-Ratings.csv").is_file():
        pytest.skip("Book-Crossing not fetched (python scripts/fetch_data.py)")
    out = tmp_path / "out"
    code, stdout, _ = run(["prepare", "--dataset", "book-crossing", "--task", "ctr",
                           "--out", out], capsys)
    assert code == 0
    assert ("book-crossing ctr: 68,092 users, 135,554 items, 383,853 interactions, "
            "218,906 samples") in stdout
    meta = load(out, "meta.json")
    assert meta["time"].startswith("file order")
    assert meta["sizes"]["like_threshold"] == 5.0
    check_invariants(out)


@pytest.mark.slow
def test_ml1m_user_time_one_test_and_one_validation_sample_per_user():
    """The per-user split on the real ML-1M (8 s measured on a shared CPU: 4.3 s reading the
    packaged file, 0.6 s build_prepared, the rest the checks): every user's last rating is a
    test sample, the one before a validation sample, and their training samples come
    earlier in their sequence."""
    t = load_interactions("ml-1m")
    p = build_prepared(t, "ctr", DOMAINS["movies"], dataset="ml-1m", split="user-time",
                       max_train=3000)
    c = p.meta["counts"]["splits"]
    assert [(c[s]["samples"], c[s]["users"]) for s in ("train", "valid", "test")] == [
        (3000, c["train"]["users"]), (6040, 6040), (6040, 6040)]
    assert c["test"]["top5_share"] == c["valid"]["top5_share"] == round(5 / 6040, 6)
    assert p.meta["counts"]["train_pool"] == 939_809 - 2 * 6040
    # Each record back to its row (a user rates a movie once in ML-1M) and its position in
    # the user's sequence.
    order, starts = t.user_sequences()
    lengths = np.diff(starts)
    rank = np.empty(len(t), dtype=np.int64)
    rank[order] = np.arange(len(t)) - np.repeat(starts[:-1], lengths)
    key = t.user_idx * t.n_items + t.item_idx
    by_key = np.argsort(key)
    user_code = {u: k for k, u in enumerate(t.users)}
    item_code = {s: k for k, s in enumerate(t.titles)}

    def positions(recs):
        u = np.array([user_code[r["user"]] for r in recs])
        rows = by_key[np.searchsorted(key[by_key], u * t.n_items + np.array(
            [item_code[r["target"]] for r in recs]))]
        assert (t.timestamp[rows] == [r["timestamp"] for r in recs]).all()
        return u, rank[rows], t.timestamp[rows]

    tu, tr, ts = positions(p.splits["test"])
    vu, vr, vs = positions(p.splits["valid"])
    assert (tr == lengths[tu] - 1).all()
    assert (vr[np.argsort(vu)] == lengths[np.sort(vu)] - 2).all()
    test_stamp = np.zeros(t.n_users, dtype=np.int64)
    test_stamp[tu] = ts
    valid_stamp = np.zeros(t.n_users, dtype=np.int64)
    valid_stamp[vu] = vs
    assert (valid_stamp <= test_stamp).all()
    nu, nr, ns = positions(p.splits["train"])
    assert (nr < lengths[nu] - 2).all() and (ns <= valid_stamp[nu]).all()
    for recs in p.splits.values():
        stamps = [r["timestamp"] for r in recs]
        assert stamps == sorted(stamps)
