"""Running an experiment: every unit of the plan that is not complete yet, then the reports.

For each (dataset, task) the data are prepared once and the features computed once; then
every run goes select -> fine-tune -> evaluate, each stage skipped when its manifest already
exists. A run that cannot be made (a selector's input is missing) is reported as skipped; a
run that fails is reported as failed; neither stops the others. The reports are rebuilt from
the per-run records at the end of every invocation, interrupted or not.

Several invocations of the same experiment may run at once (one per core, say): each claims a
unit before computing it (:mod:`goracs.experiment.claims`), skips the runs another process
holds and waits for data or features another process is computing. Runs are taken seed by
seed (every method's first seed, then every method's second, ...), so the runs finished
first cover every method.
"""

from __future__ import annotations

import fnmatch
import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from goracs.data.prepare import TASKS
from goracs.errors import GoracsError
from goracs.experiment import stages
from goracs.experiment.claims import CLAIMS_DIR, Claimed, claim
from goracs.experiment.config import ExperimentConfig
from goracs.experiment.plan import (
    MARKERS,
    RUN_RECORD,
    STAGES,
    Group,
    Run,
    build_plan,
    features_done,
    run_units,
    selected,
    unit_done,
)
from goracs.experiment.plots import PLOTS_DIR
from goracs.experiment.report import write_reports
from goracs.experiment.rows import Outcome
from goracs.io import atomic_write_text


def run_done(run: Run) -> bool:
    """Every stage's manifest and the run record exist."""
    return all(unit_done(s, d) for s, d in run_units(run)) and \
        (run.eval_dir / RUN_RECORD).is_file()


def execution_order(runs: Sequence[Run]) -> list[Run]:
    """Seed by seed: the rows without a seed (zero-shot) first, then every method's first
    seed in plan order, then every method's second, and so on."""
    index = {id(r): i for i, r in enumerate(runs)}
    rank: dict[int, int] = {}
    seen: dict[tuple[str, int | None], int] = {}
    for r in runs:
        k = (r.method, r.budget)
        rank[id(r)] = seen.get(k, 0)
        seen[k] = rank[id(r)] + 1
    return sorted(runs, key=lambda r: (r.seed is not None, rank[id(r)], index[id(r)]))


def default_out(cfg: ExperimentConfig) -> Path:
    return Path("runs") / f"experiment-{cfg.name}"


#: What an experiment writes at the top of its folder, besides one ``DATASET-TASK/`` folder
#: per group.
EXPERIMENT_ENTRIES = frozenset({"config.toml", "results.csv", "table.csv", "table.md",
                                PLOTS_DIR, CLAIMS_DIR})


def check_experiment_out(out: str | Path, flag: str = "--out") -> None:
    """Refuse, with one line, a folder an experiment must not write into.

    An experiment folder is a store of units keyed by content, which a rerun resumes (and a
    changed config extends: other settings land in other keyed folders). So the folder must
    be new, empty or an experiment's: its ``config.toml`` a config goracs can read, and every
    other top-level entry one an experiment writes. It must not be a file, and it must be
    creatable and writable.
    """
    from goracs.experiment.config import parse_config
    from goracs.io import loads_toml, read_text
    from goracs.outputs import check_place, is_leftover

    p = Path(out)
    label = f"{flag} {out}"

    def fail(why: str) -> GoracsError:
        return GoracsError(f"{label}: {why}")

    check_place(p, fail, beside=False)
    if not p.is_dir():
        return
    entries = sorted(os.listdir(p))
    if not entries:
        return
    if "config.toml" not in entries:
        raise fail(f"is not empty and is not an experiment folder (no config.toml; holds "
                   f"{entries[0]}); choose a new or empty folder")
    try:
        parse_config(loads_toml(read_text(p / "config.toml"), str(p / "config.toml")), "x")
    except GoracsError as exc:
        raise fail(f"its config.toml is not an experiment config ({exc}); choose another "
                   "folder") from None
    groups = tuple(f"*-{t}" for t in TASKS)
    for name in entries:
        entry = p / name
        if name in EXPERIMENT_ENTRIES or is_leftover(name) or (
                entry.is_dir() and not entry.is_symlink()
                and any(fnmatch.fnmatchcase(name, g) for g in groups)):
            continue
        raise fail(f"holds {name}, which an experiment does not write; remove it or choose "
                   "another folder")


