"""Windows, temporal split, training subset and negatives on hand-checked tiny tables."""

from __future__ import annotations

import numpy as np
import pytest

from goracs.data import (
    DOMAINS,
    Interactions,
    build_prepared,
    build_windows,
    sample_negatives,
    split_sizes,
    subsample_train,
)
from goracs.errors import GoracsError

# Row (file order): user, title, rating, time. Worked by hand:
#   u1 rows 0(100) 2(50) 3(100) 7(300) -> sorted Y(50) X(100) Z(100) W(300); the tie at 100
#      keeps file order (row 0 before row 3).
#   u2 rows 1(100) 4(90) 6(200)        -> sorted X(90) Y(100) W(200)
#   u3 row 5 only                       -> no window (its only window would have no history)
TINY = [
    ("u1", "X", 5, 100),
    ("u2", "Y", 2, 100),
    ("u1", "Y", 4, 50),
    ("u1", "Z", 1, 100),
    ("u2", "X", 4, 90),
    ("u3", "Z", 3, 70),
    ("u2", "W", 5, 200),
    ("u1", "W", 2, 300),
]


def tiny() -> Interactions:
    u, t, r, s = zip(*TINY, strict=True)
    return Interactions.from_columns(u, t, r, s)


def windows_as_titles(table: Interactions, max_history: int) -> list[tuple[int, list[str]]]:
    win = build_windows(table, max_history)
    out = []
    for k in range(len(win)):
        row = int(win.target_rows()[k])
        out.append((row, [table.titles[c] for c in table.item_idx[win.history_rows(k)]]))
    return out


def test_table_vocabularies_are_sorted_and_codes_follow_rows():
    t = tiny()
    assert t.users == ["u1", "u2", "u3"]
    assert t.titles == ["W", "X", "Y", "Z"]
    assert t.user_idx.tolist() == [0, 1, 0, 0, 1, 2, 1, 0]
    assert t.item_idx.tolist() == [1, 2, 2, 3, 1, 3, 0, 0]
    assert not t.time_is_file_order


def test_user_sequences_sort_by_time_then_file_order():
    order, starts = tiny().user_sequences()
    assert starts.tolist() == [0, 4, 7, 8]
    assert order.tolist() == [2, 0, 3, 7, 4, 1, 6, 5]


def test_windows_full_history():
    # i runs from min(10, L-1): u1 (L=4) gives i=3, u2 (L=3) gives i=2.
    assert windows_as_titles(tiny(), 10) == [(6, ["X", "Y"]), (7, ["Y", "X", "Z"])]


def test_windows_history_of_two():
    assert windows_as_titles(tiny(), 2) == [
        (3, ["Y", "X"]),   # t=100
        (6, ["X", "Y"]),   # t=200
        (7, ["X", "Z"]),   # t=300
    ]


def test_windows_history_of_one_ties_across_users_keep_file_order():
    # Three targets share t=100 (rows 0, 1, 3): global order follows the row number.
    assert windows_as_titles(tiny(), 1) == [
        (0, ["Y"]), (1, ["X"]), (3, ["X"]), (6, ["Y"]), (7, ["Z"]),
    ]


def test_split_sizes_rule():
    assert split_sizes(939_809) == (929_809, 5000, 5000)
    assert split_sizes(90_570) == (80_570, 5000, 5000)
    assert split_sizes(30_000) == (24_000, 3000, 3000)
    assert split_sizes(10) == (8, 1, 1)
    assert split_sizes(10, valid_size=3) == (6, 3, 1)
    assert split_sizes(10, valid_size=4, test_size=5) == (1, 4, 5)
    with pytest.raises(GoracsError, match="too few"):
        split_sizes(9)
    with pytest.raises(GoracsError, match="leave no training"):
        split_sizes(10, valid_size=5, test_size=5)


def test_subsample_train_is_seeded_sorted_and_matches_default_rng():
    idx = subsample_train(1000, 15, seed=0)
    expect = np.sort(np.random.default_rng(0).choice(1000, size=15, replace=False))
    assert idx.tolist() == expect.tolist()
    assert (np.diff(idx) > 0).all()
    assert subsample_train(1000, 15, seed=1).tolist() != idx.tolist()
    assert subsample_train(10, None, 0).tolist() == list(range(10))
    assert subsample_train(10, 50, 0).tolist() == list(range(10))


