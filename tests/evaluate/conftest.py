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


@pytest.fixture(scope="module")
def tiny_llama() -> Any:
    """A two-layer random Llama (vocabulary 64, as the character tokenizer's ids), weights large
    enough that its scores move with the input."""
    torch = pytest.importorskip("torch")
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=64, hidden_size=64, intermediate_size=128,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=1024, initializer_range=0.2)
    return LlamaForCausalLM(config).eval()


class DecodingTokenizer:
    """The character tokenizer with a ``decode`` that takes ``skip_special_tokens``, as
    generation calls it (each id decodes to one character)."""

    def __init__(self, tok: Any) -> None:
        self._tok = tok
        self.pad_token_id = tok.pad_token_id
        self.eos_token_id = tok.eos_token_id

    def __call__(self, texts: Any, add_special_tokens: bool = True) -> dict[str, Any]:
        return self._tok(texts, add_special_tokens=add_special_tokens)

    def decode(self, ids: list[int], skip_special_tokens: bool = False) -> str:
        return "".join(chr(64 + i) for i in ids if not (skip_special_tokens and i < 4))


@pytest.fixture
def decoding_tokenizer(char_tokenizer: Any) -> DecodingTokenizer:
    """A :class:`DecodingTokenizer`."""
    return DecodingTokenizer(char_tokenizer)
