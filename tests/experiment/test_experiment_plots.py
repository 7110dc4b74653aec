"""Plots: valid PNG files from real selections on a hand-made folder, identical bytes when
redrawn, and a PCA whose axes do not depend on the SVD's sign choice."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from experiment_helpers import config, make_prepared, write_predictions, write_record

from goracs.experiment import stages
from goracs.experiment.plan import build_plan
from goracs.experiment.plots import _axis_limit, pca_2d, write_plots
from goracs.experiment.rows import load_records
from goracs.experiment.table_rows import aggregate

PNG = b"\x89PNG\r\n\x1a\n"


def test_pca_axes_are_orthonormal_signed_and_seeded():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 5)) * np.array([5.0, 2.0, 1.0, 0.5, 0.1])
    mean, axes = pca_2d(x, seed=0, max_points=1000)
    assert np.allclose(axes @ axes.T, np.eye(2))
    assert np.allclose(np.abs(axes[0]), [1, 0, 0, 0, 0], atol=0.1)
    assert all(a[np.argmax(np.abs(a))] > 0 for a in axes)
    # the data mirrored give the same axes: the sign is fixed, not the SVD's
    _, flipped = pca_2d(-x, seed=0, max_points=1000)
    assert np.allclose(flipped, axes)
    # a large pool is fitted on a seeded subsample: same seed, same axes
    a1 = pca_2d(x, seed=3, max_points=100)[1]
    assert np.array_equal(a1, pca_2d(x, seed=3, max_points=100)[1])


def _plots(tmp_path: Path, budgets, predictions: bool = False):
    cfg = config(seeds=[0, 1], task_ctr={"budgets": budgets})
    groups = build_plan(cfg, tmp_path)
    g = groups[0]
    make_prepared(g.data_dir, cfg.tasks["ctr"].features)
    data = stages.load_selection_data(g.data_dir)
    records = json.loads((g.data_dir / "train.json").read_text())
    for k, run in enumerate(g.runs):
        if run.select_dir is not None:
            stages.select(run, cfg.tasks["ctr"].params[run.method], data, records)
        auc = 0.55 + 0.01 * k + (0.05 if run.method == "goracs" else 0.0)
        write_record(run, tmp_path, {"AUC": auc, "log_loss": 0.7 - 0.01 * k},
                     {"select": 1.0, "finetune": 2.0, "evaluate": 3.0},
                     budget=0 if run.budget is None else None)
    if predictions:
        write_predictions(g)
    records = load_records(cfg, groups, {})
    trows = aggregate(records.rows, {"ctr": ["AUC", "log_loss"]})
    return write_plots(cfg, tmp_path, records, trows), (cfg, records, trows)


def test_plots_are_png_files_and_redraw_identically(tmp_path: Path):
    import matplotlib.image as mpimg

    written, args = _plots(tmp_path, [4])
    names = sorted(p.name for p in written)
    assert names == ["ml-1m-ctr-metrics.png", "ml-1m-ctr-poo.png",
                     "ml-1m-ctr-projection.png"]
    for p in written:
        blob = p.read_bytes()
        assert blob.startswith(PNG) and b"IEND" in blob[-16:]
        img = mpimg.imread(p)
        assert img.ndim == 3 and img.shape[0] > 100 and img.shape[1] > 100
        assert img[..., :3].std() > 0  # not a blank canvas
    before = {p: p.read_bytes() for p in written}
    cfg, records, trows = args
    write_plots(cfg, tmp_path, records, trows)
    assert {p: p.read_bytes() for p in written} == before


def test_metric_plot_against_several_budgets(tmp_path: Path):
    written, _ = _plots(tmp_path, [4, 8])
    metrics = next(p for p in written if p.name.endswith("-metrics.png"))
    assert metrics.read_bytes().startswith(PNG)


def test_the_vs_random_plot_comes_with_paired_comparisons(tmp_path: Path):
    written, (_, records, _) = _plots(tmp_path, [4], predictions=True)
    assert records.comps
    vs = [p for p in written if p.name == "ml-1m-ctr-vs-random.png"]
    assert len(vs) == 1 and vs[0].read_bytes().startswith(PNG)


def test_a_far_row_does_not_set_the_scale():
    assert _axis_limit([0.1, 0.12, 0.05, 6.5]) == 0.12  # +6.5 is drawn at the edge, labelled
    assert _axis_limit([0.1, 0.3]) == 0.3
    assert _axis_limit([]) == 1.0
    assert _axis_limit([0.0, 0.0]) == 1.0  # every interval a point: the panel keeps a width
