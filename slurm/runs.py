"""What state each run of a grid is in, from the run folders (not from sacct), and what to launch.

A run's `status.json` is the truth about it; `squeue` (when there is one) only says whether a job
recorded as queued or running still exists. Many clusters, and our test cluster, have no
accounting, so nothing here needs `sacct`.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from conf import Settings, announce_grid, parse_arguments
from conf.plasticity import Lineage, lineages
from folders import ExperimentFolder, RunFolder, RunFolderError
from utils import setup_logging

ACTIVE = ("queued", "running")  # a job holds the run: never launched twice
RETRYABLE = ("failed", "diverged")  # launched again only with retry=failed
# "lost": recorded as queued or running, but its job is gone from the queue (or its local process
# is dead) — cancelled, or its node failed. Launched again, like a new or interrupted run.
# "damaged": done, but a checkpoint went missing or changed since it was written. Launched again.


@dataclass(frozen=True)
class RunView:
    lineage: Lineage  # the run's settings, kind and parent (conf.plasticity.lineages)
    folder: RunFolder
    status: dict
    job: dict
    state: str  # new | queued | running | done | damaged | diverged | failed | interrupted | lost

    @property
    def settings(self) -> Settings:
        return self.lineage.settings

    @property
    def job_id(self) -> str | None:
        """The Slurm job recorded for the run: the submitter's record, else the one the run wrote."""
        return self.job.get("job_id") or self.status.get("job_id")


def queued_job_ids() -> set[str] | None:
    """Ids of this user's Slurm jobs still queued or running (array tasks one by one, as `123_4`);
    None when there is no squeue to ask."""
    if shutil.which("squeue") is None:
        return None
    try:
        listing = subprocess.run(["squeue", "--me", "-h", "-r", "-o", "%i"], capture_output=True, text=True,
                                 timeout=60, check=True).stdout
    except (subprocess.SubprocessError, OSError):
        return None
    return {line.strip() for line in listing.splitlines() if line.strip()}


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def observed_state(status: dict, job: dict, queue: set[str] | None) -> str:
    """The recorded state, with two corrections from the queue: a run whose job is queued but has not
    written its status yet is "queued" (a retried failed run, say); a queued or running run whose job
    or process is gone is "lost"."""
    state = status.get("state", "new")
    if queue is not None and job.get("job_id") in queue:
        written_by_this_job = status.get("updated_at", 0) >= job.get("submitted_at", 0)
        return state if written_by_this_job else "queued"
    if state not in ACTIVE:
        return state
    job_id = status.get("job_id") or job.get("job_id")
    if job_id and queue is not None:
        return state if job_id in queue else "lost"
    if not job_id and status.get("host") == socket.gethostname() and "pid" in status:
        return state if _process_alive(status["pid"]) else "lost"
    return state  # recorded by a job, but no squeue here to ask: believe the record


def parent_view(view: RunView, by_id: dict[str, RunView]) -> RunView | None:
    """The view of a run's parent (`by_id`: views by run id; lineages put it there); None for runs
    without one."""
    parent = view.lineage.parent
    return None if parent is None else by_id[parent.settings.run_id]


def observe(runs: tuple[Lineage, ...], experiment_dir: Path, queue: set[str] | None) -> list[RunView]:
    """Each run's view: its folder's status files read once (RunFolder.read_status_files), corrected by the queue."""
    views, experiment = [], ExperimentFolder(experiment_dir)
    for run in runs:
        folder = experiment.run(run.settings.run_id)
        files = folder.read_status_files()
        state = observed_state(files.status, files.job, queue)
        if state == "done" and files.damaged:
            state = "damaged"  # trained again from a state before the damage, which re-makes the files bit for bit
        views.append(RunView(run, folder, files.status, files.job, state))
    return views


def to_launch(views: list[RunView], retry: str) -> list[RunView]:
    """New, interrupted, lost and damaged runs; failed and diverged ones too with retry=failed."""
    return [view for view in views
            if view.state not in ("done", *ACTIVE) and (view.state not in RETRYABLE or retry == "failed")]


