"""Windows, temporal split, training subset and negatives on hand-checked tiny tables."""

from __future__ import annotations

import numpy as np
import pytest

from goracs.data import (
    Interactions,
    build_prepared,
    build_windows,
    sample_negatives,
    split_sizes,
    subsample_train,
    top_user_share,
    user_time_split,
)
from goracs.errors import GoracsError
from goracs.prompts import DOMAINS

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


def crowd_table() -> Interactions:
    """Five hot items rated by 200 crowd users each, 44 cold items rated once each, and a probe
    user who rated one cold item: the probe's candidates weigh 200 (hot) and 1 (cold)."""
    rows = [(f"crowd{u}", f"hot{i}", 4.0, u) for u in range(200) for i in range(5)]
    rows += [(f"lonely{i}", f"cold{i}", 4.0, i) for i in range(45)]
    rows += [("probe", "cold0", 4.0, 1)]
    u, t, r, s = zip(*rows, strict=True)
    return Interactions.from_columns(u, t, r, s)


@pytest.mark.parametrize("by, hot_share", [("uniform", 5 / 49), ("popularity", 1000 / 1044)])
def test_negatives_are_drawn_uniformly_or_by_popularity(by, hot_share):
    table = crowd_table()
    probe = table.users.index("probe")
    neg = sample_negatives(table, np.full(4000, probe), k=1, seed=0, by=by)[:, 0]
    titles = [table.titles[c] for c in neg]
    assert "cold0" not in titles  # the probe's own item is never a negative
    share = np.mean([t.startswith("hot") for t in titles])
    assert abs(share - hot_share) < 0.025  # 4,000 draws: the sd of the share is <= 0.008
    again = sample_negatives(table, np.full(4000, probe), k=1, seed=0, by=by)[:, 0]
    assert np.array_equal(neg, again)


def test_how_popular_the_negatives_are_beside_their_targets():
    from goracs.data.samples import negatives_popularity

    table = crowd_table()
    code = {t: i for i, t in enumerate(table.titles)}
    # interactions: hot 200 each, cold 1 each (cold0 2: lonely0 and the probe)
    stats = negatives_popularity(table, np.array([code["hot0"], code["cold1"]]),
                                 np.array([[code["cold2"], code["hot1"]],
                                           [code["hot2"], code["cold3"]]]))
    # row 0: neither beats hot0's 200 (a tie is not more); row 1: hot2 beats cold1
    assert stats == {"target_median_interactions": 100.5,
                     "negative_median_interactions": 100.5,
                     "more_popular_than_target": 0.25}


def test_popularity_negatives_are_distinct_and_recorded_in_meta():
    table = catalogue_table()
    neg = sample_negatives(table, np.array([0, 1, 2]), k=12, seed=7, by="popularity")
    assert all(len(set(row.tolist())) == 12 for row in neg)
    p = build_prepared(table, "seqrec", DOMAINS["movies"], negatives=5, seed=2,
                       negative_sampling="popularity")
    assert p.meta["sizes"]["negative_sampling"] == "popularity"
    assert set(p.meta["counts"]["negatives"]) == {"target_median_interactions",
                                                  "negative_median_interactions",
                                                  "more_popular_than_target"}
    with pytest.raises(GoracsError, match="unknown negative sampling 'pop'"):
        build_prepared(table, "seqrec", DOMAINS["movies"], negatives=5,
                       negative_sampling="pop")


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


# -- user-time split --------------------------------------------------------------------------

def tied_table(seed: int = 5, n_users: int = 30) -> Interactions:
    """Users with 1-25 interactions over only 40 distinct times: many ties in time, within
    and across users, and (with max_history 3) users too short for any window, for a
    validation window or for a training window."""
    rng = np.random.default_rng(seed)
    sizes = rng.integers(1, 26, size=n_users)
    # With max_history 3: 1 interaction gives no window, 3 give one, 5 give two, 6 three.
    sizes[:4] = [1, 3, 5, 6]
    rows = []
    for u in range(n_users):
        for it in rng.choice(60, size=int(sizes[u]), replace=False):
            rows.append((f"u{u:02d}", f"item{it:02d}", float(rng.integers(1, 6)),
                         int(rng.integers(0, 40))))
    u, t, r, s = zip(*rows, strict=True)
    return Interactions.from_columns(u, t, r, s)


