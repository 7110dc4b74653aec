"""Reading a record's history back from its prompt (CTR and SeqRec)."""

import pytest

from goracs.errors import GoracsError
from goracs.prompts import DOMAINS, ctr_history, ctr_record, liked_share


def _rec(history, liked):
    return ctr_record(DOMAINS["movies"], history, liked, "Heat (1995)", True, "7", 1)


def test_history_round_trips_through_the_prompt():
    titles = ["Toy Story (1995)", "Big Lebowski, The (1998)", "M (1931)", "Se7en (1995)"]
    rec = _rec(titles, [True, False, True, True])
    assert ctr_history(rec) == (["Toy Story (1995)", "M (1931)", "Se7en (1995)"],
                                ["Big Lebowski, The (1998)"])
    assert liked_share(rec) == pytest.approx(0.75)


def test_one_sided_and_empty_histories():
    assert ctr_history(_rec(["A (1)", "B (2)"], [False, False])) == ([], ["A (1)", "B (2)"])
    assert liked_share(_rec(["A (1)"], [True])) == 1.0
    assert liked_share(_rec([], [])) == 0.5


def test_other_wordings_fail_in_one_line():
    with pytest.raises(GoracsError, match="not a CTR record"):
        ctr_history({"input": "The user has watched the following movies before: \"A\""})
    with pytest.raises(GoracsError, match="unquoted"):
        ctr_history({"input": "User Preference: A, B\nUser Unpreference: "})


def test_seqrec_history_reads_back_the_quoted_list():
    from goracs.prompts import seqrec_history, seqrec_record

    titles = ["Toy Story (1995)", "Crying Game, The (1992)", "M (1931)"]
    rec = seqrec_record(DOMAINS["books"], titles, "Se7en (1995)", "u", 1)
    assert seqrec_history(rec) == titles
    assert seqrec_history(seqrec_record(DOMAINS["movies"], [], "X (1)", "u", 1)) == []
    with pytest.raises(GoracsError, match="not a SeqRec record"):
        seqrec_history({"input": "User Preference: \"A (1)\""})
