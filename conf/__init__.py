"""Settings, execution options, named experiments and the command-line grammar (stdlib only)."""

from conf.cluster import Cluster
from conf.cli import Plan, announce_grid, expand_grid, grid_size, help_text, parse_arguments
from conf.experiments import DEFAULT_EXPERIMENT, EXPERIMENTS, Experiment
from conf.global_settings import DATASETS, Execution, Settings, SettingsError

__all__ = ["Cluster", "DATASETS", "DEFAULT_EXPERIMENT", "EXPERIMENTS", "Execution", "Experiment",
           "Plan", "Settings", "SettingsError", "announce_grid", "expand_grid", "grid_size", "help_text", "parse_arguments"]
