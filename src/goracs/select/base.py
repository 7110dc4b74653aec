"""The Selector contract shared by GORACS and every baseline (scikit-learn style).

Hyper-parameters go to ``__init__``, which stores each one unchanged under its own name;
``get_params()`` returns them and ``set_params(**kw)`` changes them. ``fit(data)`` checks the
hyper-parameters and the data, does the work and returns ``self``; what it found sits in
trailing-underscore attributes (``params_``, ``indices_``, ``objective_``, ``trace_``,
``seconds_``, ``info_``). ``result()`` packs them into a :class:`SelectionResult`, the
manifest ``selection.json`` holds.
"""

from __future__ import annotations

import inspect
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from goracs.errors import GoracsError


@dataclass
class SelectionData:
    """Everything a selector may look at; each method declares what it requires.

    ``train_emb`` (N, d) and ``valid_emb`` (V, d): sample embeddings. ``grad_norms`` (N,):
    per-sample gradient norms. ``train_labels`` (N,) and ``valid_labels`` (V,): integer class
    labels for label-enhanced selection. ``scores``: further per-training-sample scores by
    name (for importance baselines), each of shape (N,).
    """

    train_emb: np.ndarray | None = None
    valid_emb: np.ndarray | None = None
    grad_norms: np.ndarray | None = None
    train_labels: np.ndarray | None = None
    valid_labels: np.ndarray | None = None
    scores: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def n_train(self) -> int:
        for arr in (self.train_emb, self.grad_norms, self.train_labels):
            if arr is not None:
                return int(arr.shape[0])
        for arr in self.scores.values():
            return int(arr.shape[0])
        raise GoracsError("no training-sample array given")

    def missing(self, required: tuple[str, ...]) -> list[str]:
        """The entries of ``required`` (field names or ``scores.<name>``) that are absent."""
        return [name for name in required
                if (name[7:] not in self.scores if name.startswith("scores.")
                    else getattr(self, name) is None)]

    def validate(self, required: tuple[str, ...] = ()) -> None:
        """Check presence, shapes and finiteness; raise :class:`GoracsError` on the first fault."""
        for name in self.missing(required)[:1]:
            if name.startswith("scores."):
                raise GoracsError(f"this method needs the per-sample score {name[7:]!r}")
            raise GoracsError(f"this method needs {name.replace('_', '-')}")
        n = self.n_train
        for name in ("train_emb", "valid_emb"):
            arr = getattr(self, name)
            if arr is not None and (arr.ndim != 2 or arr.shape[0] == 0 or arr.shape[1] == 0):
                raise GoracsError(f"{name.replace('_', '-')} must be a non-empty 2-D array, "
                                  f"got shape {arr.shape}")
        if self.train_emb is not None and self.valid_emb is not None:
            if self.train_emb.shape[1] != self.valid_emb.shape[1]:
                raise GoracsError(
                    f"embedding widths differ: train {self.train_emb.shape[1]}, "
                    f"valid {self.valid_emb.shape[1]}"
                )
        per_train = [("train-emb", self.train_emb), ("grad-norms", self.grad_norms),
                     ("train-labels", self.train_labels)]
        per_train += [(f"score {k}", v) for k, v in self.scores.items()]
        for label, arr in per_train:
            if arr is not None and arr.shape[0] != n:
                raise GoracsError(f"{label} has {arr.shape[0]} rows, expected {n} "
                                  "(one per training sample)")
        if self.grad_norms is not None and self.grad_norms.ndim != 1:
            raise GoracsError(f"grad-norms must be 1-D, got shape {self.grad_norms.shape}")
        if self.valid_labels is not None and self.valid_emb is not None:
            if self.valid_labels.shape[0] != self.valid_emb.shape[0]:
                raise GoracsError(f"valid-labels has {self.valid_labels.shape[0]} rows, "
                                  f"expected {self.valid_emb.shape[0]}")
        if (self.train_labels is None) != (self.valid_labels is None):
            raise GoracsError("give both train-labels and valid-labels, or neither")
        for label, arr in per_train + [("valid-emb", self.valid_emb),
                                       ("valid-labels", self.valid_labels)]:
            if arr is None:
                continue
            if not (np.issubdtype(arr.dtype, np.number) or arr.dtype == np.bool_):
                raise GoracsError(f"{label} must be numeric, got dtype {arr.dtype}")
            if np.issubdtype(arr.dtype, np.floating) and not np.isfinite(arr).all():
                raise GoracsError(f"{label} contains NaN or inf")
        if self.grad_norms is not None and (self.grad_norms < 0).any():
            raise GoracsError("grad-norms must be non-negative")
        for label, arr in (("train-labels", self.train_labels),
                           ("valid-labels", self.valid_labels)):
            if arr is not None and arr.ndim != 1:
                raise GoracsError(f"{label} must be 1-D, got shape {arr.shape}")


