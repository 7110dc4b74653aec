"""Experiment configs: datasets x tasks x methods x budgets x seeds, with per-task settings.

A config is a TOML file (see ``configs/cpu.toml`` for every key, commented). It is checked
whole before anything runs: an unknown key, an unknown method or metric, a value of the wrong
type, a non-positive budget or one that the training pool cannot hold is a one-line
:class:`GoracsError` naming the key. ``cpu`` and ``paper`` name the configs shipped inside
the package; anything else is a path.
"""

from __future__ import annotations

import importlib.resources
import inspect
import numbers
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from goracs.checks import seed as check_seed
from goracs.data.prepare import DATASETS, DEFAULT_MAX_TRAIN, DEFAULT_NEGATIVES, TASKS
from goracs.data.samples import SPLIT_KINDS
from goracs.errors import GoracsError
from goracs.evaluate.metrics import KS
from goracs.evaluate.run import EvalSettings
from goracs.features.gradnorms import LOSSES
from goracs.features.pipeline import EMBEDDINGS, FeatureSettings
from goracs.io import loads_toml
from goracs.models import PACKAGED_LLM
from goracs.select import available_methods, get_selector
from goracs.select.defaults import TASK_LAMBDA
from goracs.train.settings import PRESETS, TrainSettings

SHIPPED = ("cpu", "paper", "evidence", "evidence-gpu")
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


def known_metrics(task: str) -> tuple[str, ...]:
    """Metric names a table may show for ``task``: keys of ``metrics.json``'s ``metrics``,
    with SeqRec's protocols as prefixes (``sampled.NDCG@10``, ``full.HR@20``)."""
    if task == "ctr":
        return ("AUC", "log_loss", "accuracy", "positive_rate", "mean_p_yes")
    ranked = tuple(f"{proto}.{m}@{k}" for proto in ("sampled", "full") for m in ("NDCG", "HR")
                   for k in KS)
    return ranked + ("exact_match", "answer_in_catalogue")


def lower_is_better(metric: str) -> bool:
    return metric == "log_loss"


@dataclass(frozen=True)
class PrepareSettings:
    """Arguments of :func:`goracs.data.prepare.build_prepared` an experiment may set."""

    max_train: int | None = DEFAULT_MAX_TRAIN
    valid_size: int | None = None
    test_size: int | None = None
    seed: int = 0
    negatives: int = DEFAULT_NEGATIVES
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


def shipped_config_path(name: str) -> Path:
    """The file of a config shipped inside the package (``cpu`` or ``paper``)."""
    res = importlib.resources.files("goracs.experiment") / "configs" / f"{name}.toml"
    return Path(str(res))


def resolve_config(name_or_path: str) -> tuple[str, str]:
    """``(label, text)`` of a shipped config name or a TOML path."""
    p = Path(name_or_path).expanduser()
    if p.is_file():
        try:
            return str(p), p.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise GoracsError(f"cannot read {p}: {exc}") from None
    if name_or_path in SHIPPED:
        sp = shipped_config_path(name_or_path)
        if not sp.is_file():
            raise GoracsError(f"the shipped config {name_or_path!r} is missing from the "
                              f"installed package ({sp}); reinstall goracs")
        return name_or_path, sp.read_text(encoding="utf-8")
    raise GoracsError(f"no config file {name_or_path!r}; give a TOML path or one of the "
                      f"shipped configs: {', '.join(SHIPPED)}")


def _toml_loads(text: str, label: str) -> dict[str, Any]:
    """Parse a config's TOML with the depth limit every input gets (:mod:`goracs.io`)."""
    return loads_toml(text, label)


def load_config(name_or_path: str) -> ExperimentConfig:
    """Read, resolve and validate a config (see the module docstring)."""
    label, text = resolve_config(name_or_path)
    doc = _toml_loads(text, label)
    default_name = label if label in SHIPPED else Path(label).stem
    try:
        cfg = parse_config(doc, default_name)
    except GoracsError as exc:
        raise GoracsError(f"{Path(label).name}: {exc}") from None
    return replace(cfg, source=label, text=text)


# ---------------------------------------------------------------------------------------------
# Checking values


def _unknown(table: Mapping[str, Any], allowed: tuple[str, ...] | set[str], where: str) -> None:
    for k in table:
        if k not in allowed:
            raise GoracsError(f"{_join(where, k)}: unknown key (known: "
                              f"{', '.join(sorted(allowed))})")


def _join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def _table(doc: Mapping[str, Any], key: str, where: str) -> dict[str, Any]:
    v = doc.get(key, {})
    if not isinstance(v, dict):
        raise GoracsError(f"{_join(where, key)}: expected a table, got {_tname(v)}")
    return v


def _tname(v: Any) -> str:
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string",
            list: "a list", dict: "a table"}.get(type(v), type(v).__name__)


