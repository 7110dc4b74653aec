"""Evaluation settings: every value checked, one line per fault."""

import pytest

from goracs.errors import GoracsError
from goracs.evaluate.run import EvalSettings as FromRun
from goracs.evaluate.settings import EvalSettings


def test_settings_reject_unknown_decoding_and_ranking():
    assert EvalSettings(decoding="catalogue", ranking="likelihood").validate()
    with pytest.raises(GoracsError, match="decoding must be one of free, catalogue"):
        EvalSettings(decoding="trie").validate()
    with pytest.raises(GoracsError, match="ranking must be one of grounding, likelihood"):
        EvalSettings(ranking="sum").validate()


@pytest.mark.parametrize("changes, message", [
    ({"num_beams": 0}, "num-beams must be at least 1, got 0"),
    ({"batch_size": 0}, "batch-size must be at least 1"),
    ({"max_test": 0}, "max-test must be at least 1"),
    ({"seed": -1}, "seed must be an integer >= 0"),
    ({"seed": True}, "seed must be an integer >= 0"),
    ({"dtype": "fp16"}, "dtype must be fp32 or bf16"),
])
def test_bad_settings_are_refused(changes, message):
    with pytest.raises(GoracsError, match=message):
        EvalSettings(**changes).validate()


def test_the_settings_are_importable_where_the_runner_is():
    assert FromRun is EvalSettings
