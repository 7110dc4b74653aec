"""Model-free references: what a rule that knows no model scores on the same test samples.

A fine-tuned recommender is worth its cost only where it beats what simple counting already
knows, so every comparison of coresets carries these rows beside the models:

* CTR, the **liked-share rule**: P(Yes) = (liked + 1) / (liked + disliked + 2), the share of the
  history the user liked with one pseudo-count on each side (so that an all-liked history
  gives a finite log-loss). Its AUC is that of the plain share up to ties.
* SeqRec, **popularity**: candidates ranked by how often each title occurs in the training
  pool (histories and targets), among the record's sampled negatives and over the catalogue.

Both return rows in the format of ``predictions.jsonl`` (:mod:`goracs.evaluate.run`), so the
same paired comparison reads a reference and a model alike.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np

from goracs.errors import GoracsError
from goracs.evaluate.metrics import rank_among_titles
from goracs.prompts import ctr_history, seqrec_history


def liked_share_probability(record: dict[str, Any]) -> float:
    """The rule's P(Yes) for one CTR record: (liked + 1) / (history + 2)."""
    pref, unpref = ctr_history(record)
    return (len(pref) + 1.0) / (len(pref) + len(unpref) + 2.0)


def liked_share_predictions(test: Sequence[dict[str, Any]], indices: Sequence[int]
                            ) -> list[dict[str, Any]]:
    """CTR prediction rows (``index``, ``user``, ``target``, ``label``, ``p_yes``) of the
    liked-share rule for the test records at ``indices``."""
    rows = []
    for i in indices:
        rec = test[int(i)]
        if rec.get("output") not in ("Yes", "No"):
            raise GoracsError(f"test record {int(i)} is not a CTR record (output "
                              f"{rec.get('output')!r})")
        rows.append({"index": int(i), "user": rec.get("user"), "target": rec.get("target"),
                     "label": int(rec["output"] == "Yes"),
                     "p_yes": liked_share_probability(rec)})
    return rows


def title_counts(train: Sequence[dict[str, Any]]) -> Counter:
    """How often each title occurs in SeqRec training records, histories and targets."""
    counts: Counter = Counter()
    for rec in train:
        counts.update(seqrec_history(rec))
        if not isinstance(rec.get("target"), str):
            raise GoracsError("a SeqRec training record has no 'target' title")
        counts[rec["target"]] += 1
    return counts


def popularity_ranks(test: Sequence[dict[str, Any]], counts: Counter, catalogue: Sequence[str]
                     ) -> tuple[list[int | None], list[int | None]]:
    """The target's 0-based rank by popularity among its sampled candidates (itself and its
    negatives) and over the catalogue; ties count against the target as
    :func:`goracs.evaluate.metrics.rank_among_titles` breaks them."""
    cat_scores = -np.array([counts[t] for t in catalogue], dtype=np.float64)
    sampled: list[int | None] = []
    full: list[int | None] = []
    for rec in test:
        if not isinstance(rec.get("negatives"), list):
            raise GoracsError("a SeqRec test record has no 'negatives' list")
        cands = [rec["target"], *rec["negatives"]]
        sampled.append(rank_among_titles(-np.array([counts[t] for t in cands], np.float64),
                                         cands, rec["target"]))
        full.append(rank_among_titles(cat_scores, catalogue, rec["target"]))
    return sampled, full


def popularity_predictions(train: Sequence[dict[str, Any]], test: Sequence[dict[str, Any]],
                           catalogue: Sequence[str], indices: Sequence[int]
                           ) -> list[dict[str, Any]]:
    """SeqRec prediction rows (``index``, ``user``, ``target``, ``rank_sampled``,
    ``rank_full``) of the popularity rule for the test records at ``indices``."""
    chosen = [test[int(i)] for i in indices]
    sampled, full = popularity_ranks(chosen, title_counts(train), catalogue)
    return [{"index": int(i), "user": rec.get("user"), "target": rec.get("target"),
             "rank_sampled": s, "rank_full": f}
            for i, rec, s, f in zip(indices, chosen, sampled, full, strict=True)]
