"""A tiny random Llama with a fresh LoRA adapter, for the fast tests of the trainer's parts."""

from __future__ import annotations

from typing import Any

import pytest


@pytest.fixture
def tiny_lora() -> Any:
    """A two-layer random Llama (vocabulary 64, as the character tokenizer's ids) wrapped with
    a fresh LoRA on q_proj and v_proj, without dropout; the same weights on every call."""
    torch = pytest.importorskip("torch")
    from transformers import LlamaConfig, LlamaForCausalLM

    from goracs.lm import add_lora

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=512, initializer_range=0.2)
    lm = LlamaForCausalLM(config)
    return add_lora(lm, r=4, alpha=8, dropout=0.0, targets=("q_proj", "v_proj"), seed=0)
