"""Evaluation settings (``goracs evaluate``): the test subset, batch sizes, generation, dtype,
and how SeqRec answers are decoded and ranked."""

from __future__ import annotations

from dataclasses import dataclass

from goracs.errors import GoracsError

DECODINGS = ("free", "catalogue")
RANKINGS = ("grounding", "likelihood")


@dataclass(frozen=True)
class EvalSettings:
    """How the test set is scored. ``max_test`` keeps a seeded random subset of the test
    records (``None``: all); ``batch_size`` is the number of prompts per forward or generate
    call; ``num_beams=1`` is greedy decoding."""

    max_test: int | None = None
    seed: int = 0
    batch_size: int = 8
    max_new_tokens: int = 32
    num_beams: int = 1
    embed_batch_size: int = 32
    dtype: str = "fp32"
    decoding: str = "free"
    ranking: str = "grounding"

    def validate(self) -> EvalSettings:
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise GoracsError(f"seed must be an integer >= 0, got {self.seed}")
        if self.max_test is not None and self.max_test < 1:
            raise GoracsError(f"max-test must be at least 1, got {self.max_test}")
        for name in ("batch_size", "max_new_tokens", "num_beams", "embed_batch_size"):
            if getattr(self, name) < 1:
                raise GoracsError(f"{name.replace('_', '-')} must be at least 1, got "
                                  f"{getattr(self, name)}")
        if self.dtype not in ("fp32", "bf16"):
            raise GoracsError(f"dtype must be fp32 or bf16, got {self.dtype!r}")
        if self.decoding not in DECODINGS:
            raise GoracsError(f"decoding must be one of {', '.join(DECODINGS)}, got "
                              f"{self.decoding!r}")
        if self.ranking not in RANKINGS:
            raise GoracsError(f"ranking must be one of {', '.join(RANKINGS)}, got "
                              f"{self.ranking!r}")
        return self