def _is_none(v: Any) -> bool:
    return isinstance(v, str) and v.strip().lower() in ("none", "all")


def _coerce(value: Any, hint: str, key: str) -> Any:
    """``value`` as the type a dataclass field hint names (``int | None``, ``tuple[str, ...]``);
    the strings "none" and "all" stand for None where None is allowed (TOML has no null)."""
    optional = "None" in hint
    base = hint.replace("| None", "").replace("None |", "").strip()
    if optional and _is_none(value):
        return None
    if base == "bool":
        if isinstance(value, bool):
            return value
    elif base == "int":
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif base == "float":
        if isinstance(value, numbers.Real) and not isinstance(value, bool):
            return float(value)
    elif base == "str":
        if isinstance(value, str):
            return value
    elif base.startswith("tuple[str"):
        if isinstance(value, list) and all(isinstance(x, str) for x in value):
            return tuple(value)
        base = "a list of strings"
    else:  # a field type this module does not know: pass it through unchecked
        return value
    want = {"int": "an integer", "float": "a number", "str": "a string",
            "bool": "true or false"}.get(base, base)
    extra = ' or "none"' if optional else ""
    raise GoracsError(f"{key}: expected {want}{extra}, got {_tname(value)} {value!r}")


def _settings(cls: type, table: Mapping[str, Any], where: str, base: Any = None,
              exclude: tuple[str, ...] = ()) -> Any:
    """Build a settings dataclass from a config table, every key checked against its fields."""
    names = {f.name: f for f in fields(cls)}
    allowed = tuple(n for n in names if n not in exclude)
    _unknown(table, allowed, where)
    kwargs = {k: _coerce(v, str(names[k].type), _join(where, k)) for k, v in table.items()}
    if base is not None:
        return replace(base, **kwargs)
    return cls(**kwargs)


def _validated(obj: Any, where: str) -> Any:
    try:
        return obj.validate()
    except GoracsError as exc:
        raise GoracsError(f"{where}: {exc}") from None


def _positive(v: Any, key: str, allow_none: bool = False) -> None:
    if v is None and allow_none:
        return
    if not isinstance(v, int) or isinstance(v, bool) or v < 1:
        raise GoracsError(f"{key}: must be a positive integer, got {v!r}")


def _str_list(doc: Mapping[str, Any], key: str, where: str = "") -> list[str]:
    v = doc.get(key)
    k = _join(where, key)
    if v is None:
        raise GoracsError(f"{k}: missing (a list of names)")
    if not isinstance(v, list) or not v or not all(isinstance(x, str) for x in v):
        raise GoracsError(f"{k}: expected a non-empty list of strings, got {v!r}")
    if len(set(v)) != len(v):
        raise GoracsError(f"{k}: names repeat in {v!r}")
    return v


def _int_list(doc: Mapping[str, Any], key: str, where: str, positive: bool) -> tuple[int, ...]:
    v = doc.get(key)
    k = _join(where, key)
    if v is None:
        raise GoracsError(f"{k}: missing (a list of integers)")
    if not isinstance(v, list) or not v or not all(
            isinstance(x, int) and not isinstance(x, bool) for x in v):
        raise GoracsError(f"{k}: expected a non-empty list of integers, got {v!r}")
    if positive:
        bad = [x for x in v if x < 1]
        if bad:
            raise GoracsError(f"{k}: budgets must be positive, got {bad[0]}")
    if len(set(v)) != len(v):
        raise GoracsError(f"{k}: values repeat in {v!r}")
    return tuple(v)


def _non_negative(values: tuple[int, ...], key: str) -> None:
    bad = [v for v in values if v < 0]
    if bad:
        raise GoracsError(f"{key}: seeds must be 0 or more, got {bad[0]}")


def _bool(doc: Mapping[str, Any], key: str, default: bool) -> bool:
    v = doc.get(key, default)
    if not isinstance(v, bool):
        raise GoracsError(f"{key}: expected true or false, got {v!r}")
    return v


def _str(doc: Mapping[str, Any], key: str, default: str) -> str:
    v = doc.get(key, default)
    if not isinstance(v, str) or not v.strip():
        raise GoracsError(f"{key}: expected a non-empty string, got {v!r}")
    return v


# ---------------------------------------------------------------------------------------------
# Method parameters


def constructor_params(method: str) -> set[str]:
    """Arguments the method's own constructor accepts, less ``budget`` and ``seed``."""
    cls = get_selector(method)
    return set(inspect.signature(cls.__init__).parameters) - {"self", "budget", "seed"}


