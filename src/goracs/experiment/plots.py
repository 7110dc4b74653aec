"""PNG plots of an experiment (matplotlib's Agg canvas, no display, no global backend change),
drawn from its loaded records (:mod:`goracs.experiment.rows`) and table rows.

Per (dataset, task): ``plots/DATASET-TASK-metrics.png`` (each table metric against budget, or
per method when there is one budget), ``-poo.png`` (POO after greedy initialisation, each
medoid round and each accepted swap, from ``selection.json``'s trace) and ``-projection.png``
(a 2-D PCA of the pool, the validation set and each method's coreset at one budget and seed)
and ``-vs-random.png`` (every row's paired difference from random per metric, with both
intervals of :mod:`goracs.experiment.paired`).
The files carry no software version or date, so the same inputs give the same bytes.
"""

from __future__ import annotations

import io
import math
import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from goracs.experiment.config import FULL_DATA, ZERO_SHOT, ExperimentConfig
from goracs.experiment.paired import row_label
from goracs.experiment.rows import GroupRecords, Records
from goracs.experiment.table_rows import TableRow

PLOTS_DIR = "plots"


def _figure(width: float, height: float) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def save_png(fig: Any, path: Path) -> None:
    """Render ``fig`` to PNG and write it atomically (temporary file, then rename)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(buf.getvalue())
        mask = os.umask(0)
        os.umask(mask)
        os.chmod(tmp, 0o666 & ~mask)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def pca_2d(pool: np.ndarray, seed: int, max_points: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean and the two leading principal axes of ``pool``, from numpy's SVD.

    Pools larger than ``max_points`` are fitted on a seeded subsample. Each axis's sign is
    fixed so that its largest-magnitude loading is positive, which makes the projection
    independent of the SVD routine's sign choice.

    Returns
    -------
    mean : (d,) array
    axes : (2, d) array (fewer rows if the data have fewer dimensions)
    """
    x = np.asarray(pool, dtype=np.float64)
    if x.shape[0] > max_points:
        rows = np.sort(np.random.default_rng(seed).choice(x.shape[0], max_points,
                                                          replace=False))
        x = x[rows]
    mean = x.mean(axis=0)
    _, _, vt = np.linalg.svd(x - mean, full_matrices=False)
    axes = vt[:2].copy()
    for k in range(axes.shape[0]):
        if axes[k, np.argmax(np.abs(axes[k]))] < 0:
            axes[k] = -axes[k]
    return mean, axes


def plot_metrics(cfg: ExperimentConfig, g: GroupRecords, trows: Sequence[TableRow],
                 path: Path) -> bool:
    """Each table metric of the task against budget, one line per method (one point per
    method when there is a single budget), error bars one standard deviation; the zero-shot
    and full-data rows as horizontal lines. Returns False when nothing finished yet."""
    tc = cfg.tasks[g.task]
    these = [t for t in trows if t.dataset == g.dataset and t.task == g.task]
    if not any(c.mean is not None for t in these for c in t.cells.values()):
        return False
    metrics = list(tc.metrics)
    fig = _figure(max(4.5, 4.2 * len(metrics)), 4.2 if len(tc.budgets) > 1 else 4.8)
    axes = fig.subplots(1, len(metrics), squeeze=False)[0]
    methods = [m for m in cfg.methods]
    for ax, metric in zip(axes, metrics, strict=True):
        if len(tc.budgets) == 1:
            xs, ys, es = [], [], []
            for i, m in enumerate(methods):
                t = next((t for t in these if t.method == m), None)
                c = None if t is None else t.cells.get(metric)
                if c is not None and c.mean is not None:
                    xs.append(i)
                    ys.append(c.mean)
                    es.append(c.std or 0.0)
            ax.errorbar(xs, ys, yerr=es, fmt="o", capsize=3, color="tab:blue")
            ax.set_xticks(range(len(methods)))
            ax.set_xticklabels(methods, rotation=60, ha="right", fontsize=8)
            ax.set_title(f"{metric} (budget {tc.budgets[0]})", fontsize=10)
        else:
            for m in methods:
                pts = [(t.budget, t.cells[metric]) for t in these
                       if t.method == m and t.budget is not None
                       and t.cells.get(metric) is not None and t.cells[metric].mean is not None]
                if not pts:
                    continue
                pts.sort(key=lambda p: p[0])
                ax.errorbar([p[0] for p in pts], [p[1].mean for p in pts],
                            yerr=[p[1].std or 0.0 for p in pts], marker="o", capsize=3,
                            label=m)
            ax.set_xscale("log", base=2)
            ax.set_xticks(list(tc.budgets))
            ax.set_xticklabels([str(b) for b in tc.budgets])
            ax.minorticks_off()
            ax.set_xlabel("budget (samples)")
            ax.set_title(metric, fontsize=10)
        for method, style in ((ZERO_SHOT, "--"), (FULL_DATA, ":")):
            t = next((t for t in these if t.method == method), None)
            c = None if t is None else t.cells.get(metric)
            if c is not None and c.mean is not None:
                ax.axhline(c.mean, linestyle=style, color="0.4", label=method)
        ax.grid(alpha=0.3)
        if ax is axes[0]:
            ax.legend(fontsize=7)
    fig.suptitle(f"{cfg.name}: {g.dataset} {g.task}", fontsize=11)
    fig.tight_layout()
    save_png(fig, path)
    return True


