"""Fixtures every test folder shares."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"


@pytest.fixture
def load_script() -> Callable[[str], ModuleType]:
    """Import ``scripts/NAME.py`` as a module, so a test can call its ``main``."""
    def load(name: str) -> ModuleType:
        spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        return mod
    return load


class CharTokenizer:
    """One token per character after a begin token: enough of a tokenizer for scoring prompts
    with a tiny random model."""

    pad_token_id = 0
    eos_token_id = 2

    def __call__(self, texts: Any, add_special_tokens: bool = True) -> dict[str, Any]:
        one = isinstance(texts, str)
        ids = [[1] + [4 + ord(c) % 60 for c in t] for t in ([texts] if one else texts)]
        return {"input_ids": ids[0] if one else ids}

    def decode(self, ids: list[int]) -> str:
        return "".join(chr(i) for i in ids)


@pytest.fixture
def char_tokenizer() -> CharTokenizer:
    """A :class:`CharTokenizer`."""
    return CharTokenizer()