def waves(views: list[RunView], chosen: list[RunView]) -> tuple[list[list[RunView]], list[RunView]]:
    """(waves, stranded): the first wave holds the runs whose parent (if any) is done; each later wave
    the runs whose parent is launched in the wave before or is still queued or running (a chain of
    growing-data stages: one wave per stage); stranded, the runs whose parent failed or diverged and is
    not launched again (they cannot start), and their own children."""
    by_id = {view.settings.run_id: view for view in views}
    chosen_ids = {view.settings.run_id for view in chosen}
    depth: dict[str, int] = {}
    stranded: list[RunView] = []

    def depth_of(view: RunView) -> int | None:  # None: stranded
        run_id = view.settings.run_id
        if run_id not in depth:
            parent = parent_view(view, by_id)
            if parent is None or parent.state == "done":
                depth[run_id] = 0
            elif parent.settings.run_id in chosen_ids:
                above = depth_of(parent)
                depth[run_id] = None if above is None else above + 1
            else:
                depth[run_id] = 1 if parent.state in ACTIVE else None
        return depth[run_id]

    levels: dict[int, list[RunView]] = {}
    for view in chosen:
        level = depth_of(view)
        if level is None:
            stranded.append(view)
        else:
            levels.setdefault(level, []).append(view)
    return [levels.get(level, []) for level in range(max(levels, default=-1) + 1)], stranded


def status_table(views: list[RunView]) -> str:
    """`python train.py status`: one row per run — state, iteration/total, job, last error."""
    header = ("run", "state", "iteration", "job", "reason")
    rows = [header]
    for view in views:
        status = view.status
        progress = f"{status.get('iteration', 0)}/{status['total_iterations']}" if "total_iterations" in status else "-"
        rows.append((view.settings.run_id, view.state, progress, view.job_id or "-", status.get("reason", "")))
    widths = [max(len(str(row[column])) for row in rows) for column in range(len(header) - 1)]
    lines = ["  ".join(str(value).ljust(width) for value, width in zip(row, widths)) + "  " + str(row[-1])
             for row in rows]
    counts: dict[str, int] = {}
    for view in views:
        counts[view.state] = counts.get(view.state, 0) + 1
    summary = ", ".join(f"{count} {state}" for state, count in sorted(counts.items()))
    return "\n".join([*(line.rstrip() for line in lines), f"{len(views)} run(s): {summary}"])


def status_command(arguments: list[str]) -> int:
    """`python train.py status [experiment=NAME|FILE.py] [key=value ...]`: the table of the command line's runs as
    they are now (status_report); the same checks of the command line as training's, and nothing written."""
    announce_grid(arguments)
    plan = parse_arguments(arguments)
    setup_logging(plan.execution.log_level)
    experiment = ExperimentFolder.of_plan(plan)
    print(status_report(plan, experiment))
    return 0


def status_report(plan, experiment: ExperimentFolder) -> str:
    """`python train.py status ...`: the table of the command line's runs as they are now: its grid (a preset's, or
    the run settings typed) with the runs it starts from; for an experiment of one's own named with no run
    settings, the runs its folder holds (its grids were the command lines that trained it, which this one does not
    repeat)."""
    typed = plan.preset is not None or bool(plan.overrides)
    grid = plan.grid if typed else settings_found(experiment)
    return status_table(observe(lineages(grid, parents=typed), experiment.path, queued_job_ids()))


def settings_found(experiment: ExperimentFolder) -> tuple[Settings, ...]:
    """The settings of every run the experiment's folder holds; a run whose settings file is unusable is named on
    stderr and left out."""
    found = []
    for folder in experiment.run_folders() if experiment.runs_path.is_dir() else []:
        try:
            found.append(folder.read_settings())
        except RunFolderError as error:
            print(f"warning: {error}; left out of the status", file=sys.stderr)
    return tuple(found)
