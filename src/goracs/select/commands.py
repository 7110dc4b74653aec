"""CLI commands of the selection package: ``goracs select`` and ``goracs methods``."""

from __future__ import annotations

import argparse
import inspect
import sys
from pathlib import Path
from typing import Any

from goracs.cache import path_fingerprint
from goracs.checks import (
    arg_count_or_none,
    arg_float,
    arg_int,
    arg_seed,
    check_json_depth,
)
from goracs.cluster import RAY_FORMS, check_ray, parse_ray
from goracs.errors import GoracsError
from goracs.io import loads_json
from goracs.outputs import OutputPlace
from goracs.prepared import FEATURES_DIR, SELECTION_ARRAYS
from goracs.records import load_records
from goracs.select import available_methods, get_selector
from goracs.select.defaults import default_lambda
from goracs.select.io import (
    CORESET_FILE,
    SELECTION_FILE,
    check_features,
    check_pool,
    concentration_note,
    folder_task,
    load_selection_data,
    selection_files,
    validation_users,
    write_selection,
)

# CLI flag -> constructor argument, passed when the chosen method's constructor takes it.
_METHOD_FLAGS = {
    "lam": "lam",
    "max_iters": "max_iters",
    "candidates": "candidates",
    "init_stop": "init_stop",
    "saturation": "saturation",
    "swaps_per_round": "swaps_per_round",
    "tol": "tol",
    "medoid_rounds": "medoid_rounds",
    "patience": "patience",
    "max_memory": "max_memory",
    "ray": "ray",
}
# Flags whose unset value (None) leaves the method's own default.
_UNSET_KEEPS_DEFAULT = ("lam", "max_memory", "ray")

RAY_HELP = ("run GORACS's passes over the pool (greedy's first gains, fill costs, medoid "
            "pricing, marginal impacts) as Ray tasks, on the streaming engine, with the same "
            "selection: " + RAY_FORMS)


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("methods", help="list the registered selection methods")
    p.set_defaults(func=cmd_methods)

    p = sub.add_parser(
        "select",
        help="select a coreset from embeddings and gradient norms",
        description="Select a coreset; writes OUT/selection.json (indices, POO, trace, "
        "parameters, seconds per stage).",
    )
    p.add_argument("--data", help="a prepared folder (goracs prepare) whose features/ were "
                   "computed (goracs features); writes the coreset's records too")
    p.add_argument("--task", choices=["seqrec", "ctr"],
                   help="with --data: the task, for a folder whose meta.json names none "
                        "(goracs prepare --dataset json without --task); must match the "
                        "features'")
    p.add_argument("--embedding", choices=["default", "llm"], default="default",
                   help="with --data: select on features/train_emb.npy (default) or on the "
                        "scoring LLM's llm_train_emb.npy/llm_valid_emb.npy (goracs features "
                        "--embedding both|llm)")
    p.add_argument("--train-emb", help="(N, d) training embeddings, .npy or .safetensors")
    p.add_argument("--valid-emb", help="(V, d) validation embeddings")
    p.add_argument("--grad-norms", help="(N,) per-sample gradient norms")
    p.add_argument("--train-labels", help="(N,) integer class labels (label-enhanced GORACS)")
    p.add_argument("--valid-labels", help="(V,) integer class labels")
    p.add_argument("--score", action="append", default=[], metavar="NAME=FILE",
                   help="an extra per-sample score for importance baselines (repeatable)")
    p.add_argument("--budget", type=arg_int(1), required=True, help="coreset size n")
    p.add_argument("--method", default="goracs", help="selection method (see `goracs methods`)")
    p.add_argument("--lam", type=arg_float(minimum=0), default=None,
                   help="lambda, weight of gradient norms (default 0.5; with --data: 0.1 for "
                   "seqrec, 0.5 for ctr, the reference's values)")
    p.add_argument("--max-iters", type=arg_count_or_none(0), default=100,
                   help="accepted swaps at most; 'none' runs until no candidate improves")
    p.add_argument("--candidates", type=arg_int(1), default=30, help="c, swap candidates per side")
    p.add_argument("--init-stop", default="exact", choices=["exact", "assigned"],
                   help="greedy stopping rule: at n picks, or the reference's rule")
    p.add_argument("--saturation", default="capacity", choices=["capacity", "index"],
                   help="once every relaxed gain is zero, pick the rest by fill cost on the "
                   "capacitated transport, or by index (the plain greedy)")
    p.add_argument("--swaps-per-round", type=arg_count_or_none(1), default=None,
                   help="accepted swaps per marginal-impact computation (1: reference loop)")
    p.add_argument("--medoid-rounds", type=arg_int(0), default=20,
                   help="rounds of medoid moves before exchange refinement (0: reference ITRA)")
    p.add_argument("--patience", type=arg_count_or_none(1), default=30,
                   help="failed swap evaluations in a row that end refinement ('none': no "
                   "limit)")
    p.add_argument("--tol", type=arg_float(minimum=0), default=1e-4,
                   help="end refinement when a round lowers POO by less than this share")
    p.add_argument("--max-memory", default=None, metavar="SIZE",
                   help="memory budget of GORACS, e.g. 6GB: the dense cost matrix when it "
                   "fits, else the streaming engine (default: 70%% of the memory available)")
    p.add_argument("--ray", default=None, metavar="ADDRESS", help=RAY_HELP)
    p.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                   help="any other constructor argument of the method (repeatable)")
    p.add_argument("--seed", type=arg_seed(), default=0,
                   help="seed of the seeded methods (an integer >= 0)")
    p.add_argument("--out", required=True, help="output folder")
    p.set_defaults(func=cmd_select)


