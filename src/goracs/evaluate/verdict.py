"""One paired comparison, stated: both bootstrap intervals and the sentence that answers it.

A comparison of arm B with a baseline arm A on one metric carries two intervals from
:func:`goracs.evaluate.bootstrap.paired_difference`: over test users with the seeds pooled
(what the choice of B over A changes on these users), and with the seeds redrawn as well (whether
that survives the seed-to-seed spread of fine-tuning). The verdict is taken from the first; the
sentence adds the second where its verdict differs. Used by ``goracs compare`` and by the
experiment tables' ``vs random`` column.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from goracs.evaluate.bootstrap import Difference, paired_difference

REPLICATES = 2000
LEVEL = 0.95
#: How a verdict reads in a sentence.
WORDS = {"better": "beats", "worse": "loses to", "tie": "ties with"}


def lower_is_better(metric: str) -> bool:
    """Whether a smaller value of ``metric`` is the better one (log-loss)."""
    return metric == "log_loss"


@dataclass(frozen=True)
class Comparison:
    """B against the baseline A on one metric: seeds pooled, and with the seeds redrawn."""

    users: Difference
    seeds: Difference

    def verdict(self, metric: str) -> str:
        """``"better"``, ``"worse"`` or ``"tie"`` for B, from the users interval."""
        return self.users.verdict(not lower_is_better(metric))


def compare(task: str, metric: str, a_runs: Sequence[Sequence[Mapping[str, Any]]],
            b_runs: Sequence[Sequence[Mapping[str, Any]]], *, replicates: int = REPLICATES,
            level: float = LEVEL, seed: int = 0) -> Comparison:
    """Arm B (its runs' prediction rows) against the baseline arm A on ``metric``."""
    kw = {"replicates": replicates, "level": level, "seed": seed}
    return Comparison(users=paired_difference(task, metric, a_runs, b_runs, **kw),
                      seeds=paired_difference(task, metric, a_runs, b_runs, **kw,
                                              resample_runs=True))


def format_difference(d: Difference) -> str:
    """``+0.0123 [-0.0040, +0.0290]``."""
    return f"{d.diff:+.4f} [{d.lo:+.4f}, {d.hi:+.4f}]"


def verdict_sentence(name: str, baseline: str, metric: str, c: Comparison) -> str:
    """One sentence: does ``name`` beat ``baseline`` on ``metric`` at the interval's level?"""
    v = c.verdict(metric)
    seeds = c.seeds.verdict(not lower_is_better(metric))
    tail = ""
    if seeds != v:
        tail = (f"; with the seeds redrawn too, [{c.seeds.lo:+.4f}, {c.seeds.hi:+.4f}]: "
                f"{WORDS[seeds]} {baseline}")
    runs = c.users.runs_a
    return (f"{name} {WORDS[v]} {baseline} on {metric}: {format_difference(c.users)} over "
            f"{c.users.users:,} test users, {c.users.runs_b} against {runs} "
            f"run{'s' if runs != 1 else ''}{tail}.")