def test_user_time_split_on_the_tiny_table():
    # max_history=1, windows in global order: k0 row 0 (u1), k1 row 1 (u2), k2 row 3 (u1),
    # k3 row 6 (u2), k4 row 7 (u1). u1's sequence: rows 0, 3, 7; u2's: rows 1, 6.
    t = tiny()
    win = build_windows(t, 1)
    pool, valid, test = user_time_split(win, t.user_idx[win.target_rows()])
    assert (pool.tolist(), valid.tolist(), test.tolist()) == ([0], [1, 2], [3, 4])
    p = build_prepared(t, "ctr", DOMAINS["movies"], max_history=1, split="user-time")
    assert [(r["user"], r["target"]) for r in p.splits["train"]] == [("u1", "X")]
    assert [(r["user"], r["target"]) for r in p.splits["valid"]] == [("u2", "Y"), ("u1", "Z")]
    assert [(r["user"], r["target"]) for r in p.splits["test"]] == [("u2", "W"), ("u1", "W")]
    assert p.meta["split"] == p.meta["sizes"]["split"] == "user-time"
    c = p.meta["counts"]
    assert (c["train_pool"], c["valid_candidates"], c["test_candidates"]) == (1, 2, 2)
    assert c["splits"]["valid"]["top5_share"] == 1.0


def test_user_time_split_orders_each_user_and_partitions_the_windows():
    t = tied_table()
    win = build_windows(t, 3)
    users = t.user_idx[win.target_rows()]
    pool, valid, test = user_time_split(win, users)
    for part in (pool, valid, test):
        assert (np.diff(part) > 0).all()  # ascending window index = global time order
    assert sorted(np.concatenate([pool, valid, test]).tolist()) == list(range(len(win)))
    n_windows = np.bincount(users, minlength=t.n_users)
    assert np.bincount(users[test], minlength=t.n_users).tolist() == (n_windows >= 1).tolist()
    assert np.bincount(users[valid], minlength=t.n_users).tolist() == (n_windows >= 2).tolist()
    assert (n_windows == 1).any() and (n_windows == 2).any() and (n_windows >= 3).any()
    stamps = t.timestamp[win.target_rows()]
    for u in np.flatnonzero(n_windows):
        mine = np.flatnonzero(users == u)
        last = mine[np.argmax(win.pos[mine])]
        assert test[users[test] == u].tolist() == [last]
        if n_windows[u] < 2:
            continue
        v = int(valid[users[valid] == u][0])
        before = pool[users[pool] == u]
        # By position in the user's sequence: strictly before; by time: never after.
        assert (win.pos[before] < win.pos[v]).all() and win.pos[v] < win.pos[last]
        assert (stamps[before] <= stamps[v]).all() and stamps[v] <= stamps[last]
        assert len(before) == n_windows[u] - 2


