"""CLI commands of the selection package: ``goracs methods``."""

from __future__ import annotations

import argparse

from goracs.select import available_methods


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("methods", help="list the registered selection methods")
    p.set_defaults(func=cmd_methods)


def cmd_methods(args: argparse.Namespace) -> int:
    for name, doc in available_methods().items():
        print(f"{name:16s} {doc}")
    return 0
