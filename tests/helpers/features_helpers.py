"""Small hand-written prepared folders for the features tests."""

from __future__ import annotations

import json
from pathlib import Path

SEQREC_INSTRUCTION = ("Given a list of movies the user has watched before, please recommend a "
                      "new movie that the user likes to the user.")
CTR_INSTRUCTION = ("Given the user's preference and unpreference, identify whether the user "
                   'will like the target movie by answering "Yes" or "No".')

HISTORIES = [
    (["Toy Story (1995)", "Jumanji (1995)"], "Heat (1995)"),
    (["Casino (1995)"], "Sabrina (1995)"),
    (["Fargo (1996)", "Babe (1995)", "Clueless (1995)"], "Braveheart (1995)"),
    (["Twelve Monkeys (1995)", "Apollo 13 (1995)"], "Batman Forever (1995)"),
    (["Se7en (1995)"], "Pocahontas (1995)"),
    (["The Usual Suspects (1995)", "Nixon (1995)", "GoldenEye (1995)", "Balto (1995)"],
     "Othello (1995)"),
    (["Dead Man Walking (1995)", "Get Shorty (1995)"], "Copycat (1995)"),
    (["Ace Ventura: When Nature Calls (1995)"], "Money Train (1995)"),
]


def quoted(titles: list[str]) -> str:
    return ", ".join(f'"{t}"' for t in titles)


def seqrec_records(n: int, start: int = 0) -> list[dict]:
    out = []
    for k in range(start, start + n):
        hist, target = HISTORIES[k % len(HISTORIES)]
        out.append({
            "instruction": SEQREC_INSTRUCTION,
            "input": f"The user has watched the following movies before: {quoted(hist)}",
            "output": f'"{target}"', "user": f"u{k}", "target": target, "timestamp": 1000 + k,
        })
    return out


def ctr_records(n: int, start: int = 0) -> list[dict]:
    out = []
    for k in range(start, start + n):
        hist, target = HISTORIES[k % len(HISTORIES)]
        out.append({
            "instruction": CTR_INSTRUCTION,
            "input": (f"User Preference: {quoted(hist[:1])}\nUser Unpreference: "
                      f'{quoted(hist[1:])}\nWhether the user will like the target movie '
                      f'"{target}"?'),
            "output": "Yes" if k % 3 else "No", "user": f"u{k}", "target": target,
            "timestamp": 1000 + k,
        })
    return out


def write_prepared(folder: Path, task: str, n_train: int, n_valid: int) -> Path:
    make = seqrec_records if task == "seqrec" else ctr_records
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "train.json").write_text(json.dumps(make(n_train)))
    (folder / "valid.json").write_text(json.dumps(make(n_valid, start=n_train)))
    (folder / "test.json").write_text(json.dumps(make(2, start=n_train + n_valid)))
    (folder / "items.json").write_text(json.dumps(sorted({t for _, t in HISTORIES})))
    (folder / "meta.json").write_text(json.dumps({"task": task, "dataset": "handmade"}))
    return folder


def interrupt_at_call(monkeypatch, scorer, n: int) -> list[int]:
    """Make ``scorer.batch_scores`` raise KeyboardInterrupt on its ``n``-th call (the batches
    before it run for real); returns the list that records each call's batch size."""
    real = scorer.batch_scores
    calls: list[int] = []

    def failing(seqs, starts=None):
        calls.append(len(seqs))
        if len(calls) == n:
            raise KeyboardInterrupt
        return real(seqs, starts)

    monkeypatch.setattr(scorer, "batch_scores", failing)
    return calls
