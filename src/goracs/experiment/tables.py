"""The tables of an experiment, rendered from its loaded records (:mod:`goracs.experiment.rows`).

``results.csv`` has one row per planned run (its status, every table metric, its difference
from random per metric, seconds per stage, the coreset's figures) and one per reference rule;
``table.csv`` and ``table.md`` one row per (dataset, task, method, budget) with the mean and
sample standard deviation (ddof 1) over the seeds that finished, ``table.md`` with provenance,
the paired comparisons with random and notes. Everything here is a pure function of the
records and the config, so a resumed experiment gets the same files as an uninterrupted one.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Mapping, Sequence
from typing import Any

from goracs.evaluate.verdict import lower_is_better
from goracs.experiment.config import FULL_DATA, ZERO_SHOT, ExperimentConfig
from goracs.experiment.paired import comparisons_summary
from goracs.experiment.rows import CORESET_STATS, STAGE_SECONDS, GroupRecords, Records, Row
from goracs.experiment.table_rows import Cell, TableRow

STAT_HEADS = {"ot_to_valid": "OT to valid", "grad_norm_ratio": "grad ratio",
              "positive_rate": "Yes share"}


def table_metrics(cfg: ExperimentConfig) -> list[str]:
    """The union of the tasks' table metrics, in config order."""
    out: list[str] = []
    for tc in cfg.tasks.values():
        out += [m for m in tc.metrics if m not in out]
    return out


def _num(x: float | None, digits: int = 6) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return ""
    return f"{x:.{digits}f}"


