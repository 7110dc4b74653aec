"""What a task's scoring is given (:class:`EvalContext`) and what it gives back
(:class:`Scored`); :func:`goracs.evaluate.run.evaluate` builds the one and writes the other."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from goracs.evaluate.settings import EvalSettings


@dataclass(frozen=True)
class EvalContext:
    """One evaluation's model and the test records it scores.

    ``records`` are the test records scored and ``indices`` their positions in ``test.json``;
    ``prompts`` are their renderings without the answer, and ``order`` their positions sorted
    by prompt length (a batch of similar lengths pads little; results return to file order).
    ``work`` is the folder of the model passes' resumable chunks. ``share_prefix``: run the
    prompt tokens all records share once where the scoring supports it
    (:mod:`goracs.evaluate.prefix`).
    """

    model: Any
    tokenizer: Any
    identity: Mapping[str, Any]
    records: Sequence[Mapping[str, Any]]
    indices: np.ndarray
    prompts: Sequence[str]
    order: Sequence[int]
    work: Path
    settings: EvalSettings
    device: str
    progress: bool = True
    share_prefix: bool = True

    def __len__(self) -> int:
        return len(self.records)

    def sorted_prompts(self, start: int, end: int) -> list[str]:
        """The prompts at positions ``start`` to ``end`` of the length order."""
        return [self.prompts[self.order[i]] for i in range(start, end)]


@dataclass
class Scored:
    """A task's scores: its entries of ``metrics.json`` (in order, ``metrics`` among them),
    one prediction line per record scored, and the seconds of its phases."""

    doc: dict[str, Any] = field(default_factory=dict)
    lines: list[dict[str, Any]] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)


RESUMED = "_resumed"


def pass_seconds(name: str, wall: float, resumed: float) -> dict[str, float]:
    """The ``seconds`` entries of a resumable pass: ``name`` is this attempt's wall time plus
    the ``resumed`` seconds earlier attempts spent on the chunks it read back, and
    ``name_resumed``, present when an earlier attempt did part of the pass, is that part."""
    out = {name: round(wall + resumed, 3)}
    if resumed > 0:
        out[name + RESUMED] = round(resumed, 3)
    return out
