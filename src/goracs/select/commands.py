"""CLI commands of the selection package: ``goracs select`` and ``goracs methods``."""

from __future__ import annotations

import argparse
import inspect
import sys
from pathlib import Path
from typing import Any

import numpy as np

from goracs.cache import path_fingerprint
from goracs.checks import (
    arg_count_or_none,
    arg_float,
    arg_int,
    arg_seed,
    check_json_depth,
    real_array,
)
from goracs.errors import GoracsError
from goracs.io import atomic_write_json, load_array, loads_json, read_json
from goracs.outputs import OutputPlace
from goracs.prepared import SELECTION_ARRAYS, features_match, folder_inputs
from goracs.records import check_task, load_records, read_task
from goracs.select import GORACS, SelectionData, available_methods, get_selector
from goracs.select.defaults import TASK_LAMBDA

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
}


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
        if pname in accepted and not (flag == "lam" and args.lam is None):
            kwargs[pname] = getattr(args, flag)
    for k, v in _parse_kv(args.param, "--param").items():
        if k not in accepted:
            raise GoracsError(f"method {args.method!r} has no parameter {k!r}")
        kwargs[k] = _literal(v, k)
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:
        raise GoracsError(f"bad parameters for {args.method}: {exc}") from None


def load_selection_data(args: argparse.Namespace) -> SelectionData:
    def opt(path: str | None) -> np.ndarray | None:
        return None if path is None else load_array(path)

    scores = {k: load_array(v) for k, v in _parse_kv(args.score, "--score").items()}
    data = SelectionData(
        train_emb=opt(args.train_emb),
        valid_emb=opt(args.valid_emb),
        grad_norms=opt(args.grad_norms),
        train_labels=opt(args.train_labels),
        valid_labels=opt(args.valid_labels),
        scores=scores,
    )
    check_selection_arrays(data)
    return data


#: Largest embedding value accepted: the cost matrix is a float32 product of embeddings, which
#: must not overflow.
MAX_EMBEDDING = 1e15


def check_selection_arrays(data: SelectionData) -> None:
    """Check every array's rank and real dtype after the cast selection applies (float32
    embeddings, float64 gradient norms and scores, int64 labels), one line per fault; the
    labels are replaced by their int64 cast."""
    for name in ("train_emb", "valid_emb"):
        arr = getattr(data, name)
        if arr is not None:
            real_array(arr, f"--{name.replace('_', '-')}", ndim=2, dtype=np.float32,
                       max_abs=MAX_EMBEDDING)
    if data.grad_norms is not None:
        real_array(data.grad_norms, "--grad-norms", ndim=1, non_negative=True)
    for name in ("train_labels", "valid_labels"):
        arr = getattr(data, name)
        if arr is not None:
            setattr(data, name, real_array(arr, f"--{name.replace('_', '-')}", ndim=1,
                                           dtype=np.int64))
    for key, arr in data.scores.items():
        real_array(arr, f"--score {key}", ndim=1)


_ARRAY_FLAGS = SELECTION_ARRAYS


def _folder_task(data_dir: Path, given: str | None) -> str:
    """The task of a prepared folder: the one its ``meta.json`` names, or ``--task`` where it
    names none (a ``--dataset json`` folder); the two must agree when both are there."""
    if given is None:
        return read_task(data_dir)
    task = check_task(given, "--task")
    if (data_dir / "meta.json").is_file():
        meta = read_json(data_dir / "meta.json")
        named = meta.get("task") if isinstance(meta, dict) else None
        if named is not None and named != task:
            raise GoracsError(f"--task {task}: {data_dir}/meta.json names the {named} task")
    return task