def _variants(table: Mapping[str, Any]) -> dict[str, Variant]:
    known = set(available_methods())
    out: dict[str, Variant] = {}
    for name, doc in table.items():
        key = _join("variants", name)
        if name in known or name in (ZERO_SHOT, FULL_DATA):
            raise GoracsError(f"{key}: {name!r} is a method's own name; pick another")
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name):
            raise GoracsError(f"{key}: use letters, digits, '.', '_' and '-' only")
        if not isinstance(doc, dict):
            raise GoracsError(f"{key}: expected a table, got {_tname(doc)}")
        _unknown(doc, VARIANT_KEYS, key)
        method = doc.get("method")
        if method not in known:
            raise GoracsError(f"{_join(key, 'method')}: expected a method `goracs methods` "
                              f"lists, got {method!r}")
        embedding = doc.get("embedding", "default")
        if embedding not in VARIANT_EMBEDDINGS:
            raise GoracsError(f"{_join(key, 'embedding')}: must be one of "
                              f"{', '.join(VARIANT_EMBEDDINGS)}, got {embedding!r}")
        out[name] = Variant(method=method, embedding=embedding)
    return out


def _method_params(table: Mapping[str, Any], where: str, methods: tuple[str, ...],
                   variants: Mapping[str, Variant] | None = None
                   ) -> dict[str, dict[str, Any]]:
    variants = variants or {}
    known = set(available_methods()) | set(variants)
    out: dict[str, dict[str, Any]] = {}
    for method, params in table.items():
        key = _join(where, method)
        if method not in known:
            raise GoracsError(f"{key}: unknown method {method!r}; known: "
                              f"{', '.join(sorted(known))}")
        if not isinstance(params, dict):
            raise GoracsError(f"{key}: expected a table of parameters, got {_tname(params)}")
        base = variants[method].method if method in variants else method
        accepted = constructor_params(base)
        for p, v in params.items():
            if p not in accepted:
                raise GoracsError(f"{_join(key, p)}: method {method!r} has no parameter {p!r} "
                                  f"(it takes: {', '.join(sorted(accepted)) or 'none'})")
            if isinstance(v, dict):
                raise GoracsError(f"{_join(key, p)}: expected a value, got a table")
        out[method] = {p: (None if _is_none(v) else v) for p, v in params.items()}
    return out


def resolve_params(method: str, task: str, common: Mapping[str, Mapping[str, Any]],
                   per_task: Mapping[str, Mapping[str, Any]], base: str | None = None
                   ) -> dict[str, Any]:
    """A method's constructor arguments for a task: per-task values over common ones; GORACS
    and its ablations get the reference's lambda of the task unless the config sets one.
    ``base`` names the registered method of a variant row called ``method``."""
    params: dict[str, Any] = {}
    base = base or method
    if base.startswith("goracs") and "lam" in constructor_params(base):
        params["lam"] = TASK_LAMBDA[task]
    params.update(common.get(method, {}))
    params.update(per_task.get(method, {}))
    return params


def check_selector(method: str, params: Mapping[str, Any], budget: int, key: str) -> None:
    """Instantiate the selector once so bad parameter values fail before anything runs."""
    cls = get_selector(method)
    try:
        cls(budget=budget, seed=0, **params)
    except GoracsError as exc:
        raise GoracsError(f"{key}: {exc}") from None
    except (TypeError, ValueError) as exc:
        raise GoracsError(f"{key}: bad parameters for {method}: {exc}") from None


# ---------------------------------------------------------------------------------------------
# The whole document


