"""Data: readers from raw interaction logs to one table, and SeqRec/CTR sample builders."""

from goracs.data.amazon import read_amazon
from goracs.data.bookcrossing import read_book_crossing
from goracs.data.movielens import read_latest_small, read_movielens
from goracs.data.prepare import (
    DATASETS,
    TASKS,
    Prepared,
    build_prepared,
    load_interactions,
    prepare_json,
    write_prepared,
)
from goracs.data.samples import (
    SPLIT_KINDS,
    Windows,
    build_windows,
    sample_negatives,
    split_sizes,
    subsample_train,
    user_time_split,
)
from goracs.data.table import Interactions
from goracs.records import top_user_share

__all__ = [
    "DATASETS",
    "SPLIT_KINDS",
    "TASKS",
    "Interactions",
    "Prepared",
    "Windows",
    "build_prepared",
    "build_windows",
    "load_interactions",
    "prepare_json",
    "read_amazon",
    "read_book_crossing",
    "read_latest_small",
    "read_movielens",
    "sample_negatives",
    "split_sizes",
    "subsample_train",
    "top_user_share",
    "user_time_split",
    "write_prepared",
]