@dataclass
class Summary:
    """What an invocation did: the outcome of every run it reached, and the Markdown table."""

    outcomes: dict[Path, Outcome] = field(default_factory=dict)
    table: str = ""
    seconds: float = 0.0

    def count(self, status: str) -> int:
        return sum(1 for o in self.outcomes.values() if o.status == status)


class Logger:
    """One line per stage on a stream: what, for which run, cached or computed, seconds."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream if stream is not None else sys.stderr

    def stage(self, stage: str, what: str, status: str, seconds: float | None = None,
              note: str = "") -> None:
        text = f"{stage:<9s}{what:<44s} {status}"
        if seconds is not None:
            text += f" {seconds:8.1f} s"
        if note:
            text += f"  ({note})"
        print(text, file=self.stream, flush=True)

    def note(self, text: str) -> None:
        print(text, file=self.stream, flush=True)


def plan_lines(groups: Sequence[Group], cfg: ExperimentConfig,
               filters: Mapping[str, set[str]]) -> list[str]:
    """The ``--dry-run`` listing: every unit of the selected runs and whether it is cached."""
    lines = []
    n_cached = n_todo = 0

    def line(stage: str, what: str, done: bool, path: Path) -> None:
        nonlocal n_cached, n_todo
        n_cached += done
        n_todo += not done
        lines.append(f"{stage:<9s}{what:<44s} {'cached' if done else 'to compute':<11s} {path}")

    for g in groups:
        runs = [r for r in g.runs if selected(r, filters)]
        if not runs:
            continue
        what = f"{g.dataset} {g.task}"
        line("prepare", what, unit_done("prepare", g.data_dir), g.data_dir)
        if any(r.select_dir is not None for r in runs):
            line("features", what, features_done(g.data_dir, cfg.tasks[g.task].features),
                 g.data_dir / "features")
        for r in runs:
            for stage, folder in run_units(r):
                line(stage, r.label, unit_done(stage, folder), folder)
    lines.append(f"{n_cached + n_todo} units: {n_cached} cached, {n_todo} to compute")
    return lines


class _GroupData:
    """The prepared folder and features of one group, made on first need; a failure is kept
    and re-raised for every run that needs them."""

    def __init__(self, runner: ExperimentRunner, g: Group) -> None:
        self.r = runner
        self.g = g
        self.tc = runner.cfg.tasks[g.task]
        self.error: Exception | None = None
        self._prepared = unit_done("prepare", g.data_dir)
        self._features = False
        self._sel: Any = None
        self._records: list[dict[str, Any]] | None = None

    def _guard(self, what: str, fn: Callable[[], None]) -> None:
        if self.error is not None:
            raise GoracsError(f"{what} of {self.g.dataset} {self.g.task} failed: {self.error}")
        try:
            fn()
        except Exception as exc:  # kept, so every run that needs this reports it
            self.error = exc
            msg = str(exc) if isinstance(exc, GoracsError) else f"{type(exc).__name__}: {exc}"
            self.r.log.stage(what, f"{self.g.dataset} {self.g.task}", "failed", note=msg)
            raise GoracsError(f"{what} of {self.g.dataset} {self.g.task} failed: {msg}") \
                from None

    def prepared(self) -> None:
        if self._prepared:
            return

        def go() -> None:
            secs = stages.prepare_data(self.g.dataset, self.r.cfg.sources[self.g.dataset],
                                       self.tc, self.g.data_dir, self.r.tables)
            self.r.log.stage("prepare", f"{self.g.dataset} {self.g.task}", "computed", secs)
            self._prepared = True

        self._exclusive("prepare", lambda: unit_done("prepare", self.g.data_dir),
                        lambda: self._guard("prepare", go))
        self._prepared = True

    def _exclusive(self, what: str, done: Callable[[], bool], work: Callable[[], None]) -> None:
        """Run ``work`` under the group's claim on ``what``; while another process holds it,
        wait for that process to finish the unit (or to die, and then take it over)."""
        name = f"{self.g.dataset}-{self.g.task}-{what}"
        waited = False
        while not done():
            try:
                with claim(self.r.out, name):
                    if not done():
                        work()
                return
            except Claimed as exc:
                if not waited:
                    self.r.log.stage(what, f"{self.g.dataset} {self.g.task}",
                                     f"waiting for {exc.holder}")
                    waited = True
                time.sleep(self.r.poll_seconds)

    def features(self) -> None:
        self.prepared()
        if self._features:
            return

        def go() -> None:
            self.r.quiet_hub()
            secs = stages.compute_features(self.g.data_dir, self.tc, self.r.progress,
                                           lambda m: None)
            self.r.log.stage("features", f"{self.g.dataset} {self.g.task}", "computed", secs)
            self._features = True

        if features_done(self.g.data_dir, self.tc.features):
            self._features = True
            return
        self._exclusive("features", lambda: features_done(self.g.data_dir, self.tc.features),
                        lambda: self._guard("features", go))
        self._features = True

    def selection_input(self) -> tuple[Any, list[dict[str, Any]]]:
        from goracs.records import load_records

        self.features()
        if self._sel is None:
            self._sel = stages.load_selection_data(self.g.data_dir)
            self._records = load_records(self.g.data_dir / "train.json")
        assert self._records is not None
        return self._sel, self._records


class ExperimentRunner:
    """Runs the plan of a config into an output folder (see the module docstring)."""

    def __init__(self, cfg: ExperimentConfig, out: str | Path, *,
                 filters: Mapping[str, set[str]] | None = None, progress: bool = False,
                 log: Logger | None = None, command: str = "", until: str = "evaluate") -> None:
        if until not in STAGES[1:]:
            raise GoracsError(f"--until: must be one of {', '.join(STAGES[1:])}, got {until!r}")
        self.until = until
        self.poll_seconds = 15.0
        self.cfg = cfg
        self.out = Path(out)
        self.filters = dict(filters or {})
        self.progress = progress
        self.log = log or Logger()
        self.command = command or f"goracs experiment {cfg.source or cfg.name}"
        self.groups = build_plan(cfg, self.out)
        self.tables: dict[str, Any] = {}
        self._commit: str | None | bool = False

    @property
    def commit(self) -> str | None:
        if self._commit is False:
            self._commit = stages.git_commit()
        return self._commit  # type: ignore[return-value]

    def quiet_hub(self) -> None:
        """Without progress bars, silence transformers' own weight-loading bars too."""
        if not self.progress:
            from transformers.utils import logging as hf_logging

            hf_logging.disable_progress_bar()

    def dry_run(self) -> list[str]:
        return plan_lines(self.groups, self.cfg, self.filters)

    def run(self) -> Summary:
        """Compute what is missing, then write the reports; returns the summary."""
        t0 = time.perf_counter()
        if self.out.exists() and not self.out.is_dir():
            raise GoracsError(f"--out {self.out} exists and is not a folder")
        self.out.mkdir(parents=True, exist_ok=True)
        if self.cfg.text:
            atomic_write_text(self.out / "config.toml", self.cfg.text)
        summary = Summary()
        try:
            for g in self.groups:
                runs = [r for r in g.runs if selected(r, self.filters)]
                if runs:
                    self._run_group(g, runs, summary)
        finally:
            # interrupted or not, the tables show everything complete so far
            rows, md = write_reports(self.cfg, self.out, self.groups, summary.outcomes,
                                     self.command)
            summary.table = md
            summary.seconds = time.perf_counter() - t0
        return summary

    def _run_group(self, g: Group, runs: list[Run], summary: Summary) -> None:
        data = _GroupData(self, g)
        what = f"{g.dataset} {g.task}"
        if unit_done("prepare", g.data_dir):
            self.log.stage("prepare", what, "cached")
        needs_features = any(r.select_dir is not None and not unit_done("select", r.select_dir)
                             for r in runs)
        ordered = execution_order(runs)
        if self.until != "features" and needs_features:
            # the runs without a selection (zero-shot, full data) need no features: take them
            # first, so that a second process is not idle while another computes the features
            for run in [r for r in ordered if r.select_dir is None]:
                summary.outcomes[run.eval_dir] = self._claimed_run(run, data)
            ordered = [r for r in ordered if r.select_dir is not None]
        if features_done(g.data_dir, data.tc.features):
            self.log.stage("features", what, "cached")
        elif needs_features:
            try:
                data.features()
            except GoracsError:
                pass  # logged; each run that needs the features reports it
        if self.until == "features":
            if not features_done(g.data_dir, data.tc.features):
                data.features()
            return
        for run in ordered:
            summary.outcomes[run.eval_dir] = self._claimed_run(run, data)

    def _claimed_run(self, run: Run, data: _GroupData) -> Outcome:
        """:meth:`_run_one` under the run's claim; a run another process holds is left to it."""
        if run_done(run):
            return self._run_one(run, data)
        try:
            with claim(self.out, f"{run.dataset}-{run.task}-{run.eval_dir.name}"):
                return self._run_one(run, data)
        except Claimed as exc:
            self.log.stage("run", run.label, f"left to {exc.holder}")
            return Outcome("pending", f"running in {exc.holder}")

    def _run_one(self, run: Run, data: _GroupData) -> Outcome:
        tc = self.cfg.tasks[run.task]
        computed = False
        stage = "select"
        try:
            for stage, folder in run_units(run):
                if STAGES.index(stage) > STAGES.index(self.until) and not run_done(run):
                    return Outcome("skipped", f"stopped after {self.until} (--until)")
                if unit_done(stage, folder):
                    self.log.stage(stage, run.label, "cached")
                    continue
                if stage == "select":
                    sel, records = data.selection_input()
                    secs = stages.select(run, tc.params[run.method], sel, records,
                                         method=self.cfg.base_method(run.method),
                                         embedding=self.cfg.embedding(run.method))
                elif stage == "finetune":
                    data.prepared()
                    self.quiet_hub()
                    secs = stages.finetune(run, self.cfg, tc, self.progress)
                else:
                    data.prepared()
                    self.quiet_hub()
                    secs = stages.evaluate(run, self.cfg, tc, self.progress)
                computed = True
                note = ""
                if stage == "evaluate":
                    note = _metric_note(folder / MARKERS["evaluate"], tc.metrics)
                self.log.stage(stage, run.label, "computed", secs, note)
            if computed or not (run.eval_dir / RUN_RECORD).is_file():
                stages.write_run_record(run, self.out, self.commit)
            return Outcome("done")
        except stages.Skipped as exc:
            self.log.stage(stage, run.label, "skipped", note=str(exc))
            return Outcome("skipped", str(exc))
        except GoracsError as exc:
            self.log.stage(stage, run.label, "failed", note=str(exc))
            return Outcome("failed", f"{stage}: {exc}")
        except Exception as exc:  # a bug or resource error in one run must not end the others
            msg = f"{type(exc).__name__}: {exc}"
            self.log.stage(stage, run.label, "failed", note=msg)
            return Outcome("failed", f"{stage}: {msg}")


def _metric_note(path: Path, metrics: Sequence[str]) -> str:
    from goracs.experiment.stages import flatten_metrics
    from goracs.io import read_json

    flat = flatten_metrics(read_json(path).get("metrics") or {})
    return ", ".join(f"{m} {flat[m]:.4f}" for m in metrics if flat.get(m) is not None)
