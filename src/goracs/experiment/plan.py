"""The plan of an experiment: every unit of work, where its output lives, and whether it is done.

Per (dataset, task) one ``prepare`` and one ``features`` unit; per run (method x budget x
seed) a ``select``, a ``finetune`` and an ``evaluate`` unit (the zero-shot row evaluates only;
the full-data row fine-tunes on the whole pool without selecting). Every output folder carries
a key: a digest of everything that shapes it, its upstream keys included, so a changed setting
lands in a new folder and an unchanged one is found again. A unit is done when its final
manifest exists; each stage writes that manifest last and atomically.

Layout under the experiment folder::

    DATASET-TASK/data-KEY/                   prepared folder (meta.json), features/ inside
    DATASET-TASK/select/RUN-KEY/             selection.json, coreset.json
    DATASET-TASK/finetune/RUN-KEY/           LoRA adapter, training.json
    DATASET-TASK/evaluate/RUN-KEY/           metrics.json, predictions.jsonl, run.json
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from goracs.cache import content_key
from goracs.errors import GoracsError
from goracs.experiment.config import FULL_DATA, ZERO_SHOT, ExperimentConfig
from goracs.io import read_json

KEY_CHARS = 10
STAGES = ("prepare", "features", "select", "finetune", "evaluate")
#: The file whose presence marks each stage's output complete.
MARKERS = {"prepare": "meta.json", "features": "features/features.json",
           "select": "selection.json", "finetune": "training.json", "evaluate": "metrics.json"}
RUN_RECORD = "run.json"
FILTER_KEYS = ("dataset", "task", "method", "budget", "seed")


@dataclass(frozen=True)
class Run:
    """One row of the results: a method at a budget and seed on a dataset's task.

    ``budget`` is None for the zero-shot and full-data rows (no coreset), ``seed`` None for
    the zero-shot row (nothing random happens in it). ``select_dir`` is None when nothing is
    selected, ``finetune_dir`` None for zero-shot.
    """

    dataset: str
    task: str
    method: str
    budget: int | None
    seed: int | None
    data_dir: Path
    select_dir: Path | None
    finetune_dir: Path | None
    eval_dir: Path
    keys: dict[str, str]

    @property
    def label(self) -> str:
        parts = [self.dataset, self.task, self.method]
        if self.budget is not None:
            parts.append(f"b={self.budget}")
        if self.seed is not None:
            parts.append(f"seed={self.seed}")
        return " ".join(parts)

    def field(self, name: str) -> str:
        """The value ``--only`` compares against (as text)."""
        v = getattr(self, name)
        return "-" if v is None else str(v)


@dataclass(frozen=True)
class Group:
    """The runs of one (dataset, task) and the folder their shared data lives in."""

    dataset: str
    task: str
    root: Path
    data_dir: Path
    keys: dict[str, str]
    runs: tuple[Run, ...]


def _key(doc: Mapping[str, Any]) -> str:
    return content_key({**doc, "format": 1})


def _short(key: str) -> str:
    return key[:KEY_CHARS]


def settings_delta(obj: Any) -> dict[str, Any]:
    """The fields of a settings dataclass that differ from its class defaults.

    Keys are built from these, so a field added to a settings class later (with a default
    that keeps the old behaviour) leaves every existing key, and so every cached output,
    valid. The price: changing a default in the code is not noticed by the keys.
    """
    default = type(obj)()
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(obj).items()
            if v != getattr(default, k)}


def features_doc(features: Any) -> dict[str, Any]:
    """The features settings as ``features.json`` records them (tuples as lists)."""
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(features).items()}


def features_key_doc(features: Any, task: str) -> dict[str, Any]:
    """What keys a features folder: the settings that differ from the defaults, with the
    gradient loss as the task resolves it (named only where it is not the whole text, so a
    folder keyed without a loss means the whole text), so that a changed task default is a
    new folder and the same computation asked for two ways is one."""
    from goracs.features.pipeline import resolve_grad_loss

    doc = settings_delta(features)
    doc.pop("grad_loss", None)
    loss = resolve_grad_loss(features, task)
    if loss != "text":
        doc["grad_loss"] = loss
    return doc


def _make_run(dataset: str, task: str, method: str, budget: int | None, seed: int | None,
              root: Path, data_key: str, data_dir: Path, select_key: str | None,
              train_on: str | None, train_doc: Mapping[str, Any],
              eval_doc: Mapping[str, Any]) -> Run:
    """One run with its folders; ``train_on`` names what it fine-tunes on (None: nothing)."""
    name = method if budget is None else f"{method}-b{budget}"
    if seed is not None:
        name += f"-s{seed}"
    keys = {"data": data_key}
    ft_key = None
    if select_key is not None:
        keys["select"] = select_key
    if train_on is not None:
        train = {**train_doc, "seed": seed}
        ft_key = _key({"train_on": train_on, "train": train})
        keys["finetune"] = ft_key
    ev_key = _key({"data": data_key, "finetune": ft_key, "evaluate": eval_doc})
    keys["evaluate"] = ev_key
    return Run(
        dataset=dataset, task=task, method=method, budget=budget, seed=seed, data_dir=data_dir,
        select_dir=(None if select_key is None
                    else root / "select" / f"{name}-{_short(select_key)}"),
        finetune_dir=None if ft_key is None else root / "finetune" / f"{name}-{_short(ft_key)}",
        eval_dir=root / "evaluate" / f"{name}-{_short(ev_key)}",
        keys=keys)


def build_plan(cfg: ExperimentConfig, out: str | Path) -> list[Group]:
    """Every group and run of ``cfg``, in table order: zero-shot first, then per budget the
    methods in config order and seeds in order, the full-data row last."""
    out = Path(out)
    groups = []
    for dataset in cfg.datasets:
        for task, tc in cfg.tasks.items():
            root = out / f"{dataset}-{task}"
            data_key = _key({"dataset": dataset, "source": settings_delta(cfg.sources[dataset]),
                             "task": task, "prepare": settings_delta(tc.prepare)})
            feat_key = _key({"data": data_key, "features": features_key_doc(tc.features, task)})
            data_dir = root / f"data-{_short(data_key)}"
            common = {"root": root, "data_key": data_key, "data_dir": data_dir,
                      "train_doc": {"settings": settings_delta(tc.train),
                                    "use_valid": tc.use_valid, "model": cfg.model,
                                    "device": cfg.device},
                      "eval_doc": {"settings": settings_delta(tc.evaluate),
                                   "model": cfg.model, "device": cfg.device}}
            runs: list[Run] = []
            if cfg.zero_shot:
                runs.append(_make_run(dataset, task, ZERO_SHOT, None, None, select_key=None,
                                      train_on=None, **common))
            for budget in tc.budgets:
                for method in (tc.methods or cfg.methods):
                    for seed in tc.seeds.get(method, cfg.seeds):
                        doc = {"features": feat_key, "method": method,
                               "params": tc.params[method], "budget": budget, "seed": seed}
                        if method in cfg.variants:
                            v = cfg.variants[method]
                            doc["variant"] = {"method": v.method, "embedding": v.embedding}
                        sk = _key(doc)
                        runs.append(_make_run(dataset, task, method, budget, seed,
                                              select_key=sk, train_on=f"select:{sk}",
                                              **common))
            if cfg.full_data:
                for seed in cfg.seeds:
                    runs.append(_make_run(dataset, task, FULL_DATA, None, seed, select_key=None,
                                          train_on=f"pool:{data_key}", **common))
            groups.append(Group(dataset=dataset, task=task, root=root, data_dir=data_dir,
                                keys={"data": data_key, "features": feat_key},
                                runs=tuple(runs)))
    return groups


# ---------------------------------------------------------------------------------------------
# Filters (--only)


def parse_filters(items: Iterable[str]) -> dict[str, set[str]]:
    """``["task=ctr,method=goracs", "method=random"]`` -> ``{"task": {"ctr"}, "method":
    {"goracs", "random"}}``: values of one key are alternatives, different keys must all
    match."""
    out: dict[str, set[str]] = {}
    for item in items:
        for part in item.split(","):
            part = part.strip()
            if not part:
                continue
            if "=" not in part:
                raise GoracsError(f"--only: expected KEY=VALUE, got {part!r}")
            k, v = (s.strip() for s in part.split("=", 1))
            if k not in FILTER_KEYS:
                raise GoracsError(f"--only: unknown key {k!r} (known: {', '.join(FILTER_KEYS)})")
            if not v:
                raise GoracsError(f"--only: {k}= needs a value")
            out.setdefault(k, set()).add(v)
    return out


def selected(run: Run, filters: Mapping[str, set[str]]) -> bool:
    return all(run.field(k) in vals for k, vals in filters.items())


# ---------------------------------------------------------------------------------------------
# What is done


def features_done(data_dir: Path, features: Any) -> bool:
    """``features.json`` exists and was written with these settings."""
    p = data_dir / MARKERS["features"]
    if not p.is_file():
        return False
    try:
        doc = read_json(p)
    except GoracsError:
        return False
    return isinstance(doc, dict) and doc.get("settings") == features_doc(features)


def unit_done(stage: str, folder: Path | None) -> bool:
    """Whether the output of ``stage`` in ``folder`` is complete (its marker exists)."""
    return folder is not None and (folder / MARKERS[stage]).is_file()


def run_units(run: Run) -> list[tuple[str, Path]]:
    """The per-run stages of ``run`` with their folders, in order."""
    units: list[tuple[str, Path]] = []
    if run.select_dir is not None:
        units.append(("select", run.select_dir))
    if run.finetune_dir is not None:
        units.append(("finetune", run.finetune_dir))
    units.append(("evaluate", run.eval_dir))
    return units
