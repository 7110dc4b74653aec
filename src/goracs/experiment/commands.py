"""CLI command of the experiment package: ``goracs experiment NAME_OR_PATH``."""

from __future__ import annotations

import argparse
import shlex
import sys

from goracs.threads import add_threads_option, apply_threads


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "experiment",
        help="run a config of datasets x tasks x methods x budgets x seeds end to end",
        description="Prepare, compute features, select, fine-tune and evaluate every run of a "
        "TOML config, reusing every complete stage, then write results.csv, table.csv, "
        "table.md and plots/ into the output folder. CONFIG is a TOML path or a shipped "
        "config: cpu (SmolLM2 on 2 CPU cores) or paper (the paper's setting, for a GPU).",
    )
    p.add_argument("config", metavar="CONFIG", help="cpu, paper, or a TOML file")
    p.add_argument("--out", metavar="DIR",
                   help="output folder (default: runs/experiment-NAME)")
    p.add_argument("--dry-run", action="store_true",
                   help="print every unit of the plan and whether it is cached; compute nothing")
    p.add_argument("--only", action="append", default=[], metavar="KEY=VALUE[,...]",
                   help="run only matching runs, e.g. task=ctr,method=goracs (keys: dataset, "
                   "task, method, budget, seed; repeat a key for alternatives; the zero-shot row's "
                   "seed is -); the tables still list every run")
    p.add_argument("--until", choices=["features", "select", "finetune", "evaluate"],
                   default="evaluate",
                   help="compute the stages up to this one and stop (e.g. select every "
                        "coreset first, fine-tune later); default: every stage")
    p.add_argument("--model", help="override the config's model (a folder or hub id)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"],
                   help="override the config's device")
    add_threads_option(p)
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_experiment)


def cmd_experiment(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from goracs.errors import GoracsError
    from goracs.experiment.config_files import load_config
    from goracs.experiment.plan import parse_filters, selected
    from goracs.experiment.runner import ExperimentRunner, check_experiment_out, default_out

    cfg = load_config(args.config)
    if args.model:
        cfg = replace(cfg, model=args.model,
                      tasks={t: replace(tc, features=replace(tc.features, model=args.model))
                             if tc.features.model == cfg.model else tc
                             for t, tc in cfg.tasks.items()})
    if args.device:
        cfg = replace(cfg, device=args.device)
    filters = parse_filters(args.only)
    apply_threads(args.threads, dry_run=args.dry_run)
    out = args.out or str(default_out(cfg))
    # the command as the report names it: what decides the results, not how much was run
    command = ["goracs", "experiment", args.config]
    for flag in ("out", "model", "device"):
        if getattr(args, flag):
            command += [f"--{flag}", getattr(args, flag)]
    runner = ExperimentRunner(cfg, out, filters=filters,
                              progress=not args.quiet and sys.stderr.isatty(),
                              command=shlex.join(command), until=args.until)
    if filters and not any(selected(r, filters) for g in runner.groups for r in g.runs):
        raise GoracsError(f"--only {' '.join(args.only)}: matches no run of {cfg.name} "
                          "(see --dry-run for the plan)")
    if not args.dry_run:
        check_experiment_out(out, "--out" if args.out else "output folder")
    if args.dry_run:
        print(f"experiment {cfg.name} ({cfg.source}) -> {out}")
        for line in runner.dry_run():
            print(line)
        return 0
    summary = runner.run()
    print(summary.table)
    failed = summary.count("failed")
    print(f"experiment {cfg.name}: {summary.count('done')} runs done, "
          f"{summary.count('skipped')} skipped, {failed} failed in {summary.seconds:.1f} s; "
          f"results in {out}/ (results.csv, table.csv, table.md, plots/)", file=sys.stderr)
    return 1 if failed else 0