def catalogue_table(seed: int = 3) -> Interactions:
    """40 items, 6 users with 5-25 items each, random times."""
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(6):
        for it in rng.choice(40, size=rng.integers(5, 26), replace=False):
            rows.append((f"user{u}", f"item{it:02d}", float(rng.integers(1, 6)),
                         int(rng.integers(0, 1000))))
    u, t, r, s = zip(*rows, strict=True)
    return Interactions.from_columns(u, t, r, s)


def test_negatives_avoid_everything_the_user_touched():
    table = catalogue_table()
    users = np.array([0, 1, 2, 3, 4, 5, 0, 3])
    neg = sample_negatives(table, users, k=12, seed=7)
    assert neg.shape == (8, 12)
    for j, u in enumerate(users):
        own = set(table.item_idx[table.user_idx == u].tolist())
        assert len(set(neg[j].tolist())) == 12
        assert not own & set(neg[j].tolist())
    assert np.array_equal(neg, sample_negatives(table, users, k=12, seed=7))
    assert not np.array_equal(neg, sample_negatives(table, users, k=12, seed=8))


def test_negatives_fail_clearly_when_too_few_items():
    table = catalogue_table()
    with pytest.raises(GoracsError, match="lower --negatives"):
        sample_negatives(table, np.array([0]), k=39, seed=0)


def test_build_prepared_records_on_the_tiny_table():
    p = build_prepared(tiny(), "ctr", DOMAINS["movies"], valid_size=1, test_size=1,
                       max_history=1)
    # 5 windows: rows 0, 1, 3 (train), 6 (valid), 7 (test).
    assert [r["target"] for r in p.splits["train"]] == ["X", "Y", "Z"]
    assert [r["output"] for r in p.splits["train"]] == ["Yes", "No", "No"]
    test = p.splits["test"][0]
    assert test == {
        "instruction": "Given the user's preference and unpreference, identify whether the user "
                       'will like the target movie by answering "Yes" or "No".',
        "input": 'User Preference: \nUser Unpreference: "Z"\n'
                 'Whether the user will like the target movie "W"?',
        "output": "No",
        "user": "u1",
        "target": "W",
        "timestamp": 300,
    }


def test_build_prepared_seqrec_records_and_negatives():
    # u4 adds three early items nobody else has: the only candidates for u1's negatives.
    rows = TINY + [("u4", "V", 4, 1), ("u4", "U", 4, 2), ("u4", "T", 4, 3)]
    u, t, r, ts = zip(*rows, strict=True)
    table = Interactions.from_columns(u, t, r, ts)
    s = build_prepared(table, "seqrec", DOMAINS["books"], valid_size=1, test_size=1,
                       max_history=2, negatives=3)
    assert [r["target"] for r in s.splits["train"]] == ["T", "Z"]
    valid = s.splits["valid"][0]
    assert valid["input"] == 'The user has read the following books before: "X", "Y"'
    assert valid["output"] == '"W"'
    assert valid["instruction"] == ("Given a list of books the user has read before, please "
                                    "recommend a new book that the user likes to the user.")
    assert "negatives" not in valid
    test = s.splits["test"][0]
    assert (test["user"], test["target"], test["timestamp"]) == ("u1", "W", 300)
    assert sorted(test["negatives"]) == ["T", "U", "V"]
    assert s.items == ["T", "U", "V", "W", "X", "Y", "Z"]


def test_build_prepared_refuses_too_many_negatives():
    with pytest.raises(GoracsError, match="negatives"):
        build_prepared(tiny(), "seqrec", DOMAINS["movies"], valid_size=1, test_size=1,
                       max_history=1)


def test_meta_counts_per_split():
    p = build_prepared(catalogue_table(), "seqrec", DOMAINS["movies"], negatives=5, seed=2)
    c = p.meta["counts"]
    assert c["windows"] == sum(v["samples"] for v in c["splits"].values()) == len(
        build_windows(catalogue_table()))
    n_valid = c["splits"]["valid"]["samples"]
    assert n_valid == c["windows"] // 10
    for name in ("train", "valid", "test"):
        recs = p.splits[name]
        assert c["splits"][name]["users"] == len({r["user"] for r in recs})
