"""python train.py [experiment=NAME|FILE.py] [key=value | key=a,b,c ...] — train a grid of runs, one after another.

Writes `<out_dir>/<experiment>/runs/<run_id>/` per run (layout in folders/__init__.py): log-spaced
checkpoints with a sha256 manifest, a per-iteration log and a status file. Runs that are done are
skipped and partial ones resume exactly where they stopped (bit for bit on CPU). `--help` lists
every key. Exit codes: 0 all runs done or diverged, 1 a run failed, 2 bad input (nothing written).
The training loop itself is training/loop.py; the launchers are slurm/.

experiment= names a preset, a name of one's own (its own folder, the grid from the command line) or a
preset file of one's own (path/to/my_study.py, relative to the working directory; conf/experiments.py).
"""

from __future__ import annotations

import sys

from conf.cpu_waiting import wait_briefly

wait_briefly()  # before torch loads: its OpenMP runtime reads how to wait once (conf/cpu_waiting.py)
from conf import Plan, announce_grid, help_text, parse_arguments
from conf.experiments import close_preset
from folders import ExperimentFolder
from slurm import launch
from training.stages import check_grid_fits
from utils import command_shell, ensure_writable_folder, setup_logging

SUBCOMMANDS = {"status": "slurm.runs:status_command"}  # beside training: its word, and the function taking the rest


def main(arguments: list[str]) -> int:
    """`python train.py [status] [experiment=NAME|FILE.py] [key=value ...]`; see --help. Exit codes: 0 done, 1 the
    environment failed (a full disk, a read-only folder), 2 bad input (nothing written), 128 + N stopped by
    signal N with the state saved (utils.command_shell)."""
    if any(argument in ("-h", "--help", "help") for argument in arguments):
        print(help_text())
        return 0
    return command_shell(train_command, arguments, SUBCOMMANDS)


def train_command(arguments: list[str]) -> int:
    """`python train.py [key=value ...]`: check the grid (bad input before anything is written), then launch it."""
    announce_grid(arguments)  # counted without building it: a grid over max_runs is refused at once
    plan = parse_arguments(arguments)
    setup_logging(plan.execution.log_level)
    experiment = ExperimentFolder.of_plan(plan)  # another study's folder (a preset file of the same stem): refused
    if plan.cluster.launcher != "slurm":
        plan.execution.torch_device()
    check_grid_fits(plan.grid, plan.execution, experiment)  # pre-flight: bad input before anything is written
    announce_new_experiment(plan, experiment)
    ensure_writable_folder(experiment.runs_path)  # after the input checks: bad input writes nothing
    experiment.record_preset(plan.preset_source)
    return launch.launch(plan)


def announce_new_experiment(plan: Plan, experiment: ExperimentFolder) -> None:
    """`experiment=NAME` of one's own, the first time: say where its runs go, and the preset it may be a typo of
    (any new name is accepted, so `experiment=learnphse` would otherwise train the defaults quietly)."""
    if plan.preset is not None or experiment.path.exists():
        return
    close = close_preset(plan.experiment)
    typo = f" (no preset of that name: did you mean {close!r}?)" if close else ""
    print(f"new experiment {plan.experiment!r}{typo}: the grid from the command line, in {experiment.path}",
          file=sys.stderr, flush=True)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
