"""``goracs features DIR``: from a prepared data folder to the arrays selection needs.

Reads ``DIR/train.json`` and ``DIR/valid.json`` (Alpaca records) and ``DIR/meta.json`` (the
task), and writes into ``DIR/features/``:

* ``train_emb.npy``, ``valid_emb.npy``: float32 sample embeddings (method.md section 2),
  from the sentence encoder, or from the scoring LLM with ``embedding="llm"``;
* ``llm_train_emb.npy``, ``llm_valid_emb.npy``: the scoring LLM's embeddings (the mean of its
  final hidden state over each sample's prompt, taken in the gradient pass for the pool and in
  a forward pass for the validation set), with ``embedding`` "llm" or "both";
* ``grad_norms.npy``: float32 gradient norm of every training sample, of the loss over the
  answer tokens (CTR's default) or over the whole text (SeqRec's), as ``grad_loss`` says;
* ``el2n.npy``, ``influence.npy``: float32 EL2N and DEALRec influence score of every training
  sample, from the same pass as the gradient norms (unless ``scores`` is off; see
  :mod:`goracs.features.el2n` and :mod:`goracs.features.influence` for their definitions);
* ``train_labels.npy``, ``valid_labels.npy``: int64 Yes(1)/No(0) labels, CTR only;
* ``features.json``: settings, model paths, sizes and seconds per stage, written last.

Expensive results are cached under ``cache/`` by content, so a rerun or a resumed run only
computes what is missing. The run works in ``DIR/.features.goracs-partial/`` and swaps it in
as ``DIR/features/`` when complete (:mod:`goracs.outputs`); ``features.json`` records the
digests of the records and settings the features come from (``digests``), and a rerun that
finds them unchanged does nothing.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from goracs.cache import content_key, path_fingerprint
from goracs.checks import seed
from goracs.errors import GoracsError
from goracs.features.embeddings import embed_texts
from goracs.features.gradnorms import LOSSES, GradNormScorer, SampleScores
from goracs.features.ray_pass import RayOptions, describe, ray_runner
from goracs.features.scoring_model import LoraSettings, load_scoring_model
from goracs.io import atomic_save_npy, atomic_write_json, read_json
from goracs.models import PACKAGED_ENCODER, PACKAGED_LLM, resolve_encoder
from goracs.outputs import OutputPlace
from goracs.prepared import FEATURES_DIR
from goracs.records import (
    check_task,
    ctr_labels,
    embedding_texts,
    load_records,
    read_task,
    render_prompt,
    training_texts,
)


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
    #: Tokens the gradient norms' loss covers: "response" (the answer alone) or "text"; None
    #: takes the task's default (TASK_GRAD_LOSS), as the task is fine-tuned.
    grad_loss: str | None = None
    #: "encoder" (the sentence encoder), "llm" (the scoring LLM's mean prompt state) or
    #: "both" (the encoder's in train_emb.npy, the LLM's in llm_*_emb.npy as well).
    embedding: str = "encoder"


#: The loss each task's gradient norms take by default: CTR's fine-tuning puts the loss on the
#: answer alone; SeqRec's gradients follow the reference and cover the whole text.
TASK_GRAD_LOSS = {"seqrec": "text", "ctr": "response"}
EMBEDDINGS = ("encoder", "llm", "both")


def resolve_grad_loss(settings: FeatureSettings, task: str) -> str:
    """The loss the gradient norms of ``task`` take under ``settings`` (checked)."""
    loss = settings.grad_loss if settings.grad_loss is not None else TASK_GRAD_LOSS[task]
    if loss not in LOSSES:
        raise GoracsError(f"grad_loss must be one of {', '.join(LOSSES)}, got {loss!r}")
    return loss


def build_features(data_dir: str | os.PathLike, settings: FeatureSettings | None = None,
                   progress: bool = True, log: Callable[[str], None] | None = None,
                   ray: RayOptions | None = None) -> dict[str, Any]:
    """Compute and write the features of a prepared data folder; return the manifest.

    Parameters
    ----------
    data_dir : path
        The prepared folder.
    settings : FeatureSettings, optional
        What to compute (defaults: method.md section 2).
    progress : bool
        Progress bars on stderr.
    log : callable, optional
        Takes one-line messages.
    ray : RayOptions, optional
        Run the gradient pass's missing shards on Ray actors
        (:mod:`goracs.features.ray_pass`); the shards, cache files, outputs and settings
        digest are those of a run without Ray, so either kind of run resumes the other's.
        The sentence encoder's embeddings and the validation set's LLM embeddings stay in
        this process. The manifest gains a ``ray`` entry when actors computed shards.
    """
    s = settings or FeatureSettings()
    say = log or (lambda msg: None)
    d = Path(data_dir)
    if not d.is_dir():
        raise GoracsError(f"data folder not found: {d}")
    out = d / FEATURES_DIR
    place = OutputPlace(out, "features", flag="").check()
    seed(s.seed, "seed")
    task = check_task(s.task, "--task") if s.task is not None else read_task(d)
    grad_loss = resolve_grad_loss(s, task)
    if s.embedding not in EMBEDDINGS:
        raise GoracsError(f"embedding must be one of {', '.join(EMBEDDINGS)}, "
                          f"got {s.embedding!r}")
    train = load_records(d / "train.json")
    valid = load_records(d / "valid.json")
    labels = {}
    if task == "ctr":
        labels = {"train": ctr_labels(train, str(d / "train.json")),
                  "valid": ctr_labels(valid, str(d / "valid.json"))}
    digests = {"train": path_fingerprint(d / "train.json"),
               "valid": path_fingerprint(d / "valid.json"),
               "settings": content_key(_settings_doc(s))}
    current = _up_to_date(out, task, digests)
    if current is not None:
        say(f"{out}: already holds these features (same records, task and settings)")
        return current
    # Outputs and the content-keyed cache go into a partial folder beside features/ and are
    # swapped in whole at the end; the cache of an earlier run moves along (it is keyed by
    # content, so it is never stale), and an interrupted run resumes from it.
    part = place.begin(keep={"cache"})
    cache = part / "cache"
    if not cache.exists() and (out / "cache").is_dir():
        os.rename(out / "cache", cache)
    seconds: dict[str, float] = {}
    t_all = time.perf_counter()
    encoder_path = resolve_encoder(s.encoder) if s.embedding != "llm" else None
    embs = _encoder_embeddings(s, task, {"train": train, "valid": valid}, encoder_path,
                               cache, progress, seconds, say)
    run = _gradient_pass(s, d, train, grad_loss, cache, progress, seconds, say, ray)
    llm = None
    if run.use_llm:
        llm = _llm_embeddings(run, d, valid, s.max_length, cache, progress, seconds, say)
        if s.embedding == "llm":
            embs = llm
    files = _write_arrays(part, embs, run.result, llm, labels)
    seconds["total"] = time.perf_counter() - t_all
    manifest = _manifest(s, task, len(train), len(valid), files, digests, encoder_path, embs,
                         llm, run, labels, seconds)
    if ray is not None and ray.used:
        manifest["ray"] = dict(ray.used)
    atomic_write_json(part / "features.json", manifest)
    place.commit()
    return manifest


@dataclass
class _GradientRun:
    """The gradient pass over the training pool: the scorer, the pool's token ids and
    response starts (None when not needed), and its scores."""

    scorer: GradNormScorer
    identity: dict[str, Any]
    grad_loss: str
    use_llm: bool
    ids: list[np.ndarray]
    starts: np.ndarray | None
    result: SampleScores


def _encoder_embeddings(s: FeatureSettings, task: str, splits: dict[str, list[dict[str, Any]]],
                        encoder_path: str | None, cache: Path, progress: bool,
                        seconds: dict[str, float], say: Callable[[str], None]
                        ) -> dict[str, np.ndarray]:
    """The sentence encoder's embeddings of each split (none without an encoder)."""
    embs = {}
    for split, records in splits.items():
        if encoder_path is None:
            break
        t0 = time.perf_counter()
        embs[split] = embed_texts(embedding_texts(records, task), encoder_path,
                                  batch_size=s.encoder_batch_size,
                                  max_seq_length=s.encoder_max_length,
                                  dtype=s.encoder_dtype,
                                  cache_dir=cache, progress=progress, device=s.device)
        seconds[f"embed_{split}"] = time.perf_counter() - t0
        say(f"{split}: {embs[split].shape[0]} embeddings of width {embs[split].shape[1]} "
            f"({seconds[f'embed_{split}']:.1f} s)")
    return embs


