"""The real packaged models, loaded once for the features tests."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def scoring_model():
    """The packaged SmolLM2 (converted once into the cache) with a fresh seeded LoRA."""
    from goracs.features import load_scoring_model

    return load_scoring_model(None)


@pytest.fixture(scope="session")
def tiny_llm(tmp_path_factory):
    """A two-layer Llama of width 32 with random weights and SmolLM2's tokenizer, saved as a
    plain model folder: seconds to load, for tests of the machinery rather than the numbers."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from goracs.models import resolve_llm

    tok = AutoTokenizer.from_pretrained(resolve_llm(None))
    config = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=1024, tie_word_embeddings=True,
                         bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("tiny-llm")
    LlamaForCausalLM(config).save_pretrained(folder)
    tok.save_pretrained(folder)
    return str(folder)
