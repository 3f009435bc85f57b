"""The analysis on Slurm: `python analysis.py experiment=NAME launcher=slurm` submits one array task per run.

Each task measures its run's missing cells (protocol.analyse_runs) and rewrites that run's part of the
table alone, so no task's cost grows with the grid; the submitting process tidies the other parts first.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from conf import Execution, Plan, Settings
from folders import ExperimentFolder
from measuring import protocol, snapshots, store
from utils import setup_logging


def analyse_job(settings_record: dict, experiment_dir: str, plan: Plan) -> protocol.Outcome:
    """One Slurm array task: one run's missing cells, then that run's part of the table only (each
    task writes its own part, so no task's cost grows with the grid)."""
    setup_logging(plan.execution.log_level)
    protocol.apply_threads(plan.execution)
    device = plan.execution.torch_device()
    settings = Settings.from_record(settings_record)
    outcome = protocol.analyse_runs([settings], Path(experiment_dir), plan, device)
    store.update_run(Path(experiment_dir), settings.run_id)
    snapshots.update_similarity(Path(experiment_dir), [settings.run_id])
    return outcome


def submit_analysis(plan: Plan, experiment_dir: Path, runs: list[Settings]) -> int:
    """`launcher=slurm`: one array task per run, with the cluster options of train.sh; a job no node can run
    is refused before anything is written, and the runs not submitted get their parts of the table tidied
    here (runs gone, an old one-file table): each task writes its own."""
    from slurm.capacity import check_capacity
    from slurm.launch import absolute_execution, make_executor

    check_capacity(plan.cluster)
    store.merge(experiment_dir, leave={settings.run_id for settings in runs})

    if not runs:
        print(f"submitted 0 jobs: experiment {plan.experiment!r} has no runs under {ExperimentFolder(experiment_dir).runs_path}")
        return 0
    plan = dataclasses.replace(plan, execution=Execution(**absolute_execution(plan)))
    executor = make_executor(plan, experiment_dir)
    executor.update_parameters(job_name=f"analysis-{plan.experiment}")
    jobs = executor.map_array(analyse_job, [settings.to_record() for settings in runs],
                              [str(experiment_dir.resolve())] * len(runs), [plan] * len(runs))
    print(f"submitted {len(jobs)} analysis job(s) (array {jobs[0].job_id.split('_')[0]}); logs in "
          f"{ExperimentFolder(experiment_dir).slurm_path}; the table: {ExperimentFolder(experiment_dir).table_path}")
    return 0