def _gradient_pass(s: FeatureSettings, d: Path, train: list[dict[str, Any]], grad_loss: str,
                   cache: Path, progress: bool, seconds: dict[str, float],
                   say: Callable[[str], None], ray: RayOptions | None = None) -> _GradientRun:
    """Load the scoring model and score the training pool: gradient norms, and as the
    settings ask, EL2N, influence and LLM embeddings from the same pass (its shards on Ray
    actors with ``ray``)."""
    use_llm = s.embedding in ("llm", "both")
    t0 = time.perf_counter()
    lora = LoraSettings(r=s.lora_r, alpha=s.lora_alpha, targets=tuple(s.lora_targets),
                        seed=s.seed)
    device = s.device if ray is None else _driver_device(s.device)
    model, tokenizer, identity = load_scoring_model(s.model, s.adapter, lora=lora,
                                                    dtype=s.dtype, device=device)
    scorer_args = {"block": s.block, "batch_size": s.batch_size, "max_length": s.max_length,
                   "sort_by_length": s.sort_by_length, "share_prefix": s.share_prefix,
                   "loss": grad_loss}
    scorer = GradNormScorer(model, tokenizer, identity=identity, **scorer_args)
    runner = None
    if ray is not None:
        load = {"model": s.model, "adapter": s.adapter, "dtype": s.dtype, "device": s.device,
                "lora": {**asdict(lora), "targets": list(lora.targets)}}
        runner = ray_runner(ray, load, scorer_args,
                            lambda seqs: describe(scorer, seqs), log=say)
    seconds["load_model"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    ids = scorer.tokenize(training_texts(train))
    starts = None
    if s.scores or grad_loss == "response" or use_llm:
        starts = _response_starts(scorer, train, ids, d / "train.json", s.max_length)
    result = scorer.scores_from_ids(ids, starts, cache_dir=cache, progress=progress,
                                    scores=s.scores, embed=use_llm, runner=runner)
    norms = result.grad_norms
    seconds["grad_norms"] = time.perf_counter() - t0
    say(f"train: {norms.shape[0]} gradient norms of the {grad_loss} loss, median "
        f"{float(np.median(norms)):.4g} ({seconds['grad_norms']:.1f} s"
        f"{', EL2N and influence included' if s.scores else ''}"
        f"{', LLM embeddings included' if use_llm else ''})")
    return _GradientRun(scorer, identity, grad_loss, use_llm, ids, starts, result)


def _driver_device(device: str) -> str:
    """The device of the driver's own model in a Ray run: the one asked for when this
    machine has it, else the CPU (the actors may have GPUs the driver lacks)."""
    from goracs.lm import pick_device

    try:
        pick_device(device)
    except GoracsError:
        return "cpu"
    return device


def _llm_embeddings(run: _GradientRun, d: Path, valid: list[dict[str, Any]], max_length: int,
                    cache: Path, progress: bool, seconds: dict[str, float],
                    say: Callable[[str], None]) -> dict[str, np.ndarray]:
    """The scoring LLM's embeddings: the pool's from the gradient pass, the validation
    set's from a forward pass."""
    scorer = run.scorer
    t0 = time.perf_counter()
    v_ids = scorer.tokenize(training_texts(valid))
    v_ends = _response_starts(scorer, valid, v_ids, d / "valid.json", max_length)
    llm = {"train": run.result.embeddings,
           "valid": scorer.embed_prompts(v_ids, v_ends, cache_dir=cache, progress=progress)}
    seconds["llm_embed_valid"] = time.perf_counter() - t0
    say(f"valid: {llm['valid'].shape[0]} LLM embeddings of width {llm['valid'].shape[1]} "
        f"({seconds['llm_embed_valid']:.1f} s)")
    return llm


def _write_arrays(part: Path, embs: dict[str, np.ndarray], result: SampleScores,
                  llm: dict[str, np.ndarray] | None,
                  labels: dict[str, np.ndarray]) -> dict[str, str]:
    """Save the feature arrays into ``part``; return the manifest's ``files`` entry."""
    files = {"train_emb": "train_emb.npy", "valid_emb": "valid_emb.npy",
             "grad_norms": "grad_norms.npy"}
    atomic_save_npy(part / files["train_emb"], embs["train"])
    atomic_save_npy(part / files["valid_emb"], embs["valid"])
    atomic_save_npy(part / files["grad_norms"], result.grad_norms)
    if llm is not None:
        for split in ("train", "valid"):
            name = f"llm_{split}_emb"
            files[name] = f"{name}.npy"
            atomic_save_npy(part / files[name], llm[split])
    scores = {"el2n": result.el2n, "influence": result.influence}
    for name, arr in scores.items():
        if arr is not None:
            files[name] = f"{name}.npy"
            atomic_save_npy(part / files[name], arr)
    for split, arr in labels.items():
        files[f"{split}_labels"] = f"{split}_labels.npy"
        atomic_save_npy(part / files[f"{split}_labels"], arr)
    return files


def _manifest(s: FeatureSettings, task: str, n_train: int, n_valid: int,
              files: dict[str, str], digests: dict[str, str], encoder_path: str | None,
              embs: dict[str, np.ndarray], llm: dict[str, np.ndarray] | None,
              run: _GradientRun, labels: dict[str, np.ndarray],
              seconds: dict[str, float]) -> dict[str, Any]:
    """The content of ``features.json``."""
    manifest = {
        "task": task,
        "n_train": n_train,
        "n_valid": n_valid,
        "files": files,
        # what the features were derived from: `goracs select --data` refuses them once the
        # records (or the task) no longer match
        "digests": digests,
        "encoder": ({"name": s.encoder, "path": encoder_path,
                     "dim": int(embs["train"].shape[1]), "batch_size": s.encoder_batch_size,
                     "max_length": s.encoder_max_length, "dtype": s.encoder_dtype,
                     "texts": "with response" if task == "seqrec" else "without response"}
                    if encoder_path is not None else None),
        "embedding": s.embedding,
        "llm_embedding": ({"definition": "mean of the scoring LLM's final hidden state (after "
                                         "its last norm) over the prompt tokens, response "
                                         "excluded",
                           "dim": int(llm["train"].shape[1])} if llm is not None else None),
        "grad_norms": _grad_norms_entry(s, run),
        "settings": {k: (list(v) if isinstance(v, tuple) else v)
                     for k, v in asdict(s).items()},
        "seconds": {k: round(v, 3) for k, v in seconds.items()},
    }
    if run.starts is not None and s.scores:
        manifest.update(_scores_entries(run))
    if labels:
        manifest["labels"] = {split: {"positive": int(a.sum()), "negative": int(len(a) - a.sum())}
                              for split, a in labels.items()}
    return manifest


def _grad_norms_entry(s: FeatureSettings, run: _GradientRun) -> dict[str, Any]:
    """The manifest's description of the gradient norms."""
    scorer = run.scorer
    lengths = np.array([len(x) for x in run.ids])
    return {
        **run.identity,
        "loss": ("mean cross-entropy of the response tokens (prompt masked)"
                 if run.grad_loss == "response" else "mean cross-entropy of the whole text"),
        "grad_loss": run.grad_loss,
        "block": scorer.block_name,
        "batch_size": s.batch_size,
        "max_length": s.max_length,
        "sort_by_length": s.sort_by_length,
        "shared_prefix_tokens": scorer.shared_prefix_length(run.ids),
        "route": "direct" if scorer.fast else "model forward",
        "device": str(scorer.device),
        "tokens": {"mean": round(float(lengths.mean()), 2), "max": int(lengths.max()),
                   "at_max_length": int((lengths >= s.max_length).sum())},
        "stats": _stats(run.result.grad_norms),
    }


def _scores_entries(run: _GradientRun) -> dict[str, Any]:
    """The manifest's descriptions of EL2N and influence."""
    lengths = np.array([len(x) for x in run.ids])
    n_resp = lengths - run.starts
    return {
        "el2n": {
            "definition": "mean over the response tokens (after '### Response:', "
                          "end-of-sequence included, as far as max_length keeps them) of "
                          "||softmax(logits_t) - onehot(y_t)||_2 under the scoring model "
                          "(Paul et al. 2021, for a causal LM)",
            "response_tokens": {"mean": round(float(n_resp.mean()), 2),
                                "min": int(n_resp.min()), "max": int(n_resp.max())},
            "stats": _stats(run.result.el2n),
        },
        "influence": {
            "definition": "(1/N) gbar^T H^-1 g_s: first-order growth of the empirical risk "
                          "when sample s is removed (DEALRec, Lin et al. 2024), with the "
                          f"scoring LLM as surrogate, g_s the gradient of the {run.grad_loss} "
                          "loss on the grad_norms block, gbar its mean over the pool",
            "hessian": "identity",
            "gradient": run.scorer.block_name,
            "gradient_size": int(run.scorer.param.numel()),
            "stats": _stats(run.result.influence),
        },
    }


def _settings_doc(s: FeatureSettings) -> dict[str, Any]:
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(s).items()}


