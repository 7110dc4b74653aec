#!/usr/bin/env python3
"""Keep an experiment's records apart from its bulky outputs, and put them back.

``export OUT DIR`` copies from an experiment folder what reports and recomputation need and
nothing a machine must re-derive or may not redistribute: the tables and plots, and per run
``selection.json`` (the indices, POO and the pool's digest), ``training.json`` (losses per
epoch), ``metrics.json``, ``predictions.jsonl`` and ``run.json``, and the reference rules'
predictions. No prepared data (MovieLens may not be redistributed), no features, no adapters.

``restore DIR OUT`` copies them back into an experiment folder, never over an existing file,
so that ``goracs experiment`` counts the finished runs as done and computes only the rest (the
data are prepared again, and the features too where a selection is still missing; a restored
selection rebuilds its ``coreset.json`` from the same pool, checked by digest). Adapters are
not records, so a fine-tuning whose evaluation is not among the records is not restored: its
run fine-tunes again rather than find a ``training.json`` without its adapter. This is how a
long experiment continues on another machine.

    python scripts/experiment_records.py export runs/experiment-evidence docs/results/evidence
    python scripts/experiment_records.py restore docs/results/evidence runs/experiment-evidence
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

#: Top-level report files, and per stage folder the files that are records.
TOP = ("results.csv", "table.csv", "table.md", "config.toml")
PER_STAGE = {
    "select": ("selection.json",),
    "finetune": ("training.json",),
    "evaluate": ("metrics.json", "predictions.jsonl", "run.json"),
    "reference": ("metrics.json", "predictions.jsonl"),
}


def evaluated_finetunes(root: Path) -> set[str]:
    """The fine-tuning folders (relative to ``root``) that a finished evaluation names."""
    names = set()
    for rec in root.glob("*/evaluate/*/run.json"):
        path = json.loads(rec.read_text(encoding="utf-8")).get("paths", {}).get("finetune")
        if path:
            names.add(str(Path(path)))
    return names


def record_files(root: Path, restore: bool = False) -> list[Path]:
    """The record files under experiment folder ``root``, relative to it; for a restore, only
    the fine-tunings whose evaluation is a record too (see the module docstring)."""
    evaluated = evaluated_finetunes(root) if restore else set()
    out = [Path(n) for n in TOP if (root / n).is_file()]
    out += sorted(p.relative_to(root) for p in (root / "plots").glob("*.png"))
    for group in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        for stage, names in PER_STAGE.items():
            for run in sorted(p for p in (group / stage).glob("*") if p.is_dir()):
                if stage == "finetune" and not (run / "training.json").is_file():
                    continue  # an unfinished fine-tuning: its checkpoints are not records
                if stage == "finetune" and restore and \
                        str(run.relative_to(root)) not in evaluated:
                    continue  # its adapter is not a record: fine-tune again
                if stage == "evaluate" and not (run / "run.json").is_file():
                    continue
                out += [(run / n).relative_to(root) for n in names if (run / n).is_file()]
    return out


def copy(src_root: Path, dst_root: Path, overwrite: bool) -> tuple[int, int]:
    """Copy the records; returns (copied, kept) where kept are files already there."""
    copied = kept = 0
    for rel in record_files(src_root, restore=not overwrite):
        dst = dst_root / rel
        if dst.exists() and not overwrite:
            kept += 1
            continue
        dst.parent.mkdir(parents=True, exist_ok=True)
        tmp = dst.with_name(dst.name + ".tmp")
        shutil.copyfile(src_root / rel, tmp)
        tmp.replace(dst)
        copied += 1
    return copied, kept


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    e = sub.add_parser("export", help="experiment folder -> records folder (replaces records)")
    e.add_argument("out", type=Path)
    e.add_argument("dir", type=Path)
    r = sub.add_parser("restore", help="records folder -> experiment folder (never overwrites)")
    r.add_argument("dir", type=Path)
    r.add_argument("out", type=Path)
    args = ap.parse_args(argv)
    src = args.out if args.cmd == "export" else args.dir
    dst = args.dir if args.cmd == "export" else args.out
    if not src.is_dir():
        print(f"experiment_records: error: not a folder: {src}", file=sys.stderr)
        return 2
    if dst.exists() and not dst.is_dir():
        print(f"experiment_records: error: exists and is not a folder: {dst}", file=sys.stderr)
        return 2
    copied, kept = copy(src, dst, overwrite=args.cmd == "export")
    print(f"{args.cmd}: {copied} files copied to {dst}"
          + (f", {kept} already there kept" if kept else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