def plot_poo(cfg: ExperimentConfig, g: GroupRecords, path: Path) -> bool:
    """POO over the refinement steps of every selection whose trace has more than one point
    (GORACS and its refined ablations). Returns False when there is none."""
    traces = []
    for row in g.rows:
        sel = row.selection
        if sel is not None and len(sel.trace) > 1:
            traces.append((f"{row.method} b={sel.budget} seed={row.seed}", sel.trace))
    if not traces:
        return False
    fig = _figure(6.4, 4.4)
    ax = fig.subplots()
    for label, trace in traces:
        ax.plot(range(len(trace)), trace, marker=".", markersize=3, label=label)
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("refinement step (0: greedy initialisation; medoid rounds, then swaps)")
    ax.set_ylabel("POO (OT cost to the validation set)")
    ax.set_title(f"{cfg.name}: {g.dataset} {g.task}, POO descent", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    save_png(fig, path)
    return True


def plot_projection(cfg: ExperimentConfig, g: GroupRecords, path: Path) -> bool:
    """The pool, the validation set and each method's coreset in the pool's first two
    principal components, at the smallest budget and the first seed, one panel per method.
    Returns False when the features or every selection are missing."""
    if g.pool_emb is None or g.valid_emb is None:
        return False
    budget = min(cfg.tasks[g.task].budgets)
    seed = cfg.seeds[0]
    panels = [(row.method, row.selection.indices) for row in g.rows
              if row.selection is not None and row.selection.budget == budget
              and row.seed == seed]
    if not panels:
        return False
    pool = g.pool_emb.astype(np.float64)
    valid = g.valid_emb.astype(np.float64)
    mean, axes = pca_2d(pool, cfg.plot_seed, cfg.projection_points)
    if axes.shape[0] < 2:
        return False
    pz = (pool - mean) @ axes.T
    vz = (valid - mean) @ axes.T
    shown = np.arange(pz.shape[0])
    if pz.shape[0] > cfg.projection_points:
        shown = np.sort(np.random.default_rng(cfg.plot_seed).choice(
            pz.shape[0], cfg.projection_points, replace=False))
    ncols = min(4, len(panels))
    nrows = math.ceil(len(panels) / ncols)
    fig = _figure(3.3 * ncols, 3.1 * nrows + 0.5)
    grid = fig.subplots(nrows, ncols, squeeze=False, sharex=True, sharey=True)
    for k, ax in enumerate(grid.ravel()):
        if k >= len(panels):
            ax.set_axis_off()
            continue
        method, idx = panels[k]
        ax.scatter(pz[shown, 0], pz[shown, 1], s=5, color="0.6", label="pool", linewidths=0)
        ax.scatter(vz[:, 0], vz[:, 1], s=4, color="tab:blue", alpha=0.5, label="validation",
                   linewidths=0)
        ax.scatter(pz[idx, 0], pz[idx, 1], s=16, color="tab:red", marker="x",
                   label="coreset", linewidths=1)
        ax.set_title(method, fontsize=9)
        ax.tick_params(labelsize=7)
        if k == 0:
            ax.legend(fontsize=6, loc="best")
    fig.suptitle(f"{cfg.name}: {g.dataset} {g.task}, PCA of the embeddings "
                 f"(budget {budget}, seed {seed})", fontsize=10)
    fig.tight_layout()
    save_png(fig, path)
    return True


def _axis_limit(extents: Sequence[float]) -> float:
    """Half-width of a panel centred on zero: the widest row's reach, unless a row reaches
    more than five times the median row, which is then drawn to the edge and labelled; 1.0
    when no row reaches past zero, so the panel never collapses to a point."""
    ext = sorted(e for e in extents if math.isfinite(e)) or [1.0]
    cap = 5.0 * max(ext[len(ext) // 2], 1e-12)
    inside = [e for e in ext if e <= cap]
    lim = max(inside) if inside else cap
    return lim if lim > 0 else 1.0


def plot_vs_random(cfg: ExperimentConfig, g: GroupRecords,
                   comps: Mapping[tuple[str, str, str, int | None], Mapping[str, Any]],
                   path: Path) -> bool:
    """Each row's difference from random on the same test users, one panel per metric: the
    point is the difference in mean metric, the thick bar its interval over users (seeds
    pooled), the thin bar the interval with the seeds redrawn; green where the row beats
    random, red where it loses, grey where it ties. Returns False without comparisons."""
    from goracs.evaluate.verdict import lower_is_better

    rows = [(row_label(method, budget), per_metric)
            for (dataset, task, method, budget), per_metric in comps.items()
            if dataset == g.dataset and task == g.task]
    metrics = [m for m in cfg.tasks[g.task].metrics if any(m in pm for _, pm in rows)]
    if not rows or not metrics:
        return False
    colour = {"better": "tab:green", "worse": "tab:red", "tie": "0.45"}
    fig = _figure(max(4.5, 4.2 * len(metrics)), 1.2 + 0.45 * len(rows))
    axes = fig.subplots(1, len(metrics), squeeze=False, sharey=True)[0]
    ys = list(range(len(rows)))[::-1]  # the first row on top
    for ax, metric in zip(axes, metrics, strict=True):
        here = [(y, pm[metric]) for y, (_, pm) in zip(ys, rows, strict=True) if metric in pm]
        lim = _axis_limit([max(abs(c.seeds.lo), abs(c.seeds.hi)) for _, c in here])
        for y, c in here:
            col = colour[c.verdict(metric)]
            ax.plot(np.clip([c.seeds.lo, c.seeds.hi], -lim, lim), [y, y], color=col,
                    linewidth=1, alpha=0.6)
            ax.plot(np.clip([c.users.lo, c.users.hi], -lim, lim), [y, y], color=col,
                    linewidth=4, solid_capstyle="butt")
            if abs(c.users.diff) <= lim:
                ax.plot([c.users.diff], [y], "o", color="black", markersize=4)
            else:  # off the scale of the others: its value at the edge
                edge = math.copysign(lim, c.users.diff)
                ax.plot([edge], [y], ">" if edge > 0 else "<", color=col, markersize=8)
                ax.annotate(f"{c.users.diff:+.2f}", (edge, y), xytext=(0, 5),
                            textcoords="offset points", ha="right" if edge > 0 else "left",
                            fontsize=7)
        ax.set_xlim(-1.05 * lim, 1.05 * lim)
        ax.axvline(0.0, color="0.2", linewidth=0.8)
        arrow = "<- better" if lower_is_better(metric) else "better ->"
        ax.set_title(f"{metric}: row - random ({arrow})", fontsize=9)
        ax.set_yticks(ys)
        ax.set_yticklabels([name for name, _ in rows], fontsize=8)
        ax.grid(alpha=0.3, axis="x")
    fig.suptitle(f"{cfg.name}: {g.dataset} {g.task} against random on the same test users "
                 "(thick: users resampled, thin: seeds redrawn too)", fontsize=9)
    fig.tight_layout()
    save_png(fig, path)
    return True


def write_plots(cfg: ExperimentConfig, out: Path, records: Records,
                trows: Sequence[TableRow]) -> list[Path]:
    """Write every plot that has data; returns the files written."""
    written = []
    for g in records.groups:
        base = out / PLOTS_DIR / f"{g.dataset}-{g.task}"
        for suffix, make in (("metrics", lambda p, g=g: plot_metrics(cfg, g, trows, p)),
                             ("poo", lambda p, g=g: plot_poo(cfg, g, p)),
                             ("projection", lambda p, g=g: plot_projection(cfg, g, p)),
                             ("vs-random", lambda p, g=g: plot_vs_random(cfg, g, records.comps,
                                                                         p))):
            path = base.with_name(f"{base.name}-{suffix}.png")
            if make(path):
                written.append(path)
    return written