@dataclass
class SelectionResult:
    """What a selection produced; ``to_json()`` is the manifest written to ``selection.json``."""

    method: str
    indices: np.ndarray
    poo: float | None
    trace: list[float]
    params: dict[str, Any]
    seconds: dict[str, float]
    info: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "budget": int(len(self.indices)),
            "indices": [int(i) for i in self.indices],
            "poo": None if self.poo is None else float(self.poo),
            "trace": [float(x) for x in self.trace],
            "params": self.params,
            "seconds": {k: round(float(v), 6) for k, v in self.seconds.items()},
            **self.info,
        }


class Selector(ABC):
    """Base class: pick ``budget`` training samples from a pool.

    Subclasses set ``name`` and ``requires`` (the fields of :class:`SelectionData` they need,
    ``scores.<name>`` for a score; a property where a hyper-parameter names the source) and
    implement ``_select``, which must set ``self.indices_`` (and may set ``objective_``,
    ``trace_`` and ``info_``), timing its stages with ``self._stage(name)``. A subclass with
    hyper-parameters stores them as given in ``__init__``, checks them in
    ``_validate_params`` and ends its ``__init__`` with a call to it: ``fit`` checks them
    again, but a bad value should stop a command or an experiment config before any work.
    """

    name: ClassVar[str]
    requires: tuple[str, ...] = ()

    def __init__(self, budget: int, seed: int = 0) -> None:
        self.budget = budget
        self.seed = seed

    def get_params(self) -> dict[str, Any]:
        """The hyper-parameters as given: the constructor arguments of the class and of the
        classes it derives from (an ablation reports the values it fixes)."""
        params: dict[str, Any] = {}
        for cls in type(self).__mro__:
            if cls is object:
                continue
            for pname in inspect.signature(cls.__init__).parameters:
                if pname not in ("self", "args", "kwargs") and hasattr(self, pname):
                    params.setdefault(pname, getattr(self, pname))
        return params

    def set_params(self, **params: Any) -> Selector:
        """Change hyper-parameters that :meth:`get_params` reports; a bad value is refused
        with one line and leaves every hyper-parameter as it was. Returns ``self``."""
        known = self.get_params()
        for key in params:
            if key not in known:
                raise GoracsError(f"method {self.name!r} has no parameter {key!r}")
        before = {key: known[key] for key in params}
        for key, value in params.items():
            setattr(self, key, value)
        try:
            self._validate_params()
        except GoracsError:
            for key, value in before.items():
                setattr(self, key, value)
            raise
        return self

    def _validate_params(self) -> dict[str, Any]:
        """Check the hyper-parameters (the checks that need no data), each fault a one-line
        :class:`GoracsError`; return, by name, the value the selection uses for each one a
        check normalises (a float for an int given, say). The base class has none."""
        return {}

    @contextmanager
    def _stage(self, stage: str) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.seconds_[stage] = self.seconds_.get(stage, 0.0) + time.perf_counter() - t0

    def fit(self, data: SelectionData) -> Selector:
        # the hyper-parameters as the selection uses them, and as ``result()`` records them
        self.params_: dict[str, Any] = {**self.get_params(), **self._validate_params()}
        data.validate(self.requires)
        n = data.n_train
        if not isinstance(self.budget, (int, np.integer)) or self.budget <= 0:
            raise GoracsError(f"budget must be a positive integer, got {self.budget}")
        if self.budget >= n:
            raise GoracsError(f"budget {self.budget} must be smaller than the pool ({n} samples)")
        self.indices_: np.ndarray
        self.objective_: float | None = None
        self.trace_: list[float] = []
        self.info_: dict[str, Any] = {}
        self.seconds_: dict[str, float] = {}
        t0 = time.perf_counter()
        self._select(data)
        self.seconds_["total"] = time.perf_counter() - t0
        idx = np.asarray(self.indices_, dtype=np.int64)
        if idx.shape != (self.budget,) or len(np.unique(idx)) != self.budget:
            raise AssertionError(f"{self.name} returned {len(np.unique(idx))} distinct indices, "
                                 f"expected {self.budget}")
        self.indices_ = np.sort(idx)
        return self

    @abstractmethod
    def _select(self, data: SelectionData) -> None: ...

    def result(self) -> SelectionResult:
        return SelectionResult(
            method=self.name,
            indices=self.indices_,
            poo=self.objective_,
            trace=list(self.trace_),
            params={k: _jsonable(v) for k, v in self.params_.items()},
            seconds=dict(self.seconds_),
            info=dict(self.info_),
        )


def _jsonable(v: Any) -> Any:
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    return v


_REGISTRY: dict[str, type[Selector]] = {}


def register(cls: type[Selector]) -> type[Selector]:
    """Class decorator: make a selector reachable by name (``goracs select --method``)."""
    if cls.name in _REGISTRY and _REGISTRY[cls.name] is not cls:
        raise ValueError(f"selector name {cls.name!r} registered twice")
    _REGISTRY[cls.name] = cls
    return cls


def get_selector(name: str) -> type[Selector]:
    if name not in _REGISTRY:
        raise GoracsError(f"unknown method {name!r}; known: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name]


def available_methods() -> dict[str, str]:
    """Registered method names with the first line of each docstring."""
    return {k: (inspect.getdoc(v) or "").splitlines()[0] for k, v in sorted(_REGISTRY.items())}