def test_user_time_valid_and_test_subsets_are_seeded_one_per_user():
    t = tied_table()
    kw = {"max_history": 3, "split": "user-time", "valid_size": 6, "test_size": 8,
          "max_train": 20}
    a = build_prepared(t, "ctr", DOMAINS["movies"], seed=4, **kw)
    b = build_prepared(t, "ctr", DOMAINS["movies"], seed=4, **kw)
    other = build_prepared(t, "ctr", DOMAINS["movies"], seed=5, **kw)
    assert a.splits == b.splits
    for name, size in (("valid", 6), ("test", 8)):
        recs = a.splits[name]
        assert len(recs) == len({r["user"] for r in recs}) == size
        stamps = [r["timestamp"] for r in recs]
        assert stamps == sorted(stamps)
        assert recs != other.splits[name]
    assert len(a.splits["train"]) == 20
    # Each stream is its own draw: the pool's matches subsample_train with the plain seed,
    # the validation and test subsets match default_rng([seed, 2]) and ([seed, 3]).
    win = build_windows(t, 3)
    pool, valid, test = user_time_split(win, t.user_idx[win.target_rows()])
    rows = win.target_rows()
    expect_train = rows[pool[subsample_train(len(pool), 20, 4)]]
    expect_valid = rows[np.sort(valid[np.random.default_rng([4, 2]).choice(
        len(valid), 6, replace=False)])]
    expect_test = rows[np.sort(test[np.random.default_rng([4, 3]).choice(
        len(test), 8, replace=False)])]
    for name, expect in (("train", expect_train), ("valid", expect_valid),
                         ("test", expect_test)):
        got = [(r["user"], r["target"], r["timestamp"]) for r in a.splits[name]]
        assert got == [(t.users[t.user_idx[k]], t.titles[t.item_idx[k]], int(t.timestamp[k]))
                       for k in expect]
    # A given size keeps that many of the full per-user set, which has one per user.
    full = build_prepared(t, "ctr", DOMAINS["movies"], seed=4, max_history=3,
                          split="user-time", max_train=20)
    assert full.splits["train"] == a.splits["train"]
    assert {r["user"] for r in a.splits["test"]} <= {r["user"] for r in full.splits["test"]}
    assert len(full.splits["test"]) == full.meta["counts"]["test_candidates"]
    assert [r for r in full.splits["test"] if r in a.splits["test"]] == a.splits["test"]


def test_user_time_errors_are_one_line():
    t = tied_table()
    with pytest.raises(GoracsError, match=r"test-size 999 is more than the \d+ users"):
        build_prepared(t, "ctr", DOMAINS["movies"], max_history=3, split="user-time",
                       test_size=999)
    with pytest.raises(GoracsError, match="no training samples"):
        build_prepared(tiny(), "ctr", DOMAINS["movies"], max_history=2, split="user-time")
    with pytest.raises(GoracsError, match="no validation samples"):
        build_prepared(tiny(), "ctr", DOMAINS["movies"], split="user-time")
    with pytest.raises(GoracsError) as err:
        build_prepared(t, "ctr", DOMAINS["movies"], split="per-user")
    assert str(err.value) == "unknown split 'per-user'; known: global-time, user-time"


def test_global_time_is_the_default_and_unchanged():
    t = tied_table()
    default = build_prepared(t, "seqrec", DOMAINS["movies"], negatives=5, max_train=50)
    given = build_prepared(t, "seqrec", DOMAINS["movies"], negatives=5, max_train=50,
                           split="global-time")
    assert default.splits == given.splits and default.meta == given.meta
    assert default.meta["split"] == default.meta["sizes"]["split"] == "global-time"
    assert "test_candidates" not in default.meta["counts"]
    # The last test_size windows in global order are the test set, as before.
    win = build_windows(t)
    n_train, n_valid, n_test = split_sizes(len(win))
    rows = win.target_rows()
    for name, idx in (("train", subsample_train(n_train, 50, 0)),
                      ("valid", np.arange(n_train, n_train + n_valid)),
                      ("test", np.arange(n_train + n_valid, len(win)))):
        assert [(r["user"], r["timestamp"]) for r in default.splits[name]] == [
            (t.users[t.user_idx[k]], int(t.timestamp[k])) for k in rows[idx]]


def test_top_user_share_by_hand():
    # 13 samples: a 4, b 3, c 2, d e f g 1 each; the top five hold 4+3+2+1+1 = 11.
    users = list("aaaabbbcc") + list("defg")
    assert top_user_share(users) == pytest.approx(11 / 13)
    assert top_user_share(users, k=1) == pytest.approx(4 / 13)
    assert top_user_share(np.array([3, 3, 1])) == 1.0
    assert top_user_share([]) == 0.0
    p = build_prepared(tied_table(), "ctr", DOMAINS["movies"], max_history=3,
                       split="user-time", max_train=40)
    for name, recs in p.splits.items():
        assert p.meta["counts"]["splits"][name]["top5_share"] == round(
            top_user_share([r["user"] for r in recs]), 6)
