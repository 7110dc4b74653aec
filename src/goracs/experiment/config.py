"""Experiment configs: datasets x tasks x methods x budgets x seeds, with per-task settings.

A config is a TOML file (see ``configs/cpu.toml`` for every key, commented). It is checked
whole before anything runs: an unknown key, an unknown method or metric, a value of the wrong
type, a non-positive budget or one that the training pool cannot hold is a one-line
:class:`GoracsError` naming the key. This module holds the schema (the dataclasses) and
:func:`parse_config`; :mod:`goracs.experiment.config_files` finds and reads a config
(:func:`~goracs.experiment.config_files.load_config`), :mod:`goracs.experiment.toml_checks`
holds the generic checks, :mod:`goracs.experiment.metrics_catalogue` the metric names and
:mod:`goracs.experiment.params` the selector parameters.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any

from goracs.checks import seed as check_seed
from goracs.data.prepare import DATASETS, DEFAULT_MAX_TRAIN, DEFAULT_NEGATIVES, TASKS
from goracs.data.samples import NEGATIVE_SAMPLING, SPLIT_KINDS
from goracs.errors import GoracsError
from goracs.evaluate.run import EvalSettings
from goracs.experiment.metrics_catalogue import known_metrics
from goracs.experiment.params import check_selector, method_params, resolve_params
from goracs.experiment.toml_checks import (
    boolean,
    build_settings,
    int_list,
    join,
    non_negative,
    positive,
    str_list,
    string,
    sub_table,
    type_name,
    unknown_keys,
    validated,
)
from goracs.features.gradnorms import LOSSES
from goracs.features.pipeline import EMBEDDINGS, FeatureSettings
from goracs.models import PACKAGED_LLM
from goracs.select import available_methods
from goracs.train.settings import PRESETS, TrainSettings

#: Pseudo-methods of the extra rows: no fine-tuning, and fine-tuning on the whole pool.
ZERO_SHOT = "zero-shot"
FULL_DATA = "full"
DEVICES = ("auto", "cpu", "cuda")

TOP_KEYS = ("name", "description", "model", "device", "datasets", "tasks", "methods", "seeds",
            "zero_shot", "full_data", "params", "data", "task", "plots", "variants",
            "method_seeds")
VARIANT_KEYS = ("method", "embedding")
#: Which embeddings a variant selects on: the features' train_emb.npy/valid_emb.npy, or the
#: scoring LLM's llm_train_emb.npy/llm_valid_emb.npy (features.embedding "llm" or "both").
VARIANT_EMBEDDINGS = ("default", "llm")
TASK_KEYS = ("budgets", "metrics", "prepare", "features", "train", "evaluate", "params",
             "methods", "seeds")
SOURCE_KEYS = ("path", "reviews", "meta", "domain_word", "like_threshold")
PLOT_KEYS = ("projection_points", "seed")


@dataclass(frozen=True)
class PrepareSettings:
    """Arguments of :func:`goracs.data.prepare.build_prepared` an experiment may set."""

    max_train: int | None = DEFAULT_MAX_TRAIN
    valid_size: int | None = None
    test_size: int | None = None
    seed: int = 0
    negatives: int = DEFAULT_NEGATIVES
    #: SeqRec test negatives drawn "uniform" or by "popularity" (in proportion to
    #: interactions).
    negative_sampling: str = "uniform"
    #: "global-time" (the last windows in time, as the paper splits) or "user-time" (each
    #: user's last window for test, the one before for validation).
    split: str = "global-time"


@dataclass(frozen=True)
class DataSource:
    """Where a dataset comes from when not from its packaged copy, and its prompt words."""

    path: str | None = None
    reviews: str | None = None
    meta: str | None = None
    domain_word: str | None = None
    like_threshold: float | None = None


@dataclass(frozen=True)
class TaskConfig:
    """Everything one task runs with. ``train`` carries seed 0: each run sets its own seed.
    ``params`` holds, per method, the constructor arguments beyond budget and seed."""

    task: str
    budgets: tuple[int, ...]
    metrics: tuple[str, ...]
    prepare: PrepareSettings
    features: FeatureSettings
    preset: str
    train: TrainSettings
    use_valid: bool
    evaluate: EvalSettings
    params: dict[str, dict[str, Any]]
    #: The methods this task runs (the config's `methods`, or the task's own subset) and the
    #: seeds of each (`method_seeds`, else the task's `seeds`, else the config's).
    methods: tuple[str, ...] = ()
    seeds: dict[str, tuple[int, ...]] = field(default_factory=dict)


@dataclass(frozen=True)
class Variant:
    """A named row of the table that runs a registered method with its own parameters
    (``[params.NAME]``) and, optionally, on the LLM's embeddings: ``[variants.NAME]`` with
    ``method = "goracs"`` and ``embedding = "llm"``."""

    method: str
    embedding: str = "default"


@dataclass(frozen=True)
class ExperimentConfig:
    """A validated experiment config."""

    name: str
    source: str
    description: str
    model: str
    device: str
    datasets: tuple[str, ...]
    sources: dict[str, DataSource]
    tasks: dict[str, TaskConfig]
    methods: tuple[str, ...]
    seeds: tuple[int, ...]
    zero_shot: bool
    full_data: bool
    projection_points: int = 5000
    plot_seed: int = 0
    text: str = field(default="", repr=False)
    variants: dict[str, Variant] = field(default_factory=dict)

    def base_method(self, name: str) -> str:
        """The registered method a row named ``name`` runs."""
        v = self.variants.get(name)
        return name if v is None else v.method

    def embedding(self, name: str) -> str:
        """Which embeddings the row named ``name`` selects on ("default" or "llm")."""
        v = self.variants.get(name)
        return "default" if v is None else v.embedding


# ---------------------------------------------------------------------------------------------
# The whole document


def _variants(table: Mapping[str, Any]) -> dict[str, Variant]:
    known = set(available_methods())
    out: dict[str, Variant] = {}
    for name, doc in table.items():
        key = join("variants", name)
        if name in known or name in (ZERO_SHOT, FULL_DATA):
            raise GoracsError(f"{key}: {name!r} is a method's own name; pick another")
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name):
            raise GoracsError(f"{key}: use letters, digits, '.', '_' and '-' only")
        if not isinstance(doc, dict):
            raise GoracsError(f"{key}: expected a table, got {type_name(doc)}")
        unknown_keys(doc, VARIANT_KEYS, key)
        method = doc.get("method")
        if method not in known:
            raise GoracsError(f"{join(key, 'method')}: expected a method `goracs methods` "
                              f"lists, got {method!r}")
        embedding = doc.get("embedding", "default")
        if embedding not in VARIANT_EMBEDDINGS:
            raise GoracsError(f"{join(key, 'embedding')}: must be one of "
                              f"{', '.join(VARIANT_EMBEDDINGS)}, got {embedding!r}")
        out[name] = Variant(method=method, embedding=embedding)
    return out


def parse_config(doc: Mapping[str, Any], default_name: str) -> ExperimentConfig:
    """Validate a parsed TOML document; raise :class:`GoracsError` naming the first bad key."""
    unknown_keys(doc, TOP_KEYS, "")
    name = string(doc, "name", default_name)
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name):
        raise GoracsError(f"name: use letters, digits, '.', '_' and '-' only, got {name!r}")
    description = doc.get("description", "")
    if not isinstance(description, str):
        raise GoracsError(f"description: expected a string, got {type_name(description)}")
    model = string(doc, "model", PACKAGED_LLM)
    device = string(doc, "device", "auto")
    if device not in DEVICES:
        raise GoracsError(f"device: must be one of {', '.join(DEVICES)}, got {device!r}")

    datasets = str_list(doc, "datasets")
    for d in datasets:
        if d not in DATASETS:
            raise GoracsError(f"datasets: unknown dataset {d!r}; known: {', '.join(DATASETS)}")
    data_tables = sub_table(doc, "data", "")
    unknown_keys(data_tables, datasets, "data")
    sources: dict[str, DataSource] = {}
    for d in datasets:
        t = sub_table(data_tables, d, "data")
        src = build_settings(DataSource, t, f"data.{d}")
        if d == "amazon" and src.path is None and (src.reviews is None or src.meta is None):
            raise GoracsError("data.amazon: give path, or reviews and meta (no packaged copy)")
        sources[d] = src

    task_names = str_list(doc, "tasks")
    for t in task_names:
        if t not in TASKS:
            raise GoracsError(f"tasks: unknown task {t!r}; known: {', '.join(TASKS)}")
    methods = tuple(str_list(doc, "methods"))
    variants = _variants(sub_table(doc, "variants", ""))
    known = set(available_methods()) | set(variants)
    for m in methods:
        if m not in known:
            raise GoracsError(f"methods: unknown method {m!r}; known: "
                              f"{', '.join(sorted(known))}")
    unused = sorted(set(variants) - set(methods))
    if unused:
        raise GoracsError(f"variants.{unused[0]}: defined but not listed in `methods`")
    seeds = int_list(doc, "seeds", "", positive=False)
    non_negative(seeds, "seeds")
    method_seeds: dict[str, tuple[int, ...]] = {}
    ms_table = sub_table(doc, "method_seeds", "")
    for m in ms_table:
        if m not in methods:
            raise GoracsError(f"method_seeds.{m}: not listed in `methods`")
        method_seeds[m] = int_list(ms_table, m, "method_seeds", positive=False)
        non_negative(method_seeds[m], f"method_seeds.{m}")
    zero_shot = boolean(doc, "zero_shot", True)
    full_data = boolean(doc, "full_data", False)

    bases = {n: v.method for n, v in variants.items()}
    common = method_params(sub_table(doc, "params", ""), "params", bases)
    task_tables = sub_table(doc, "task", "")
    unknown_keys(task_tables, task_names, "task")
    tasks: dict[str, TaskConfig] = {}
    for t in task_names:
        where = f"task.{t}"
        if t not in task_tables:
            raise GoracsError(f"{where}: missing (every task in `tasks` needs its table)")
        tasks[t] = _parse_task(t, sub_table(task_tables, t, "task"), where, model, device,
                               methods, common, variants, seeds, method_seeds)

    plots = sub_table(doc, "plots", "")
    unknown_keys(plots, PLOT_KEYS, "plots")
    points = plots.get("projection_points", 5000)
    positive(points, "plots.projection_points")
    plot_seed = plots.get("seed", 0)
    if not isinstance(plot_seed, int) or isinstance(plot_seed, bool):
        raise GoracsError(f"plots.seed: expected an integer, got {plot_seed!r}")
    check_seed(plot_seed, "plots.seed")
    return ExperimentConfig(
        name=name, source="", description=description, model=model, device=device,
        datasets=tuple(datasets), sources=sources, tasks=tasks, methods=methods,
        seeds=seeds, zero_shot=zero_shot, full_data=full_data, projection_points=points,
        plot_seed=plot_seed, variants=variants)


def _parse_task(task: str, doc: Mapping[str, Any], where: str, model: str, device: str,
                methods: tuple[str, ...], common: Mapping[str, Mapping[str, Any]],
                variants: Mapping[str, Variant] | None = None,
                seeds: tuple[int, ...] = (0,),
                method_seeds: Mapping[str, tuple[int, ...]] | None = None) -> TaskConfig:
    variants = variants or {}
    if "methods" in doc:
        own = tuple(str_list(doc, "methods", where))
        stray = [m for m in own if m not in methods]
        if stray:
            raise GoracsError(f"{where}.methods: {stray[0]!r} is not in the config's `methods`")
        methods = own
    if "seeds" in doc:
        seeds = int_list(doc, "seeds", where, positive=False)
        non_negative(seeds, f"{where}.seeds")
    run_seeds = {m: (method_seeds or {}).get(m, seeds) for m in methods}
    unknown_keys(doc, TASK_KEYS, where)
    budgets = int_list(doc, "budgets", where, positive=True)
    metrics = tuple(str_list(doc, "metrics", where))
    allowed = known_metrics(task)
    for m in metrics:
        if m not in allowed:
            raise GoracsError(f"{where}.metrics: unknown {task} metric {m!r}; known: "
                              f"{', '.join(allowed)}")

    ptab = sub_table(doc, "prepare", where)
    prep = build_settings(PrepareSettings, ptab, f"{where}.prepare")
    if prep.split not in SPLIT_KINDS:
        raise GoracsError(f"{where}.prepare.split: must be one of {', '.join(SPLIT_KINDS)}, "
                          f"got {prep.split!r}")
    if prep.negative_sampling not in NEGATIVE_SAMPLING:
        raise GoracsError(f"{where}.prepare.negative_sampling: must be one of "
                          f"{', '.join(NEGATIVE_SAMPLING)}, got {prep.negative_sampling!r}")
    for k in ("max_train", "valid_size", "test_size", "negatives"):
        positive(getattr(prep, k), f"{where}.prepare.{k}", allow_none=k != "negatives")
    check_seed(prep.seed, f"{where}.prepare.seed")
    if prep.max_train is not None:
        too_big = [b for b in budgets if b >= prep.max_train]
        if too_big:
            raise GoracsError(f"{where}.budgets: budget {too_big[0]} is not below the training "
                              f"pool ({where}.prepare.max_train = {prep.max_train})")

    ftab = dict(sub_table(doc, "features", where))
    feats = build_settings(FeatureSettings, ftab, f"{where}.features",
                           base=FeatureSettings(model=model), exclude=("task",))
    if device != "auto" and "device" not in ftab and \
            "device" in {f.name for f in fields(FeatureSettings)}:
        # the features stage runs where the rest does, unless its table says otherwise
        feats = replace(feats, device=device)
    for k in ("encoder_batch_size", "batch_size", "lora_r", "lora_alpha"):
        positive(getattr(feats, k), f"{where}.features.{k}")
    check_seed(feats.seed, f"{where}.features.seed")
    positive(feats.encoder_max_length, f"{where}.features.encoder_max_length", allow_none=True)
    if feats.max_length < 2:
        raise GoracsError(f"{where}.features.max_length: must be at least 2")
    for k in ("dtype", "encoder_dtype"):
        if getattr(feats, k) not in ("fp32", "bf16"):
            raise GoracsError(f"{where}.features.{k}: must be fp32 or bf16")
    if feats.grad_loss is not None and feats.grad_loss not in LOSSES:
        raise GoracsError(f"{where}.features.grad_loss: must be one of {', '.join(LOSSES)}")
    if feats.embedding not in EMBEDDINGS:
        raise GoracsError(f"{where}.features.embedding: must be one of "
                          f"{', '.join(EMBEDDINGS)}")

    ttab = dict(sub_table(doc, "train", where))
    preset_name = ttab.pop("preset", "cpu-small")
    if preset_name not in PRESETS:
        raise GoracsError(f"{where}.train.preset: unknown preset {preset_name!r} (choose from "
                          f"{', '.join(PRESETS)})")
    use_valid = ttab.pop("use_valid", True)
    if not isinstance(use_valid, bool):
        raise GoracsError(f"{where}.train.use_valid: expected true or false, got {use_valid!r}")
    if "seed" in ttab:
        raise GoracsError(f"{where}.train.seed: the fine-tuning seed is each run's seed (set "
                          "`seeds`)")
    train = build_settings(TrainSettings, ttab, f"{where}.train", base=PRESETS[preset_name],
                           exclude=("seed",))
    train = validated(replace(train, seed=0), f"{where}.train")

    etab = sub_table(doc, "evaluate", where)
    ev = validated(build_settings(EvalSettings, etab, f"{where}.evaluate"), f"{where}.evaluate")

    per_task = method_params(sub_table(doc, "params", where), f"{where}.params",
                             {n: v.method for n, v in variants.items()})
    params: dict[str, dict[str, Any]] = {}
    for m in methods:
        base = variants[m].method if m in variants else m
        params[m] = resolve_params(m, task, common, per_task, base)
        src = f"{where}.params.{m}" if m in per_task else f"params.{m}"
        check_selector(base, params[m], budgets[0], src)
        if m in variants and variants[m].embedding == "llm" and \
                feats.embedding not in ("llm", "both"):
            raise GoracsError(f"variants.{m}: selects on the LLM's embeddings, but "
                              f"{where}.features.embedding is {feats.embedding!r} (set \"both\")")
    return TaskConfig(task=task, budgets=budgets, metrics=metrics, prepare=prep,
                      features=feats, preset=preset_name, train=train, use_valid=use_valid,
                      evaluate=ev, params=params, methods=methods, seeds=run_seeds)
