"""The analysis on Slurm: `python analysis.py experiment=NAME launcher=slurm` submits one array task per run.

Each task measures its run's missing cells (protocol.analyse_runs) and rewrites that run's part of the
table alone, so no task's cost grows with the grid; the submitting process tidies the other parts first.
"""

from __future__ import annotations

import dataclasses

from conf import Execution, Plan
from folders import ExperimentFolder, RunRecord
from measuring import protocol, snapshots, store
from utils import set_cpu_threads, setup_logging


def analyse_job(run_id: str, experiment_dir: str, plan: Plan) -> protocol.Outcome:
    """One Slurm array task: one run's missing cells, then that run's part of the table only (each
    task writes its own part, so no task's cost grows with the grid). The run is read once, here."""
    setup_logging(plan.execution.log_level)
    set_cpu_threads(plan.execution.threads)
    device = plan.execution.torch_device()
    experiment = ExperimentFolder(experiment_dir)
    run = experiment.run(run_id).read_record()
    outcome = protocol.analyse_runs([run], experiment, plan, device)
    store.update_run(experiment, run)
    snapshots.update_similarity(experiment, {run_id: run}, [run_id])
    return outcome


def submit_analysis(plan: Plan, experiment: ExperimentFolder, runs: list[RunRecord],
                    every_run: dict[str, RunRecord]) -> int:
    """`launcher=slurm`: one array task per run, with the cluster options of train.sh; a job no node can run
    is refused before anything is written, and the runs not submitted get their parts of the table tidied
    here (runs gone, an old one-file table): each task writes its own."""
    from slurm.capacity import check_capacity
    from slurm.launch import absolute_execution, make_executor

    check_capacity(plan.cluster)
    store.merge(experiment, every_run, leave={run.run_id for run in runs})

    if not runs:
        print(f"submitted 0 jobs: experiment {plan.experiment!r} has no runs under {experiment.runs_path}")
        return 0
    plan = dataclasses.replace(plan, execution=Execution(**absolute_execution(plan)))
    executor = make_executor(plan, experiment.slurm_path)
    executor.update_parameters(job_name=f"analysis-{plan.experiment}")
    jobs = executor.map_array(analyse_job, [run.run_id for run in runs],
                              [str(experiment.path.resolve())] * len(runs), [plan] * len(runs))
    print(f"submitted {len(jobs)} analysis job(s) (array {jobs[0].job_id.split('_')[0]}); logs in "
          f"{experiment.slurm_path}; the table: {experiment.table_path}")
    return 0
