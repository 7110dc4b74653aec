"""The reports of an experiment, rebuilt from the per-run records every invocation.

The records are loaded once (:func:`goracs.experiment.rows.load_records`), reduced to table
rows (:mod:`goracs.experiment.table_rows`) and rendered: ``results.csv``, ``table.csv`` and
``table.md`` (:mod:`goracs.experiment.tables`), then the plots (:mod:`goracs.experiment.plots`).
Rendering reads no file, so the reports are a pure function of the records and the config and
a resumed experiment gets the same files as an uninterrupted one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from goracs.experiment.config import ExperimentConfig
from goracs.experiment.plan import Group
from goracs.experiment.plots import write_plots
from goracs.experiment.rows import Outcome, Records, Row, load_records
from goracs.experiment.table_rows import aggregate
from goracs.experiment.tables import results_csv, table_csv, table_markdown, table_metrics
from goracs.io import atomic_write_text


def write_reports(cfg: ExperimentConfig, out: Path, groups: Sequence[Group],
                  outcomes: Mapping[Path, Outcome], command: str) -> tuple[list[Row], str]:
    """Load the records of ``groups`` and write ``results.csv``, ``table.csv``, ``table.md``
    and the plots into ``out``; returns the rows and the Markdown text."""
    records = load_records(cfg, groups, outcomes)
    return records.rows, render_reports(cfg, out, records, command)


def render_reports(cfg: ExperimentConfig, out: Path, records: Records, command: str) -> str:
    """Write the tables and plots of loaded ``records`` into ``out``; returns the Markdown
    text."""
    rows = records.rows
    metrics = table_metrics(cfg)
    metrics_of = {t: list(tc.metrics) for t, tc in cfg.tasks.items()}
    trows = aggregate(rows, metrics_of)
    atomic_write_text(out / "results.csv", results_csv(rows, metrics, records.comps,
                                                       records.refs))
    atomic_write_text(out / "table.csv", table_csv(trows, metrics))
    md = table_markdown(cfg, records, trows, command)
    atomic_write_text(out / "table.md", md)
    write_plots(cfg, out, records, trows)
    return md
