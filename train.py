"""python train.py [experiment=NAME] [key=value | key=a,b,c ...] — train a grid of runs, one after another.

Writes `<out_dir>/<experiment>/runs/<run_id>/` per run (layout in checkpointing.py): log-spaced
checkpoints with a sha256 manifest, a per-iteration log and a status file. Runs that are done are
skipped and partial ones resume exactly where they stopped (bit for bit on CPU). `--help` lists
every key. Exit codes: 0 all runs done or diverged, 1 a run failed, 2 bad input (nothing written).
The training loop itself is training.py; the launchers are slurm/.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import data
from conf import SettingsError, help_text, parse_arguments
from slurm import launch, runs
from training import Interrupted, check_fits, load_data, resolve_device
from utils import setup_logging

logger = logging.getLogger("train")


def main(arguments: list[str]) -> int:
    """`python train.py [status] [experiment=NAME] [key=value ...]`; see --help."""
    if any(argument in ("-h", "--help", "help") for argument in arguments):
        print(help_text())
        return 0
    show_status = bool(arguments) and arguments[0] == "status"
    try:
        plan = parse_arguments(arguments[1:] if show_status else arguments)
        setup_logging(plan.execution.log_level)
        if show_status:
            experiment_dir = Path(plan.execution.out_dir) / plan.experiment
            print(runs.status_table(runs.observe(runs.with_parents(plan.grid), experiment_dir, runs.queued_job_ids())))
            return 0
        if plan.cluster.launcher != "slurm":
            resolve_device(plan.execution)
        for settings in plan.grid:  # pre-flight: every dataset readable (and every subset and reset possible) first
            check_fits(settings, load_data(settings, plan.execution))
        return launch.launch(plan)
    except (SettingsError, data.DataError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except Interrupted as error:
        logger.warning("%s; the state is saved: run the same command to resume", error)
        return 128 + error.signal_number


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
