"""Judging a fine-tuned model: BIGRec grounding for SeqRec, TALLRec P(Yes) for CTR
(``goracs evaluate``); the metric arithmetic lives in :mod:`goracs.evaluate.metrics`."""

from goracs.evaluate.metrics import (
    accuracy,
    auc,
    ctr_metrics,
    hit_ratio_at_k,
    l2_distances,
    log_loss,
    ndcg_at_k,
    rank_among_titles,
    ranking_metrics,
    target_rank,
)

__all__ = ["accuracy", "auc", "ctr_metrics", "hit_ratio_at_k", "l2_distances", "log_loss",
           "ndcg_at_k", "rank_among_titles", "ranking_metrics", "target_rank"]
