"""The record format every stage shares: reading and checking Alpaca records, the task names,
the rendering of a record into the texts the models see, and the boundary between a sample's
prompt and its response.

A record is an object with string fields ``instruction``, ``input`` and ``output`` (and, for
SeqRec, optionally ``negatives``, a list of item titles). One rendering function serves every
stage (embeddings, gradient norms, fine-tuning, scoring), so a sample is the same string
wherever it goes. The template is the Alpaca one that BIGRec and TALLRec fine-tune with
(docs/method.md section 1).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from goracs.errors import GoracsError
from goracs.io import loads_json_or_lines, read_json, read_text

PROMPT_WITH_INPUT = (
    "Below is an instruction that describes a task, paired with an input that provides "
    "further context. Write a response that appropriately completes the request.\n\n"
    "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n"
)
PROMPT_NO_INPUT = (
    "Below is an instruction that describes a task. Write a response that appropriately "
    "completes the request.\n\n### Instruction:\n{instruction}\n\n### Response:\n"
)

REQUIRED_FIELDS = ("instruction", "input", "output")
TASKS = ("seqrec", "ctr")
CTR_ANSWERS = {"Yes": 1, "No": 0}
# How many of the heaviest users a split's concentration counts (``top5_share``).
TOP_USERS = 5


def render_prompt(record: Mapping[str, Any], with_response: bool) -> str:
    """The Alpaca rendering of one record.

    Parameters
    ----------
    record : mapping
        Holds string fields ``instruction``, ``input`` and ``output``; an empty ``input``
        selects the template without the input section, as Alpaca does.
    with_response : bool
        Append ``output`` after ``### Response:``. Prompts given to the model at inference
        time, and CTR texts for embedding (where the answer is the label), leave it off.
    """
    instruction = record["instruction"]
    inp = record["input"]
    if inp:
        text = PROMPT_WITH_INPUT.format(instruction=instruction, input=inp)
    else:
        text = PROMPT_NO_INPUT.format(instruction=instruction)
    if with_response:
        text += record["output"]
    return text


def check_records(records: Any, source: str) -> list[dict[str, Any]]:
    """Validate a list of Alpaca records; raise :class:`GoracsError` naming the first fault.

    Every record needs string ``instruction`` (not blank), ``input`` and ``output``;
    ``negatives``, when present, must be a list of strings.
    """
    if not isinstance(records, list):
        raise GoracsError(f"{source}: expected a JSON list of records, got "
                          f"{type(records).__name__}")
    if not records:
        raise GoracsError(f"{source}: no records (the list is empty)")
    for i, rec in enumerate(records):
        if not isinstance(rec, dict):
            raise GoracsError(f"{source}: record {i} is a {type(rec).__name__}, not an object")
        for name in REQUIRED_FIELDS:
            if name not in rec:
                raise GoracsError(f"{source}: record {i} has no field {name!r}")
            if not isinstance(rec[name], str):
                raise GoracsError(f"{source}: record {i} field {name!r} must be a string, "
                                  f"got {type(rec[name]).__name__}")
        if not rec["instruction"].strip():
            raise GoracsError(f"{source}: record {i} has an empty instruction")
        neg = rec.get("negatives")
        if neg is not None and not (isinstance(neg, list)
                                    and all(isinstance(x, str) for x in neg)):
            raise GoracsError(f"{source}: record {i}: 'negatives' must be a list of strings")
    return records


def load_records(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Read and validate Alpaca records: a JSON list of objects, JSON lines (one object a
    line; a file of one line is one record), or a Parquet table (``.parquet``, one row a
    record, read with pyarrow)."""
    p = Path(path)
    if p.suffix == ".parquet":
        return check_records(_parquet_rows(p), str(p))
    data = loads_json_or_lines(read_text(p), str(p))
    if isinstance(data, dict):
        data = [data]
    return check_records(data, str(p))


