"""CLI commands of the data package: ``goracs prepare``."""

from __future__ import annotations

import argparse
import math
import time

from goracs.checks import arg_seed
from goracs.data.prepare import (
    DATASETS,
    DEFAULT_MAX_TRAIN,
    DEFAULT_NEGATIVES,
    DEFAULT_SPLIT_KIND,
    TASKS,
    Prepared,
    build_prepared,
    default_domain,
    default_like_threshold,
    load_interactions,
    prepare_json,
    write_prepared,
)
from goracs.data.samples import NEGATIVE_SAMPLING, SPLIT_KINDS
from goracs.errors import GoracsError
from goracs.outputs import OutputPlace
from goracs.prompts import parse_domain


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "prepare",
        help="turn interaction logs (or your own instruction files) into train/valid/test JSON",
        description=(
            "Build SeqRec (BIGRec-style) or CTR (TALLRec-style) Alpaca records with a global "
            "temporal split (or, with --split user-time, each user's last sample for test and "
            "the one before for validation), and write train.json, valid.json, test.json, "
            "items.json and meta.json into --out. With --dataset json, validate and copy your "
            "own files."
        ),
    )
    p.add_argument("--dataset", required=True, choices=DATASETS + ("json",))
    p.add_argument("--task", choices=TASKS,
                   help="seqrec or ctr; with --dataset json optional: the task recorded in "
                        "meta.json, which `goracs features` and `goracs select --data` read")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder")
    p.add_argument("--path", metavar="PATH",
                   help="raw data instead of the packaged copy: a MovieLens folder (ratings.dat"
                        "+movies.dat, u.data+u.item, ratings.csv+movies.csv, *.inter), the "
                        "Book-Crossing folder, or an Amazon folder")
    p.add_argument("--reviews", metavar="FILE", help="Amazon reviews (JSON lines, .gz or not)")
    p.add_argument("--meta", metavar="FILE", help="Amazon metadata (asin, title)")
    p.add_argument("--domain-word", metavar="WORD",
                   help="movies, books, video games, or plural:singular:verb "
                        "(default from the dataset; required for amazon)")
    p.add_argument("--split", choices=SPLIT_KINDS,
                   help="global-time (default): the last samples of all users in time order "
                        "are test, the ones before validation; user-time: each user's last "
                        "sample is test, the one before validation, earlier ones training")
    p.add_argument("--valid-size", type=_positive_int, metavar="N",
                   help="validation samples (default min(5000, 10%% of all samples)); with "
                        "--split user-time a seeded subset of N users' validation samples "
                        "(default: every user's)")
    p.add_argument("--test-size", type=_positive_int, metavar="N",
                   help="test samples (default min(5000, 10%% of all samples)); with "
                        "--split user-time a seeded subset of N users' test samples "
                        "(default: every user's)")
    p.add_argument("--max-train", type=_max_train, default=DEFAULT_MAX_TRAIN, metavar="N|all",
                   help="keep a seeded random subset of N training samples, in time order; "
                        f"0 or all keeps the whole pool (default {DEFAULT_MAX_TRAIN})")
    p.add_argument("--seed", type=arg_seed(), default=0,
                   help="seeds the training subset, the negatives and the user-time "
                        "validation/test subsets")
    p.add_argument("--negatives", type=_positive_int, default=DEFAULT_NEGATIVES, metavar="K",
                   help=f"negatives per SeqRec test sample (default {DEFAULT_NEGATIVES})")
    p.add_argument("--negative-sampling", choices=NEGATIVE_SAMPLING, default="uniform",
                   help="how SeqRec test negatives are drawn among the items the user never "
                        "interacted with: uniformly (default), or in proportion to each "
                        "item's interactions, so that they are as popular as real picks")
    p.add_argument("--like-threshold", type=_finite_float, metavar="R",
                   help="CTR: a rating above R is a Yes (default 3; 5 for book-crossing)")
    p.add_argument("--train", metavar="FILE", help="--dataset json: training records")
    p.add_argument("--valid", metavar="FILE", help="--dataset json: validation records")
    p.add_argument("--test", metavar="FILE", help="--dataset json: test records (optional)")
    p.add_argument("--items", metavar="FILE",
                   help="--dataset json: item catalogue, a JSON list of titles (optional)")
    p.set_defaults(func=cmd_prepare)


def _positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {v}")
    return v


def _finite_float(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not math.isfinite(v):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text}")
    return v


def _max_train(text: str) -> int | None:
    if text.strip().lower() == "all":
        return None
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a count or 'all', got {text!r}") from None
    if v < 0:
        raise argparse.ArgumentTypeError(f"must be 0 (all) or more, got {v}")
    return None if v == 0 else v


