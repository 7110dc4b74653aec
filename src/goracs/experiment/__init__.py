"""Experiments: datasets x tasks x methods x budgets x seeds through select, fine-tune and
evaluate, resumable, with tables and plots (``goracs experiment CONFIG``)."""

from goracs.experiment.config import ExperimentConfig, TaskConfig, parse_config
from goracs.experiment.config_files import SHIPPED, load_config
from goracs.experiment.plan import Group, Run, build_plan, parse_filters
from goracs.experiment.runner import ExperimentRunner, default_out
from goracs.experiment.table_rows import aggregate, mean_std

__all__ = [
    "SHIPPED",
    "ExperimentConfig",
    "ExperimentRunner",
    "Group",
    "Run",
    "TaskConfig",
    "aggregate",
    "build_plan",
    "default_out",
    "load_config",
    "mean_std",
    "parse_config",
    "parse_filters",
]
