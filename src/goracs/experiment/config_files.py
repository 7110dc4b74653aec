"""Which file a config name means, and reading it: ``cpu``, ``paper``, ``evidence`` and
``evidence-gpu`` name the configs shipped inside the package; anything else is a path."""

from __future__ import annotations

import importlib.resources
from dataclasses import replace
from pathlib import Path

from goracs.errors import GoracsError
from goracs.experiment.config import ExperimentConfig, parse_config
from goracs.io import loads_toml

SHIPPED = ("cpu", "paper", "evidence", "evidence-gpu")


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


def load_config(name_or_path: str) -> ExperimentConfig:
    """Read, resolve and validate a config (see :mod:`goracs.experiment.config`); the TOML is
    parsed with the depth limit every input gets (:mod:`goracs.io`)."""
    label, text = resolve_config(name_or_path)
    doc = loads_toml(text, label)
    default_name = label if label in SHIPPED else Path(label).stem
    try:
        cfg = parse_config(doc, default_name)
    except GoracsError as exc:
        raise GoracsError(f"{Path(label).name}: {exc}") from None
    return replace(cfg, source=label, text=text)
