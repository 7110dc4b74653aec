"""A hand-made SeqRec folder whose popularity ranks are worked out by hand."""

from __future__ import annotations

import json
from pathlib import Path

from goracs.prompts import DOMAINS, seqrec_record

MOVIES = DOMAINS["movies"]


def write_popularity_folder(d: Path) -> Path:
    """train/valid/test/items/meta in ``d``. Title counts in train.json: A 3, B 2, C 1, D 0;
    E is not in the catalogue. The four test targets rank 0, 1, 2 and 2 (E ties with D)
    among their candidates by popularity."""
    d.mkdir(parents=True, exist_ok=True)
    train = [seqrec_record(MOVIES, ["A (1)", "B (2)"], "A (1)", "u1", 1),
             seqrec_record(MOVIES, ["A (1)"], "B (2)", "u2", 2),
             seqrec_record(MOVIES, [], "C (3)", "u3", 3)]
    test = []
    for k, (target, negs) in enumerate([("A (1)", ["B (2)", "C (3)"]),
                                        ("C (3)", ["A (1)", "D (4)"]),
                                        ("D (4)", ["C (3)", "B (2)"]),
                                        ("E (5)", ["D (4)", "A (1)"])]):
        rec = seqrec_record(MOVIES, ["A (1)"], target, f"t{k}", 10 + k)
        rec["negatives"] = negs
        test.append(rec)
    for name, recs in (("train", train), ("valid", train), ("test", test)):
        (d / f"{name}.json").write_text(json.dumps(recs))
    (d / "items.json").write_text(json.dumps(["A (1)", "B (2)", "C (3)", "D (4)"]))
    (d / "meta.json").write_text(json.dumps({"task": "seqrec", "dataset": "test"}))
    return d
