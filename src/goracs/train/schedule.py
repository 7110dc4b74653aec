"""The learning-rate schedule and the early-stopping rule of a fine-tuning run."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any


def lr_factor(step: int, total_steps: int, warmup_steps: int) -> float:
    """Multiplier of the base learning rate at optimizer step ``step`` (0-based): linear
    warm-up over ``warmup_steps`` steps, then linear decay reaching zero after the last step."""
    if warmup_steps and step < warmup_steps:
        return (step + 1) / warmup_steps
    remaining = total_steps - step
    return max(0.0, remaining / max(1, total_steps - warmup_steps))


def should_stop(history: Sequence[Mapping[str, Any]], best_epoch: int | None,
                patience: int | None) -> bool:
    """Early stopping: ``patience`` epochs have passed since the best validation loss."""
    if patience is None or best_epoch is None or not history:
        return False
    return history[-1]["epoch"] - best_epoch >= patience
