"""Memory budgets for selection: what the dense and the streaming GORACS engines need.

The dense engine holds the N x V cost matrix and, in its medoid rounds, an N x n matrix of
slot costs with its argpartition (method.md section 4); the streaming engine holds neither
(its formula and design: :mod:`goracs.select.cost_blocks`). :func:`choose_engine` takes the
dense one when it fits the budget.
"""

from __future__ import annotations

import os
import re

from goracs.errors import GoracsError

ENGINES = ("auto", "dense", "streaming")
# Share of the memory available now that the default budget allows.
DEFAULT_SHARE = 0.7
_UNITS = {"": 1, "B": 1, "K": 2**10, "KB": 2**10, "M": 2**20, "MB": 2**20, "G": 2**30,
          "GB": 2**30, "T": 2**40, "TB": 2**40}


def parse_memory(value: int | float | str) -> int:
    """Bytes from an integer or a text such as ``"6GB"``, ``"512MB"``, ``"2.5G"`` (binary
    units); a one-line :class:`GoracsError` for anything else."""
    if isinstance(value, bool):
        raise GoracsError(f"max-memory must be a size such as 6GB, got {value!r}")
    if isinstance(value, (int, float)):
        if value > 0:
            return int(value)
        raise GoracsError(f"max-memory must be > 0, got {value!r}")
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([KMGT]?B?)\s*", str(value).upper())
    if m is None or float(m.group(1)) <= 0:
        raise GoracsError(f"max-memory must be a size such as 6GB or 512MB, got {value!r}")
    return int(float(m.group(1)) * _UNITS[m.group(2)])


def available_bytes() -> int:
    """Memory available now: MemAvailable from /proc/meminfo, else free physical pages."""
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return 8 * 2**30


def default_budget() -> int:
    """The budget when none is given: :data:`DEFAULT_SHARE` of the memory available now."""
    return int(DEFAULT_SHARE * available_bytes())


def dense_bytes(n_train: int, n_valid: int, budget: int, block_rows: int = 2048) -> int:
    """Peak bytes of the dense engine beside its inputs: the cost matrix, the medoid rounds'
    N x n slot costs (float32) and their argpartition (int64), one block's temporaries and
    the exact transport of the coreset."""
    block_rows = min(block_rows, n_train)
    return (4 * n_train * n_valid + 12 * n_train * budget + 8 * block_rows * n_valid
            + 40 * budget * n_valid)


def streaming_bytes(n_train: int, n_valid: int, budget: int, candidates: int = 30,
                    block_rows: int = 2048) -> int:
    """Peak bytes of the streaming engine beside its inputs (:mod:`.cost_blocks`)."""
    cache_rows = min(2048, max(64, n_train // 16))
    block_rows = min(block_rows, n_train)
    return (8 * block_rows * n_valid + 4 * n_valid * (2 * budget + candidates + 2 + cache_rows)
            + 40 * budget * n_valid + 4 * block_rows * budget + 200 * n_train)


def gb(n_bytes: int) -> str:
    """Bytes in GB, or MB below 1 GB, with one decimal (binary units), for messages."""
    if n_bytes < 2**30:
        return f"{n_bytes / 2**20:.1f} MB"
    return f"{n_bytes / 2**30:.1f} GB"


def choose_engine(engine: str, problems: list[tuple[int, int, int]], max_memory: int | None,
                  candidates: int = 30) -> tuple[str, str, dict[str, int]]:
    """The engine for subproblems ``(N, V, n)``: ``engine`` unless "auto", else dense when
    the largest dense need fits ``max_memory`` (None: :func:`default_budget`).

    Returns the engine, a one-line reason and the figures behind it; an engine that cannot
    fit is refused with one line.
    """
    budget = default_budget() if max_memory is None else max_memory
    dense = max(dense_bytes(*p) for p in problems)
    stream = max(streaming_bytes(*p, candidates=candidates) for p in problems)
    figures = {"memory_budget": budget, "dense_bytes": dense, "streaming_bytes": stream}
    if engine == "dense":
        if dense > budget:
            raise GoracsError(f"the dense engine needs about {gb(dense)}, over the memory budget "
                              f"of {gb(budget)}; use engine streaming or raise --max-memory")
        return "dense", f"asked for; needs about {gb(dense)} of {gb(budget)}", figures
    if engine == "streaming":
        return "streaming", f"asked for; needs about {gb(stream)}", figures
    if dense <= budget:
        return "dense", f"cost matrix fits: about {gb(dense)} of {gb(budget)}", figures
    if stream > budget:
        raise GoracsError(f"selection needs about {gb(stream)} even streaming (dense: "
                          f"{gb(dense)}), over the memory budget of {gb(budget)}")
    return "streaming", (f"dense would need about {gb(dense)}, over the budget of "
                         f"{gb(budget)}; streaming needs about {gb(stream)}"), figures
