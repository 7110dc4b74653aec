"""The plan: which units exist, where their outputs go, and when they count as cached."""

from __future__ import annotations

from pathlib import Path

import pytest
from experiment_helpers import config, make_prepared

from goracs.errors import GoracsError
from goracs.experiment.plan import (
    build_plan,
    features_done,
    parse_filters,
    run_units,
    selected,
    unit_done,
)
from goracs.experiment.runner import plan_lines, run_done


def _runs(cfg, out):
    return [r for g in build_plan(cfg, out) for r in g.runs]


def test_plan_lists_every_run_in_table_order(tmp_path: Path):
    runs = _runs(config(full_data=True), tmp_path)
    assert [(r.method, r.budget, r.seed) for r in runs] == [
        ("zero-shot", None, None),
        ("random", 4, 0), ("random", 4, 1), ("random", 4, 2),
        ("goracs", 4, 0), ("goracs", 4, 1), ("goracs", 4, 2),
        ("full", None, 0), ("full", None, 1), ("full", None, 2)]
    z, r0, full = runs[0], runs[1], runs[7]
    assert [s for s, _ in run_units(z)] == ["evaluate"]
    assert [s for s, _ in run_units(r0)] == ["select", "finetune", "evaluate"]
    assert [s for s, _ in run_units(full)] == ["finetune", "evaluate"]
    assert r0.select_dir.parent == tmp_path / "ml-1m-ctr" / "select"
    assert r0.select_dir.name.startswith("random-b4-s0-")
    # every folder is distinct
    folders = [d for r in runs for _, d in run_units(r)]
    assert len(folders) == len(set(folders))


def test_keys_follow_exactly_what_shapes_each_output(tmp_path: Path):
    base = {(r.method, r.seed): r for r in _runs(config(), tmp_path)}
    again = {(r.method, r.seed): r for r in _runs(config(), tmp_path)}
    assert base == again  # stable across builds

    # a fine-tuning setting: same coresets, new adapters and evaluations
    epochs = {(r.method, r.seed): r for r in _runs(config(task_ctr={"train": {"epochs": 2}}),
                                                   tmp_path)}
    for k, r in base.items():
        assert epochs[k].select_dir == r.select_dir
        if r.finetune_dir is not None:
            assert epochs[k].finetune_dir != r.finetune_dir
            assert epochs[k].eval_dir != r.eval_dir
    assert epochs[("zero-shot", None)].eval_dir == base[("zero-shot", None)].eval_dir

    # a GORACS parameter: only GORACS runs move
    lam = {(r.method, r.seed): r for r in _runs(
        config(task_ctr={"params": {"goracs": {"lam": 0.3}}}), tmp_path)}
    for k, r in base.items():
        moved = lam[k].eval_dir != r.eval_dir
        assert moved == (k[0] == "goracs")

    # an evaluation setting: nothing upstream moves
    ev = {(r.method, r.seed): r for r in _runs(
        config(task_ctr={"evaluate": {"batch_size": 2}}), tmp_path)}
    for k, r in base.items():
        assert ev[k].select_dir == r.select_dir and ev[k].finetune_dir == r.finetune_dir
        assert ev[k].eval_dir != r.eval_dir

    # the data: every folder moves
    prep = {(r.method, r.seed): r for r in _runs(
        config(task_ctr={"prepare": {"max_train": 41, "valid_size": 10, "test_size": 10}}),
        tmp_path)}
    for k, r in base.items():
        assert prep[k].data_dir != r.data_dir and prep[k].eval_dir != r.eval_dir


def test_filters():
    f = parse_filters(["task=ctr,method=goracs", "method=random", "seed=1"])
    assert f == {"task": {"ctr"}, "method": {"goracs", "random"}, "seed": {"1"}}
    for bad, msg in (["colour=red"], "unknown key 'colour'"), (["task"], "expected KEY=VALUE"), \
            (["task="], "task= needs a value"):
        with pytest.raises(GoracsError, match=msg):
            parse_filters(bad)


def test_filters_select_runs(tmp_path: Path):
    runs = _runs(config(), tmp_path)
    f = parse_filters(["method=goracs,seed=0", "seed=2"])
    assert [(r.method, r.seed) for r in runs if selected(r, f)] == [("goracs", 0),
                                                                     ("goracs", 2)]
    zero = parse_filters(["method=zero-shot"])
    assert [r.method for r in runs if selected(r, zero)] == ["zero-shot"]


def test_cached_units_are_found_by_their_markers(tmp_path: Path):
    cfg = config()
    groups = build_plan(cfg, tmp_path)
    g = groups[0]
    lines = plan_lines(groups, cfg, {})
    assert lines[-1] == "21 units: 0 cached, 21 to compute"
    # prepared data with features written under the same settings
    make_prepared(g.data_dir, cfg.tasks["ctr"].features)
    assert unit_done("prepare", g.data_dir) and features_done(g.data_dir,
                                                              cfg.tasks["ctr"].features)
    # features written under other settings do not count
    other = config(task_ctr={"features": {"batch_size": 3}}).tasks["ctr"].features
    assert not features_done(g.data_dir, other)
    run = g.runs[1]
    run.select_dir.mkdir(parents=True)
    (run.select_dir / "selection.json").write_text("{}")
    lines = plan_lines(groups, cfg, {})
    assert lines[-1] == "21 units: 3 cached, 18 to compute"
    cached = [line.split()[0] for line in lines if " cached " in line]
    assert cached == ["prepare", "features", "select"]
    # a run counts as done only with every manifest and its record
    assert not run_done(run)
    for folder, marker in ((run.finetune_dir, "training.json"),
                           (run.eval_dir, "metrics.json")):
        folder.mkdir(parents=True)
        (folder / marker).write_text("{}")
    assert not run_done(run)
    (run.eval_dir / "run.json").write_text("{}")
    assert run_done(run)
    only = plan_lines(groups, cfg, parse_filters(["method=random,seed=0"]))
    assert only[-1] == "5 units: 5 cached, 0 to compute"


def test_keys_hold_only_settings_that_differ_from_the_defaults():
    from goracs.experiment.plan import settings_delta
    from goracs.train.settings import PRESETS, TrainSettings

    assert settings_delta(TrainSettings()) == {}
    assert settings_delta(TrainSettings(epochs=3, target_modules=("q_proj",))) == {
        "epochs": 3, "target_modules": ["q_proj"]}
    assert settings_delta(PRESETS["paper"])["loss"] == "full"
