"""The ``goracs`` command: a thin shell over the library.

Each command family lives in its own module exposing ``add_commands(subparsers)``; every
command function returns an exit code. :class:`GoracsError` becomes a one-line message on
stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import NoReturn

from goracs.errors import GoracsError

# Modules that contribute sub-commands, in the order they appear in --help.
COMMAND_MODULES = [
    "goracs.select.commands",
    "goracs.data.commands",
    "goracs.features.commands",
    "goracs.train.commands",
    "goracs.evaluate.commands",
    "goracs.evaluate.compare_commands",
    "goracs.experiment.commands",
]


class OneLineParser(argparse.ArgumentParser):
    """An argument parser whose errors are one line naming the command, the flag and the
    fault, with ``--help`` for the rest (instead of argparse's usage block). Sub-command
    parsers inherit the class, so every ``goracs`` command answers the same way."""

    def error(self, message: str) -> NoReturn:
        text = message
        if text.startswith("argument "):
            # "argument --budget: invalid int value: 'x'" -> "--budget: invalid int value: 'x'"
            text = text[len("argument "):]
        self.exit(2, f"{self.prog}: {text} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="goracs",
        description="Coreset selection for fine-tuning LLM-based recommenders (GORACS).",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for mod in COMMAND_MODULES:
        importlib.import_module(mod).add_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except GoracsError as exc:
        print(f"goracs: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("goracs: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into a reader that stopped early (e.g. `head`)
        sys.stderr.close()
        return 0


if __name__ == "__main__":
    sys.exit(main())