def _use_prepared_folder(args: argparse.Namespace) -> tuple[Path, str]:
    """Point the array flags at DIR/features/*.npy, and add DIR/features/el2n.npy and
    influence.npy (when there) as scores unless ``--score`` names them already; returns the
    folder and its task."""
    data_dir = Path(args.data)
    task = _folder_task(data_dir, args.task)
    feats = data_dir / "features"
    if not (feats / "features.json").is_file():
        raise GoracsError(f"{data_dir}: no computed features (run `goracs features {data_dir}`)")
    # the features must come from this folder's records, for this task (not just as many rows)
    features_match(data_dir, task)
    given = [f for f in _ARRAY_FLAGS if getattr(args, f) is not None]
    if given:
        raise GoracsError(f"--data takes its arrays from {feats}; drop --"
                          f"{given[0].replace('_', '-')}")
    arrays, scores = folder_inputs(data_dir)
    if args.embedding == "llm":
        llm = {f: feats / f"llm_{f}.npy" for f in ("train_emb", "valid_emb")}
        absent = [p for p in llm.values() if not p.is_file()]
        if absent:
            raise GoracsError(f"--embedding llm: {absent[0]} not found (run `goracs features "
                              f"{data_dir} --embedding both`)")
        arrays.update(llm)
    for flag, path in arrays.items():
        setattr(args, flag, str(path))
    named = _parse_kv(args.score, "--score")
    args.score = [*args.score, *(f"{k}={p}" for k, p in scores.items() if k not in named)]
    return data_dir, task


def cmd_select(args: argparse.Namespace) -> int:
    if args.budget <= 0:
        raise GoracsError(f"budget must be a positive integer, got {args.budget}")
    # the output folder before any work: a selection is never thrown away at the end
    named_inputs = [args.data, *(getattr(args, f) for f in _ARRAY_FLAGS),
                    *_parse_kv(args.score, "--score").values()]
    place = OutputPlace(args.out, "select", inputs=named_inputs).check()
    data_dir = task = None
    if args.embedding != "default" and args.data is None:
        raise GoracsError("--embedding llm goes with --data (give --train-emb/--valid-emb "
                          "otherwise)")
    if args.task is not None and args.data is None:
        raise GoracsError("--task goes with --data")
    if args.data is not None:
        data_dir, task = _use_prepared_folder(args)
    if args.lam is None and issubclass(get_selector(args.method), GORACS):
        args.lam = TASK_LAMBDA.get(task or "", 0.5)
    selector = build_selector(args)
    data = load_selection_data(args)
    inputs: dict[str, Any] = {k: getattr(args, k) for k in _ARRAY_FLAGS}
    if args.score:
        inputs["scores"] = _parse_kv(args.score, "--score")
    extra: dict[str, Any] = {"inputs": inputs}
    records = None
    if data_dir is not None:
        records = load_records(data_dir / "train.json")
        if len(records) != data.n_train:
            raise GoracsError(f"{data_dir}/train.json does not match its features "
                              f"({data.n_train} rows); rerun `goracs features`")
        extra.update(data=str(data_dir), task=task, coreset="coreset.json",
                     train_digest=path_fingerprint(data_dir / "train.json"))
    try:
        selector.fit(data)
    except (TypeError, ValueError) as exc:  # a method parameter its algorithm cannot use
        raise GoracsError(f"{args.method}: {exc}") from None
    manifest = selector.result().to_json()
    manifest.update(extra)
    # written beside the output folder, the manifest last, then swapped in whole: an earlier
    # selection there goes with every file of it (no stale coreset.json stays)
    part = place.begin()
    if records is not None:
        atomic_write_json(part / "coreset.json", [records[i] for i in manifest["indices"]])
    atomic_write_json(part / "selection.json", manifest)
    place.commit()
    poo = manifest.get("poo")
    poo_txt = "" if poo is None else f", POO {poo:.5f}"
    print(f"selected {manifest['budget']} of {data.n_train} with {manifest['method']}{poo_txt} "
          f"in {manifest['seconds']['total']:.1f} s -> {Path(args.out) / 'selection.json'}",
          file=sys.stderr)
    return 0