def cmd_methods(args: argparse.Namespace) -> int:
    for name, doc in available_methods().items():
        print(f"{name:18s} {doc}")
    return 0


def _parse_kv(items: list[str], what: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items:
        if "=" not in item:
            raise GoracsError(f"{what} must look like KEY=VALUE, got {item!r}")
        k, v = item.split("=", 1)
        out[k.strip().replace("-", "_")] = v
    return out


def _literal(text: str, key: str = "") -> Any:
    """A ``--param`` value as JSON (numbers, booleans, lists), else the text itself; JSON
    nested too deeply is refused with one line."""
    source = f"--param {key}".rstrip()
    check_json_depth(text, source)
    try:
        return loads_json(text, source)
    except GoracsError:  # not JSON: the text itself
        return text


def build_selector(args: argparse.Namespace) -> Any:
    """Instantiate the chosen method with the flags its constructor accepts."""
    cls = get_selector(args.method)
    # the constructor the class really has (an ablation narrows its parent's parameters)
    accepted = set(inspect.signature(cls.__init__).parameters) - {"self"}
    kwargs: dict[str, Any] = {"budget": args.budget, "seed": args.seed}
    for flag, pname in _METHOD_FLAGS.items():
        # an unset --lam leaves a method's own default (DEALRec's lam is another weight)
        if pname in accepted and not (flag in _UNSET_KEEPS_DEFAULT
                                      and getattr(args, flag) is None):
            kwargs[pname] = getattr(args, flag)
    if getattr(args, "ray", None) is not None and "ray" not in accepted:
        raise GoracsError(f"--ray runs GORACS's passes on Ray; method {args.method!r} runs "
                          "here only")
    for k, v in _parse_kv(args.param, "--param").items():
        if k not in accepted:
            raise GoracsError(f"method {args.method!r} has no parameter {k!r}")
        kwargs[k] = _literal(v, k)
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:
        raise GoracsError(f"bad parameters for {args.method}: {exc}") from None


def cmd_select(args: argparse.Namespace) -> int:
    if args.budget <= 0:
        raise GoracsError(f"budget must be a positive integer, got {args.budget}")
    named_scores = _parse_kv(args.score, "--score")
    if args.ray is not None:  # a bad value or a cluster that does not answer: before any work
        check_ray(parse_ray(args.ray))
    arrays: dict[str, str | None] = {f: getattr(args, f) for f in SELECTION_ARRAYS}
    # the output folder before any work: a selection is never thrown away at the end
    place = OutputPlace(args.out, "select",
                        inputs=[args.data, *arrays.values(), *named_scores.values()]).check()
    if args.embedding != "default" and args.data is None:
        raise GoracsError("--embedding llm goes with --data (give --train-emb/--valid-emb "
                          "otherwise)")
    if args.task is not None and args.data is None:
        raise GoracsError("--task goes with --data")
    scores = named_scores
    data_dir = task = None
    if args.data is not None:
        data_dir = Path(args.data)
        task = folder_task(data_dir, args.task)
        check_features(data_dir, task)
        given = [f for f in SELECTION_ARRAYS if arrays[f] is not None]
        if given:
            raise GoracsError(f"--data takes its arrays from {data_dir / FEATURES_DIR}; drop --"
                              f"{given[0].replace('_', '-')}")
        files, folder_scores = selection_files(data_dir, args.embedding)
        arrays = {f: None if f not in files else str(files[f]) for f in SELECTION_ARRAYS}
        # a score the user names wins over the folder's
        scores = {**named_scores, **{k: str(p) for k, p in folder_scores.items()
                                     if k not in named_scores}}
    if args.lam is None:
        args.lam = default_lambda(get_selector(args.method), task)
    selector = build_selector(args)
    data = load_selection_data(arrays, scores)
    inputs: dict[str, Any] = dict(arrays)
    if scores:
        inputs["scores"] = scores
    extra: dict[str, Any] = {"inputs": inputs}
    records = None
    if data_dir is not None:
        records = load_records(data_dir / "train.json")
        check_pool(records, data.n_train, data_dir, "; rerun `goracs features`")
        extra.update(data=str(data_dir), task=task, coreset=CORESET_FILE,
                     train_digest=path_fingerprint(data_dir / "train.json"))
        valid_users = validation_users(data_dir, selector.requires, data)
        if valid_users is not None:
            extra["valid_users"] = valid_users
        note = concentration_note(valid_users)
        if note is not None:
            print(note, file=sys.stderr)
    try:
        selector.fit(data)
    except (TypeError, ValueError) as exc:  # a method parameter its algorithm cannot use
        raise GoracsError(f"{args.method}: {exc}") from None
    manifest = selector.result().to_json()
    manifest.update(extra)
    write_selection(place, manifest, records)
    if "engine" in manifest:
        print(f"engine: {manifest['engine']} ({getattr(selector, 'engine_note_', '')})",
              file=sys.stderr)
    if "ray" in manifest:
        r = manifest["ray"]
        print(f"ray: {r['passes']} passes as {r['tasks']} tasks on {r['cpus']} CPUs "
              f"({r['address']}, {r['session']})", file=sys.stderr)
    poo = manifest.get("poo")
    poo_txt = "" if poo is None else f", POO {poo:.5f}"
    print(f"selected {manifest['budget']} of {data.n_train} with {manifest['method']}{poo_txt} "
          f"in {manifest['seconds']['total']:.1f} s -> {Path(args.out) / SELECTION_FILE}",
          file=sys.stderr)
    return 0