def _csv(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    w.writerows(rows)
    return buf.getvalue()


def results_csv(rows: Sequence[Row], metrics: Sequence[str],
                comps: Mapping[tuple[str, str, str, int | None], Mapping[str, Any]] | None = None,
                refs: Mapping[tuple[str, str], Mapping[str, Any]] | None = None) -> str:
    """One line per planned run (and per reference rule, status ``reference``); with
    ``comps``, each line also carries its row's paired difference from random per metric
    (the same on every seed of a method: it compares the methods' seed-pooled means)."""
    comps = comps or {}
    vs = [f"{m} vs random{suffix}" for m in metrics for suffix in ("", " lo", " hi")]
    header = (["dataset", "task", "method", "budget", "seed", "status"] + list(metrics)
              + vs + [f"{s}_seconds" for s in STAGE_SECONDS] + ["poo"] + list(CORESET_STATS)
              + ["coreset_digest", "commit", "message"])

    def vs_cells(key: tuple[str, str, str, int | None]) -> list[str]:
        per = comps.get(key, {})
        out_: list[str] = []
        for m in metrics:
            c = per.get(m)
            out_ += ["", "", ""] if c is None else [_num(c.users.diff), _num(c.users.lo),
                                                    _num(c.users.hi)]
        return out_

    out = []
    for r in rows:
        budget = None if r.method in (ZERO_SHOT, FULL_DATA) else r.budget
        out.append([r.dataset, r.task, r.method, "" if r.budget is None else r.budget,
                    "" if r.seed is None else r.seed, r.status]
                   + [_num(r.metrics.get(m)) for m in metrics]
                   + vs_cells((r.dataset, r.task, r.method, budget))
                   + [_num(r.seconds.get(s), 3) for s in STAGE_SECONDS]
                   + [_num(r.poo, 6)] + [_num(r.stats.get(k), 6) for k in CORESET_STATS]
                   + [r.coreset_digest or "", r.commit or "", r.message])
    for (dataset, task), ref in (refs or {}).items():
        out.append([dataset, task, ref["name"], "", "", "reference"]
                   + [_num(ref["metrics"].get(m)) for m in metrics]
                   + vs_cells((dataset, task, ref["name"], None))
                   + [""] * (len(STAGE_SECONDS) + 1 + len(CORESET_STATS))
                   + ["", "", f"model-free rule on the {len(ref['rows'])} test samples "
                      "the runs scored"])
    return _csv(header, out)


def table_csv(trows: Sequence[TableRow], metrics: Sequence[str]) -> str:
    header = ["dataset", "task", "method", "budget", "seeds"]
    for m in metrics:
        header += [f"{m} mean", f"{m} std"]
    header += [f"{s} mean" for s in CORESET_STATS]
    header += [f"{s}_seconds mean" for s in STAGE_SECONDS] + ["notes"]
    out = []
    for t in trows:
        line: list[Any] = [t.dataset, t.task, t.method, "" if t.budget is None else t.budget,
                           t.n_seeds]
        for m in metrics:
            c = t.cells.get(m)
            line += ["", ""] if c is None else [_num(c.mean), _num(c.std)]
        line += [_num(t.stats[s].mean if s in t.stats else None) for s in CORESET_STATS]
        line += [_num(t.seconds[s].mean, 3) for s in STAGE_SECONDS]
        line.append(" | ".join(t.notes))
        out.append(line)
    return _csv(header, out)


def _best(trows: Sequence[TableRow], metric: str) -> dict[int | None, float]:
    """Per budget, the best mean of ``metric`` among the selection methods."""
    best: dict[int | None, float] = {}
    low = lower_is_better(metric)
    for t in trows:
        if t.method in (ZERO_SHOT, FULL_DATA):
            continue
        c = t.cells.get(metric)
        if c is None or c.mean is None:
            continue
        cur = best.get(t.budget)
        if cur is None or (c.mean < cur if low else c.mean > cur):
            best[t.budget] = c.mean
    return best


def _fmt_cell(c: Cell | None, bold: bool) -> str:
    if c is None or c.mean is None:
        return ""
    text = f"{c.mean:.4f}"
    if bold:
        text = f"**{text}**"
    if c.std is not None:
        text += f" ± {c.std:.4f}"
    return text


def _fmt_vs(c: Any) -> str:
    """A comparison cell: the difference from random and its 95% interval."""
    if c is None:
        return ""
    d = c.users
    return f"{d.diff:+.4f} [{d.lo:+.4f}, {d.hi:+.4f}]"


def _fmt_seconds(total: float) -> str:
    if total < 120:
        return f"{total:.1f} s"
    minutes = total / 60
    if minutes < 120:
        return f"{minutes:.1f} min"
    return f"{int(minutes // 60)} h {minutes % 60:.0f} min"


def stage_totals(records: Records) -> dict[str, float]:
    """Seconds recorded by every stage's manifest, summed (prepare and features per group)."""
    tot = {"prepare": 0.0, "features": 0.0, **{s: 0.0 for s in STAGE_SECONDS}}
    for g in records.groups:
        tot["prepare"] += g.prepare_seconds
        tot["features"] += g.features_seconds
    for r in records.rows:
        if r.status == "done":
            for s in STAGE_SECONDS:
                tot[s] += float(r.seconds.get(s) or 0.0)
    return tot


def _data_line(g: GroupRecords) -> str:
    if g.splits is None:
        return "Data not prepared yet."
    sp = g.splits

    def n(split: str, unit: str = "") -> str:
        c = sp.get(split, {})
        text = f"{c.get('samples', 0):,}{unit}"
        if isinstance(c.get("users"), int) and isinstance(c.get("top5_share"), (int, float)):
            # who the samples come from: power, and what the selection is matched to
            text += f" from {c['users']:,} users (top 5: {c['top5_share']:.1%})"
        return text

    return (f"Training pool {n('train', ' samples')}, validation {n('valid')}, test {n('test')} "
            f"(`{g.data_dir.name}`).")


def table_markdown(cfg: ExperimentConfig, records: Records, trows: Sequence[TableRow],
                   command: str) -> str:
    """The Markdown report: provenance, then one table per (dataset, task), then notes. With
    paired comparisons in ``records`` each metric gets a ``vs random`` column and the
    comparisons are stated one sentence each under the table; a reference rule is a row."""
    comps = records.comps
    refs = records.refs
    rows = records.rows
    counts = {s: sum(1 for r in rows if r.status == s)
              for s in ("done", "skipped", "failed", "pending")}
    commits = sorted({r.commit for r in rows if r.status == "done" and r.commit})
    tot = stage_totals(records)
    lines = [f"# Experiment `{cfg.name}`", ""]
    if cfg.description:
        lines += [cfg.description.strip(), ""]
    src = cfg.source if cfg.source else cfg.name
    lines += [
        f"- config: `{src}`" + (" (shipped with goracs)" if src == cfg.name else ""),
        f"- command: `{command}`",
        f"- commit: {', '.join(f'`{c}`' for c in commits) if commits else 'unknown'}",
        f"- model: `{cfg.model}`, device {cfg.device}; seeds {', '.join(map(str, cfg.seeds))}",
        f"- runs: {counts['done']} done, {counts['skipped']} skipped, {counts['failed']} "
        f"failed, {counts['pending']} not run",
        f"- total stage time: {_fmt_seconds(sum(tot.values()))} (the seconds each stage "
        "recorded, summed; stages that ran side by side in parallel invocations each count: "
        + ", ".join(f"{k} {_fmt_seconds(v)}" for k, v in tot.items()) + ")",
        "",
    ]
    for g in records.groups:
        tc = cfg.tasks[g.task]
        these = [t for t in trows if t.dataset == g.dataset and t.task == g.task]
        best = {m: _best(these, m) for m in tc.metrics}
        tr = tc.train
        loss = "the answer only" if tr.loss == "response" else "the whole text"
        lines += [f"## {g.dataset} {g.task}", "", _data_line(g) + " "
                  f"Fine-tuning: preset `{tc.preset}`, {tr.epochs} epoch"
                  f"{'' if tr.epochs == 1 else 's'}, lr {tr.lr:g}, batch {tr.batch_size}, "
                  f"loss on {loss}"
                  f"{', best epoch by validation loss' if tc.use_valid else ''}. "
                  f"Evaluation: {tc.evaluate.max_test or 'all'} test samples.", ""]
        # the label share only where the pool has binary labels (CTR)
        shown = [s for s in CORESET_STATS
                 if s != "positive_rate" or any(t.stats.get(s, Cell(None, None, 0)).n
                                                for t in these)]
        group_comps = {k: v for k, v in comps.items() if k[0] == g.dataset and k[1] == g.task}
        vs_metrics = [m for m in tc.metrics if any(m in v for v in group_comps.values())]
        head = (["method", "budget", "seeds"] + list(tc.metrics)
                + [f"{m} vs random" for m in vs_metrics] + [STAT_HEADS[s] for s in shown]
                + ["select s", "fine-tune s", "evaluate s", "notes"])
        lines.append("| " + " | ".join(head) + " |")
        lines.append("|" + "|".join(["---"] + ["---:"] * 2
                                     + ["---"] * (len(tc.metrics) + len(vs_metrics))
                                     + ["---:"] * (len(shown) + 3) + ["---"]) + "|")

        def vs_cells(key: tuple[str, str, str, int | None],
                     per_key: Mapping[Any, Mapping[str, Any]] = group_comps,
                     shown_metrics: Sequence[str] = tuple(vs_metrics)) -> list[str]:
            per = per_key.get(key, {})
            return [_fmt_vs(per.get(m)) for m in shown_metrics]

        for t in these:
            cells = []
            for m in tc.metrics:
                c = t.cells.get(m)
                b = best[m].get(t.budget)
                cells.append(_fmt_cell(c, c is not None and c.mean is not None
                                       and b is not None and c.mean == b))
            key_budget = None if t.method in (ZERO_SHOT, FULL_DATA) else t.budget
            cells += vs_cells((t.dataset, t.task, t.method, key_budget))
            stats = [_num(t.stats[s].mean if s in t.stats else None, 3) for s in shown]
            secs = [_num(t.seconds[s].mean, 1) for s in STAGE_SECONDS]
            budget = "all" if t.method == FULL_DATA and t.budget is None else (
                "" if t.budget is None else str(t.budget))
            lines.append("| " + " | ".join([t.method, budget, str(t.n_seeds)] + cells + stats
                                           + secs + ["; ".join(t.notes)]) + " |")
        ref = refs.get((g.dataset, g.task))
        if ref is not None:
            cells = [_num(ref["metrics"].get(m), 4) for m in tc.metrics]
            cells += vs_cells((g.dataset, g.task, ref["name"], None))
            lines.append("| " + " | ".join([f"*{ref['name']}*", "", ""] + cells
                                           + [""] * (len(shown) + 3)
                                           + ["model-free, same test samples"]) + " |")
        if group_comps:
            lines += ["", "Against random on the same test users (difference in mean metric, "
                      "95% interval from a bootstrap over users, seeds pooled):", ""]
            lines += comparisons_summary(group_comps)
        same = sorted({t.method for t in these if t.same_coreset})
        diff = sorted({t.method for t in these if t.same_coreset is False})
        lines.append("")
        if same:
            lines.append(f"Same coreset for every seed (deterministic selection; only the "
                         f"fine-tuning seed differs): {', '.join(same)}.")
        if diff:
            lines.append(f"Coreset drawn anew per seed: {', '.join(diff)}.")
        if same or diff:
            lines.append("")
    lines += [
        "Notes: each cell is the mean ± sample standard deviation (ddof 1) over the seeds that "
        "finished; bold marks the best mean among the selection methods at each budget "
        "(log-loss: lowest; the others: highest). Seconds are means per run: selection is the "
        "selector's own time (features excluded), fine-tuning the training loop (model loading "
        "excluded), evaluation the whole scoring call (model loading included). The zero-shot "
        "row scores the base model without fine-tuning; the full-data row fine-tunes on the "
        "whole training pool. The coreset columns put every method on one scale (means over "
        "seeds): OT to valid is the exact optimal-transport cost between the coreset's and the "
        "validation set's embeddings (uniform weights, Euclidean distance; lower is closer), "
        "grad ratio the coreset's mean gradient norm over the pool's, Yes share the share of "
        "positive labels.",
        "",
    ]
    return "\n".join(lines)
