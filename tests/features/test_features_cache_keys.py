"""The cache keys of gradient scores and LLM embeddings stay what earlier runs keyed by."""

from __future__ import annotations

import numpy as np
import pytest

from goracs.errors import GoracsError
from goracs.features.cache_keys import CACHE_VERSION, prompt_embeddings_key, scores_key

IDENTITY = {"model": "/models/smollm2", "model_files": "abc123", "dtype": "fp32",
            "adapter": None, "lora": {"r": 8, "alpha": 16, "targets": ["q_proj", "v_proj"],
                                      "seed": 0}}
BLOCK = "base_model.model.model.layers.29.self_attn.v_proj.lora_B.default.weight"
IDS = [[1, 2, 3, 4, 5], [1, 2, 3, 9]]
STARTS = [3, 2]


def key(starts=None, loss="text", fast=True, share=True, **kw):
    return scores_key(IDS, starts, identity=IDENTITY, block=BLOCK, batch_size=8,
                      sort_by_length=True, share_prefix=share, fast=fast, loss=loss, **kw)


def test_keys_are_pinned():
    # Caches on disk are found by these keys: a change here orphans every one of them.
    assert CACHE_VERSION == 2
    assert key() == "99457f208eafa317e327994e"
    assert key(STARTS) == "106c45115119142c799c0374"
    assert key(STARTS, "response", scores=False, embed=True) == "1dc3eb2b31d572e574f6ca58"
    assert key(STARTS, fast=False, share=False) == "2ebb87fd9d61e5e8b14a3bd1"
    assert prompt_embeddings_key(
        [np.asarray(s, dtype=np.int32) for s in IDS], np.asarray(STARTS, dtype=np.int64),
        identity=IDENTITY, batch_size=8, share_prefix=True, fast=True,
    ) == "296d101f7c6be61d8b775760"


def test_keys_need_the_model_identity():
    with pytest.raises(GoracsError, match="caching gradient norms needs the model identity"):
        scores_key(IDS, None, identity=None, block=BLOCK, batch_size=8, sort_by_length=True,
                   share_prefix=True, fast=True, loss="text")
    with pytest.raises(GoracsError, match="caching LLM embeddings needs the model identity"):
        prompt_embeddings_key(IDS, np.asarray(STARTS), identity=None, batch_size=8,
                              share_prefix=True, fast=True)
