"""Where the project keeps what it fetches, converts and caches."""

from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    """``$GORACS_CACHE`` if set, else ``~/.cache/goracs``: converted models, fetched data sets,
    embedding and gradient-norm caches."""
    env = os.environ.get("GORACS_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "goracs"
