"""The ``--threads`` option shared by the commands that run a model."""

from __future__ import annotations

import argparse

from goracs.checks import arg_int
from goracs.errors import GoracsError

HELP = ("CPU threads for torch (default: torch's own choice; on a machine other jobs share, "
        "1 avoids the stalls of oversubscribed threads)")


def add_threads_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--threads", type=arg_int(1), metavar="N", help=HELP)


def apply_threads(n: int | None, *, dry_run: bool = False) -> None:
    """Check ``n`` and, unless ``dry_run``, give torch that many intra-op threads (``None``
    leaves torch's choice)."""
    if n is None:
        return
    if n < 1:
        raise GoracsError(f"--threads must be at least 1, got {n}")
    if not dry_run:
        import torch

        torch.set_num_threads(n)
