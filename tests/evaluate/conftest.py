"""The real packaged model and real ML-1M records, loaded once for the slow evaluate tests."""

from __future__ import annotations

from typing import Any

import pytest


@pytest.fixture(scope="session")
def smollm() -> tuple[Any, Any]:
    """The packaged SmolLM2-135M-Instruct in float32 (no adapter) and its tokenizer."""
    pytest.importorskip("torch")
    from goracs.lm import load_lm

    lm, tok, _ = load_lm(None, None)
    lm.eval()
    return lm, tok


@pytest.fixture(scope="session")
def ml1m_test_records() -> Any:
    """Test records of ML-1M as ``goracs prepare`` renders them, per task (built on demand):
    ``ml1m_test_records("ctr")`` is the 1,000-record test split of the ctr task."""
    from goracs.data.prepare import build_prepared, default_domain, load_interactions

    built: dict[str, list[dict[str, Any]]] = {}
    table = []

    def records(task: str) -> list[dict[str, Any]]:
        if task not in built:
            if not table:
                table.append(load_interactions("ml-1m"))
            prepared = build_prepared(table[0], task, default_domain("ml-1m"), dataset="ml-1m",
                                      valid_size=200, test_size=1000, max_train=1000, seed=0)
            built[task] = prepared.splits["test"]
        return built[task]

    return records