def cmd_prepare(args: argparse.Namespace) -> int:
    t0 = time.perf_counter()
    inputs = (args.path, args.reviews, args.meta, args.train, args.valid, args.test, args.items)
    # the output folder first: no reading or rendering is thrown away at the end
    OutputPlace(args.out, "prepare", inputs=inputs).check()
    if args.dataset == "json":
        prepared = _prepare_json(args)
    else:
        prepared = _prepare_source(args)
    written = write_prepared(prepared, args.out, inputs=inputs)
    _report(prepared)
    print(f"wrote {', '.join(p.name for p in written)} to {args.out} "
          f"in {time.perf_counter() - t0:.1f} s")
    return 0


def _prepare_json(args: argparse.Namespace) -> Prepared:
    extra = [f"--{k.replace('_', '-')}" for k in ("path", "reviews", "meta",
                                                   "domain_word", "split", "valid_size",
                                                   "test_size", "like_threshold")
             if getattr(args, k) is not None]
    if extra:
        raise GoracsError(f"--dataset json takes --train/--valid[/--test/--items/--task]; "
                          f"not {', '.join(extra)}")
    if args.train is None or args.valid is None:
        raise GoracsError("--dataset json needs --train FILE and --valid FILE")
    return prepare_json(args.train, args.valid, args.test, args.items, task=args.task)


def _prepare_source(args: argparse.Namespace) -> Prepared:
    if args.task is None:
        raise GoracsError(f"--dataset {args.dataset} needs --task seqrec or --task ctr")
    stray = [f"--{k}" for k in ("train", "valid", "test", "items") if getattr(args, k)]
    if stray:
        raise GoracsError(f"{', '.join(stray)} only go with --dataset json")
    if args.dataset != "amazon" and (args.reviews or args.meta):
        raise GoracsError("--reviews/--meta only go with --dataset amazon")
    if args.domain_word is not None:
        domain = parse_domain(args.domain_word)
    else:
        domain = default_domain(args.dataset)
        if domain is None:
            raise GoracsError(f"--dataset {args.dataset} needs --domain-word "
                              "(e.g. 'video games', 'books', 'movies')")
    like = (args.like_threshold if args.like_threshold is not None
            else default_like_threshold(args.dataset))
    table = load_interactions(args.dataset, args.path, args.reviews, args.meta)
    return build_prepared(
        table, args.task, domain, dataset=args.dataset, valid_size=args.valid_size,
        test_size=args.test_size, max_train=args.max_train, seed=args.seed,
        negatives=args.negatives, negative_sampling=args.negative_sampling,
        like_threshold=like,
        split=args.split if args.split is not None else DEFAULT_SPLIT_KIND)


def _report(prepared: Prepared) -> None:
    meta = prepared.meta
    counts = meta["counts"]
    if meta["dataset"] != "json":
        print(f"{meta['dataset']} {meta['task']}: {counts['users']:,} users, "
              f"{counts['items']:,} items, {counts['interactions']:,} interactions, "
              f"{counts['windows']:,} samples (training pool {counts['train_pool']:,}), "
              f"{meta.get('split', DEFAULT_SPLIT_KIND)} split")
    header = f"{'split':6s} {'samples':>9s} {'users':>7s} {'items':>7s} {'top5':>6s}"
    ctr = meta.get("task") == "ctr"
    if ctr:
        header += f" {'yes':>6s}"
    print(header)
    for name, c in counts["splits"].items():
        items = c.get("items", c.get("target_items", "-"))
        users = c.get("users", "-")
        top5 = c.get("top5_share")
        top5_text = "-" if top5 is None else f"{top5:.1%}"
        line = (f"{name:6s} {_fmt(c['samples']):>9s} {_fmt(users):>7s} {_fmt(items):>7s} "
                f"{top5_text:>6s}")
        if ctr:
            line += f" {c['yes'] / max(c['samples'], 1):6.1%}"
        print(line)
    neg = counts.get("negatives")
    if neg is not None:
        sizes = meta.get("sizes", {})
        print(f"negatives: {sizes.get('negatives')} per test sample, drawn "
              f"{sizes.get('negative_sampling')}; median "
              f"{neg['negative_median_interactions']:,.0f} interactions against the targets' "
              f"{neg['target_median_interactions']:,.0f}; "
              f"{neg['more_popular_than_target']:.1%} more popular than their target")


def _fmt(v: object) -> str:
    return f"{v:,}" if isinstance(v, int) else str(v)
