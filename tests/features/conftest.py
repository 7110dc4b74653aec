"""The real packaged models, loaded once for the features tests."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def scoring_model():
    """The packaged SmolLM2 (converted once into the cache) with a fresh seeded LoRA."""
    from goracs.features import load_scoring_model

    return load_scoring_model(None)
