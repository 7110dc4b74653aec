"""``goracs features DIR``: from a prepared data folder to the arrays selection needs.

Reads ``DIR/train.json`` and ``DIR/valid.json`` (Alpaca records) and ``DIR/meta.json`` (the
task), and writes into ``DIR/features/``:

* ``train_emb.npy``, ``valid_emb.npy``: float32 sample embeddings (method.md section 2);
* ``grad_norms.npy``: float32 gradient norm of every training sample;
* ``el2n.npy``, ``influence.npy``: float32 EL2N and DEALRec influence score of every training
  sample, from the same pass as the gradient norms (unless ``scores`` is off; see
  :mod:`goracs.features.gradnorms` for their definitions);
* ``train_labels.npy``, ``valid_labels.npy``: int64 Yes(1)/No(0) labels, CTR only;
* ``features.json``: settings, model paths, sizes and seconds per stage, written last.

Expensive results are cached under ``DIR/features/cache/`` by content, so a rerun or a
resumed run only computes what is missing.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from goracs.errors import GoracsError
from goracs.features.embeddings import embed_texts
from goracs.features.gradnorms import GradNormScorer, LoraSettings, load_scoring_model
from goracs.features.samples import (
    check_task,
    ctr_labels,
    embedding_texts,
    load_records,
    read_task,
    render_prompt,
    training_texts,
)
from goracs.io import atomic_save_npy, atomic_write_json
from goracs.models import PACKAGED_ENCODER, PACKAGED_LLM, resolve_encoder

FEATURES_DIR = "features"


@dataclass
class FeatureSettings:
    """Everything ``goracs features`` can be told; the defaults follow method.md section 2."""

    task: str | None = None
    encoder: str = PACKAGED_ENCODER
    encoder_batch_size: int = 64
    encoder_max_length: int | None = None
    encoder_dtype: str = "fp32"
    model: str = PACKAGED_LLM
    adapter: str | None = None
    lora_r: int = 8
    lora_alpha: int = 16
    lora_targets: tuple[str, ...] = field(default=("q_proj", "v_proj"))
    block: str | None = None
    batch_size: int = 8
    max_length: int = 512
    dtype: str = "fp32"
    seed: int = 0
    sort_by_length: bool = True
    share_prefix: bool = True
    device: str = "cpu"
    scores: bool = True


def build_features(data_dir: str | os.PathLike, settings: FeatureSettings | None = None,
                   progress: bool = True, log: Callable[[str], None] | None = None
                   ) -> dict[str, Any]:
    """Compute and write the features of a prepared data folder; return the manifest."""
    s = settings or FeatureSettings()
    say = log or (lambda msg: None)
    d = Path(data_dir)
    if not d.is_dir():
        raise GoracsError(f"data folder not found: {d}")
    task = check_task(s.task, "--task") if s.task is not None else read_task(d)
    train = load_records(d / "train.json")
    valid = load_records(d / "valid.json")
    labels = {}
    if task == "ctr":
        labels = {"train": ctr_labels(train, str(d / "train.json")),
                  "valid": ctr_labels(valid, str(d / "valid.json"))}
    out = d / FEATURES_DIR
    cache = out / "cache"
    seconds: dict[str, float] = {}
    t_all = time.perf_counter()

    encoder_path = resolve_encoder(s.encoder)
    embs = {}
    for split, records in (("train", train), ("valid", valid)):
        t0 = time.perf_counter()
        embs[split] = embed_texts(embedding_texts(records, task), encoder_path,
                                  batch_size=s.encoder_batch_size,
                                  max_seq_length=s.encoder_max_length,
                                  dtype=s.encoder_dtype,
                                  cache_dir=cache, progress=progress, device=s.device)
        seconds[f"embed_{split}"] = time.perf_counter() - t0
        say(f"{split}: {embs[split].shape[0]} embeddings of width {embs[split].shape[1]} "
            f"({seconds[f'embed_{split}']:.1f} s)")

    t0 = time.perf_counter()
    lora = LoraSettings(r=s.lora_r, alpha=s.lora_alpha, targets=tuple(s.lora_targets),
                        seed=s.seed)
    model, tokenizer, identity = load_scoring_model(s.model, s.adapter, lora=lora,
                                                    dtype=s.dtype, device=s.device)
    scorer = GradNormScorer(model, tokenizer, block=s.block, batch_size=s.batch_size,
                            max_length=s.max_length, sort_by_length=s.sort_by_length,
                            share_prefix=s.share_prefix, identity=identity)
    seconds["load_model"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    ids = scorer.tokenize(training_texts(train))
    starts = None
    if s.scores:
        starts = scorer.response_starts([render_prompt(r, False) for r in train], ids)
        cut = np.flatnonzero(starts >= np.array([len(x) for x in ids]))
        if cut.size:
            raise GoracsError(f"{d / 'train.json'}: record {int(cut[0])} keeps no response "
                              f"token within --max-length {s.max_length} ({cut.size} such "
                              "records); raise --max-length or pass --no-scores")
    result = scorer.scores_from_ids(ids, starts, cache_dir=cache, progress=progress)
    norms = result.grad_norms
    seconds["grad_norms"] = time.perf_counter() - t0
    say(f"train: {norms.shape[0]} gradient norms, median {float(np.median(norms)):.4g} "
        f"({seconds['grad_norms']:.1f} s{', EL2N and influence included' if s.scores else ''})")

    files = {"train_emb": "train_emb.npy", "valid_emb": "valid_emb.npy",
             "grad_norms": "grad_norms.npy"}
    atomic_save_npy(out / files["train_emb"], embs["train"])
    atomic_save_npy(out / files["valid_emb"], embs["valid"])
    atomic_save_npy(out / files["grad_norms"], norms)
    scores = {"el2n": result.el2n, "influence": result.influence}
    for name, arr in scores.items():
        if arr is not None:
            files[name] = f"{name}.npy"
            atomic_save_npy(out / files[name], arr)
        else:
            # Scores left by an earlier run would no longer match these samples' features,
            # and `goracs select --data` picks up whatever is there.
            (out / f"{name}.npy").unlink(missing_ok=True)
    for split, arr in labels.items():
        files[f"{split}_labels"] = f"{split}_labels.npy"
        atomic_save_npy(out / files[f"{split}_labels"], arr)
    if not labels:
        # Labels left by an earlier CTR run of this folder would no longer match.
        for split in ("train", "valid"):
            (out / f"{split}_labels.npy").unlink(missing_ok=True)
    seconds["total"] = time.perf_counter() - t_all

    lengths = np.array([len(x) for x in ids])
    manifest = {
        "task": task,
        "n_train": len(train),
        "n_valid": len(valid),
        "files": files,
        "encoder": {"name": s.encoder, "path": encoder_path,
                    "dim": int(embs["train"].shape[1]), "batch_size": s.encoder_batch_size,
                    "max_length": s.encoder_max_length, "dtype": s.encoder_dtype,
                    "texts": "with response" if task == "seqrec" else "without response"},
        "grad_norms": {
            **identity,
            "block": scorer.block_name,
            "batch_size": s.batch_size,
            "max_length": s.max_length,
            "sort_by_length": s.sort_by_length,
            "shared_prefix_tokens": scorer.shared_prefix_length(ids),
            "route": "direct" if scorer.fast else "model forward",
            "device": str(scorer.device),
            "tokens": {"mean": round(float(lengths.mean()), 2), "max": int(lengths.max()),
                       "at_max_length": int((lengths >= s.max_length).sum())},
            "stats": _stats(norms),
        },
        "settings": {k: (list(v) if isinstance(v, tuple) else v)
                     for k, v in asdict(s).items()},
        "seconds": {k: round(v, 3) for k, v in seconds.items()},
    }
    if starts is not None:
        n_resp = lengths - starts
        manifest["el2n"] = {
            "definition": "mean over the response tokens (after '### Response:', "
                          "end-of-sequence included, as far as max_length keeps them) of "
                          "||softmax(logits_t) - onehot(y_t)||_2 under the scoring model "
                          "(Paul et al. 2021, for a causal LM)",
            "response_tokens": {"mean": round(float(n_resp.mean()), 2),
                                "min": int(n_resp.min()), "max": int(n_resp.max())},
            "stats": _stats(result.el2n),
        }
        manifest["influence"] = {
            "definition": "(1/N) gbar^T H^-1 g_s: first-order growth of the empirical risk "
                          "when sample s is removed (DEALRec, Lin et al. 2024), with the "
                          "scoring LLM as surrogate, g_s the gradient of the whole-text loss "
                          "on the grad_norms block, gbar its mean over the pool",
            "hessian": "identity",
            "gradient": scorer.block_name,
            "gradient_size": int(scorer.param.numel()),
            "stats": _stats(result.influence),
        }
    if labels:
        manifest["labels"] = {split: {"positive": int(a.sum()), "negative": int(len(a) - a.sum())}
                              for split, a in labels.items()}
    atomic_write_json(out / "features.json", manifest)
    return manifest


def _stats(v: np.ndarray) -> dict[str, float]:
    return {"min": float(v.min()), "median": float(np.median(v)), "max": float(v.max())}