def _parquet_rows(p: Path) -> list[dict[str, Any]]:
    """The rows of a Parquet file as plain dictionaries (nulls as None)."""
    if not p.is_file():
        raise GoracsError(f"file not found: {p}")
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise GoracsError(f"{p}: reading Parquet needs pyarrow "
                          "(pip install \"goracs[parquet]\")") from None
    try:
        return pq.read_table(p).to_pylist()
    except Exception as exc:  # pyarrow raises several types for a damaged file
        raise GoracsError(f"{p}: not a readable Parquet file ({type(exc).__name__}: "
                          f"{exc})") from None


def read_task(data_dir: str | os.PathLike) -> str:
    """The task named in ``DIR/meta.json`` (``seqrec`` or ``ctr``)."""
    p = Path(data_dir) / "meta.json"
    meta = read_json(p, "give --task to go without it")
    task = meta.get("task") if isinstance(meta, dict) else None
    return check_task(task, str(p))


def check_task(task: Any, source: str = "task") -> str:
    if task not in TASKS:
        raise GoracsError(f"{source}: task must be one of {', '.join(TASKS)}, got {task!r}")
    return task


def embedding_texts(records: Sequence[Mapping[str, Any]], task: str) -> list[str]:
    """Texts to embed: SeqRec with the response, CTR without (the label must not shape the
    geometry, method.md section 2)."""
    with_response = check_task(task) == "seqrec"
    return [render_prompt(r, with_response) for r in records]


def training_texts(records: Sequence[Mapping[str, Any]]) -> list[str]:
    """Texts a model is fine-tuned on (and whose loss the gradient norms measure): the whole
    rendering, response included, for both tasks."""
    return [render_prompt(r, True) for r in records]


def ctr_labels(records: Sequence[Mapping[str, Any]], source: str = "records") -> np.ndarray:
    """Binary labels of CTR records: 1 for an output of ``Yes``, 0 for ``No``."""
    out = np.empty(len(records), dtype=np.int64)
    for i, rec in enumerate(records):
        answer = rec["output"].strip()
        if answer not in CTR_ANSWERS:
            raise GoracsError(f"{source}: record {i} output must be 'Yes' or 'No' for the ctr "
                              f"task, got {rec['output']!r}")
        out[i] = CTR_ANSWERS[answer]
    return out


def response_start(ids: Sequence[int], prompt_ids: Sequence[int]) -> int:
    """Position of the first response token in a sample's token ids.

    ``prompt_ids`` is the tokenization of the prompt alone (the rendering without the answer,
    same special tokens). The boundary is the length of the two sequences' common prefix, so
    a tokenizer that merges the prompt's last characters with the answer's first ones puts the
    merged token in the response (as the fine-tuning labels do). A value of ``len(ids)`` means
    that ``max_length`` cut the whole response off.
    """
    a = np.asarray(ids, dtype=np.int64)
    b = np.asarray(prompt_ids, dtype=np.int64)
    m = min(a.shape[0], b.shape[0])
    diff = np.flatnonzero(a[:m] != b[:m])
    return int(diff[0]) if diff.size else m


def tokenize_texts(tokenizer: Any, texts: Sequence[str], max_length: int) -> list[list[int]]:
    """Token ids of each text as fine-tuning sees it: the tokenizer's own special tokens, the
    text cut to ``max_length`` tokens, then the end-of-sequence token when it still fits (the
    BIGRec/TALLRec convention, so the model learns where an answer stops)."""
    if max_length < 2:
        raise GoracsError(f"max-length must be at least 2, got {max_length}")
    eos = tokenizer.eos_token_id
    encoded = tokenizer(list(texts), add_special_tokens=True)["input_ids"]
    out = []
    for ids in encoded:
        ids = list(ids[:max_length])
        if eos is not None and len(ids) < max_length:
            ids.append(int(eos))
        out.append(ids)
    return out


def top_user_share(users: np.ndarray | list, k: int = TOP_USERS) -> float:
    """Share of the samples held by the ``k`` users with the most samples.

    ``users`` lists each sample's user (codes or ids). Returns a fraction in [0, 1]; 0.0
    for no samples.
    """
    arr = np.asarray(users)
    if arr.shape[0] == 0:
        return 0.0
    _, counts = np.unique(arr, return_counts=True)
    return float(np.sort(counts)[::-1][:k].sum() / arr.shape[0])