def parse_config(doc: Mapping[str, Any], default_name: str) -> ExperimentConfig:
    """Validate a parsed TOML document; raise :class:`GoracsError` naming the first bad key."""
    _unknown(doc, TOP_KEYS, "")
    name = _str(doc, "name", default_name)
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name):
        raise GoracsError(f"name: use letters, digits, '.', '_' and '-' only, got {name!r}")
    description = doc.get("description", "")
    if not isinstance(description, str):
        raise GoracsError(f"description: expected a string, got {_tname(description)}")
    model = _str(doc, "model", PACKAGED_LLM)
    device = _str(doc, "device", "auto")
    if device not in DEVICES:
        raise GoracsError(f"device: must be one of {', '.join(DEVICES)}, got {device!r}")

    datasets = _str_list(doc, "datasets")
    for d in datasets:
        if d not in DATASETS:
            raise GoracsError(f"datasets: unknown dataset {d!r}; known: {', '.join(DATASETS)}")
    data_tables = _table(doc, "data", "")
    _unknown(data_tables, datasets, "data")
    sources: dict[str, DataSource] = {}
    for d in datasets:
        t = _table(data_tables, d, "data")
        src = _settings(DataSource, t, f"data.{d}")
        if d == "amazon" and src.path is None and (src.reviews is None or src.meta is None):
            raise GoracsError("data.amazon: give path, or reviews and meta (no packaged copy)")
        sources[d] = src

    task_names = _str_list(doc, "tasks")
    for t in task_names:
        if t not in TASKS:
            raise GoracsError(f"tasks: unknown task {t!r}; known: {', '.join(TASKS)}")
    methods = tuple(_str_list(doc, "methods"))
    variants = _variants(_table(doc, "variants", ""))
    known = set(available_methods()) | set(variants)
    for m in methods:
        if m not in known:
            raise GoracsError(f"methods: unknown method {m!r}; known: "
                              f"{', '.join(sorted(known))}")
    unused = sorted(set(variants) - set(methods))
    if unused:
        raise GoracsError(f"variants.{unused[0]}: defined but not listed in `methods`")
    seeds = _int_list(doc, "seeds", "", positive=False)
    _non_negative(seeds, "seeds")
    method_seeds: dict[str, tuple[int, ...]] = {}
    ms_table = _table(doc, "method_seeds", "")
    for m in ms_table:
        if m not in methods:
            raise GoracsError(f"method_seeds.{m}: not listed in `methods`")
        method_seeds[m] = _int_list(ms_table, m, "method_seeds", positive=False)
        _non_negative(method_seeds[m], f"method_seeds.{m}")
    zero_shot = _bool(doc, "zero_shot", True)
    full_data = _bool(doc, "full_data", False)

    common = _method_params(_table(doc, "params", ""), "params", methods, variants)
    task_tables = _table(doc, "task", "")
    _unknown(task_tables, task_names, "task")
    tasks: dict[str, TaskConfig] = {}
    for t in task_names:
        where = f"task.{t}"
        if t not in task_tables:
            raise GoracsError(f"{where}: missing (every task in `tasks` needs its table)")
        tasks[t] = _parse_task(t, _table(task_tables, t, "task"), where, model, device,
                               methods, common, variants, seeds, method_seeds)

    plots = _table(doc, "plots", "")
    _unknown(plots, PLOT_KEYS, "plots")
    points = plots.get("projection_points", 5000)
    _positive(points, "plots.projection_points")
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
        own = tuple(_str_list(doc, "methods", where))
        stray = [m for m in own if m not in methods]
        if stray:
            raise GoracsError(f"{where}.methods: {stray[0]!r} is not in the config's `methods`")
        methods = own
    if "seeds" in doc:
        seeds = _int_list(doc, "seeds", where, positive=False)
        _non_negative(seeds, f"{where}.seeds")
    run_seeds = {m: (method_seeds or {}).get(m, seeds) for m in methods}
    _unknown(doc, TASK_KEYS, where)
    budgets = _int_list(doc, "budgets", where, positive=True)
    metrics = tuple(_str_list(doc, "metrics", where))
    allowed = known_metrics(task)
    for m in metrics:
        if m not in allowed:
            raise GoracsError(f"{where}.metrics: unknown {task} metric {m!r}; known: "
                              f"{', '.join(allowed)}")

    ptab = _table(doc, "prepare", where)
    prep = _settings(PrepareSettings, ptab, f"{where}.prepare")
    if prep.split not in SPLIT_KINDS:
        raise GoracsError(f"{where}.prepare.split: must be one of {', '.join(SPLIT_KINDS)}, "
                          f"got {prep.split!r}")
    for k in ("max_train", "valid_size", "test_size", "negatives"):
        _positive(getattr(prep, k), f"{where}.prepare.{k}", allow_none=k != "negatives")
    check_seed(prep.seed, f"{where}.prepare.seed")
    if prep.max_train is not None:
        too_big = [b for b in budgets if b >= prep.max_train]
        if too_big:
            raise GoracsError(f"{where}.budgets: budget {too_big[0]} is not below the training "
                              f"pool ({where}.prepare.max_train = {prep.max_train})")

    ftab = dict(_table(doc, "features", where))
    feats = _settings(FeatureSettings, ftab, f"{where}.features",
                      base=FeatureSettings(model=model), exclude=("task",))
    if device != "auto" and "device" not in ftab and \
            "device" in {f.name for f in fields(FeatureSettings)}:
        # the features stage runs where the rest does, unless its table says otherwise
        feats = replace(feats, device=device)
    for k in ("encoder_batch_size", "batch_size", "lora_r", "lora_alpha"):
        _positive(getattr(feats, k), f"{where}.features.{k}")
    check_seed(feats.seed, f"{where}.features.seed")
    _positive(feats.encoder_max_length, f"{where}.features.encoder_max_length", allow_none=True)
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

    ttab = dict(_table(doc, "train", where))
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
    train = _settings(TrainSettings, ttab, f"{where}.train", base=PRESETS[preset_name],
                      exclude=("seed",))
    train = _validated(replace(train, seed=0), f"{where}.train")

    etab = _table(doc, "evaluate", where)
    ev = _validated(_settings(EvalSettings, etab, f"{where}.evaluate"), f"{where}.evaluate")

    per_task = _method_params(_table(doc, "params", where), f"{where}.params", methods,
                              variants)
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