def _up_to_date(out: Path, task: str, digests: dict[str, str]) -> dict[str, Any] | None:
    """The manifest of ``out`` when it holds features of these records, task and settings
    with every file present; None otherwise (they are then recomputed)."""
    p = out / "features.json"
    if not p.is_file():
        return None
    try:
        doc = read_json(p)
    except GoracsError:
        return None
    if not (isinstance(doc, dict) and doc.get("task") == task
            and doc.get("digests") == digests and isinstance(doc.get("files"), dict)):
        return None
    if not all(isinstance(f, str) and (out / f).is_file() for f in doc["files"].values()):
        return None
    return doc


def _response_starts(scorer: GradNormScorer, records: list[dict[str, Any]], ids: list[np.ndarray],
                     path: Path, max_length: int) -> np.ndarray:
    """Each record's response start; one line naming the first record whose response
    ``max_length`` cuts off whole."""
    starts = scorer.response_starts([render_prompt(r, False) for r in records], ids)
    cut = np.flatnonzero(starts >= np.array([len(x) for x in ids]))
    if cut.size:
        raise GoracsError(f"{path}: record {int(cut[0])} keeps no response token within "
                          f"--max-length {max_length} ({cut.size} such records); raise "
                          "--max-length, or pass --no-scores --grad-loss text with the "
                          "encoder's embeddings")
    return starts


def _stats(v: np.ndarray) -> dict[str, float]:
    return {"min": float(v.min()), "median": float(np.median(v)), "max": float(v.max())}
