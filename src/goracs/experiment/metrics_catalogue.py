"""The metrics an experiment's tables may show per task (which way each is better:
:func:`goracs.evaluate.verdict.lower_is_better`)."""

from __future__ import annotations

from goracs.evaluate.metrics import KS


def known_metrics(task: str) -> tuple[str, ...]:
    """Metric names a table may show for ``task``: keys of ``metrics.json``'s ``metrics``,
    with SeqRec's protocols as prefixes (``sampled.NDCG@10``, ``full.HR@20``)."""
    if task == "ctr":
        return ("AUC", "log_loss", "accuracy", "positive_rate", "mean_p_yes")
    ranked = tuple(f"{proto}.{m}@{k}" for proto in ("sampled", "full") for m in ("NDCG", "HR")
                   for k in KS)
    return ranked + ("exact_match", "answer_in_catalogue")
