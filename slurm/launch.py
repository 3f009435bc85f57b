"""Launch a grid: inline (this process), local (worker processes) or slurm (submitit job arrays).

Every launcher first decides from the run folders what to launch (slurm/runs.py): done, queued and
running runs never again, failed and diverged ones only with retry=failed. So submitting the same
grid twice submits nothing the second time, and a deleted run folder is exactly what comes back.
A run's parent (a warm start's stage-1 run, a transfer child's run of the other dataset, the earlier
stages of growing data) joins the grid once and runs first: locally the children train in the next
wave, on Slurm their jobs depend on its job (afterok).
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import logging
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import submitit

from conf import Plan, SettingsError
from conf.cluster import Cluster, sbatch_parameters
from conf.plasticity import lineages
from folders import ExperimentFolder
from slurm.capacity import check_capacity, explain_refusal
from slurm.job import TrainJob, train_pack
from slurm.parallel import cpus_per_process, worker_pool
from slurm.runs import RunView, observe, parent_view, queued_job_ids, to_launch, waves
from training import devices

logger = logging.getLogger(__name__)
REPOSITORY = Path(__file__).resolve().parent.parent
SLURM_DEFAULT_MAX_ARRAY_SIZE = 1001
# What submitit writes before calling sbatch: the pickled call and the sbatch script, both named by a uuid.
SUBMITIT_TEMPORARY_FILE = re.compile(r"^(?:[0-9a-f]{32}\.pkl|\.submission_file_[0-9a-f]{32}\.sh)$")


def pack_runs(views: list[RunView], runs_per_job: int) -> list[list[RunView]]:
    """Consecutive groups of `runs_per_job` runs: each group is one job (short runs share a job)."""
    return [views[start:start + runs_per_job] for start in range(0, len(views), runs_per_job)]


def runs_in_job(plan: Plan) -> int:
    """Runs per job: runs_in_parallel processes at once, each training runs_per_job one after another."""
    return plan.cluster.runs_per_job * plan.cluster.runs_in_parallel


def split_arrays(packs: list, max_array_size: int) -> list[list]:
    """Arrays of at most `max_array_size` tasks (Slurm refuses array indices >= MaxArraySize)."""
    return [packs[start:start + max_array_size] for start in range(0, len(packs), max_array_size)]


def cluster_limits() -> dict[str, int]:
    """MaxArraySize and MaxJobCount from `scontrol show config`, and the number of nodes (sinfo)."""
    limits = {"MaxArraySize": SLURM_DEFAULT_MAX_ARRAY_SIZE, "MaxJobCount": 10000, "nodes": 1}
    try:
        config = subprocess.run(["scontrol", "show", "config"], capture_output=True, text=True, timeout=60).stdout
        for key in ("MaxArraySize", "MaxJobCount"):
            match = re.search(rf"^{key}\s*=\s*(\d+)", config, re.MULTILINE)
            if match:
                limits[key] = int(match.group(1))
        nodes = subprocess.run(["sinfo", "-h", "-N", "-o", "%N"], capture_output=True, text=True, timeout=60).stdout
        limits["nodes"] = len(set(nodes.split())) or 1
    except (subprocess.SubprocessError, OSError):
        logger.warning("could not read the cluster's limits; assuming Slurm's defaults")
    return limits


def absolute_execution(plan: Plan) -> dict:
    """The execution options with absolute folders: jobs must not depend on where they start."""
    return dataclasses.asdict(dataclasses.replace(plan.execution, out_dir=str(Path(plan.execution.out_dir).resolve()),
                                                  data_root=str(Path(plan.execution.data_root).resolve())))


def launch(plan: Plan) -> int:
    """Launch what the grid still needs; print what was done or submitted. Returns an exit code."""
    experiment_dir = Path(plan.execution.out_dir).resolve() / plan.experiment
    views = observe(lineages(plan.grid), experiment_dir, queued_job_ids())
    chosen = to_launch(views, plan.cluster.retry)
    skipped = {}
    for view in views:
        if view not in chosen:
            skipped[view.state] = skipped.get(view.state, 0) + 1
    if skipped:
        print(f"skipping {', '.join(f'{count} {state}' for state, count in sorted(skipped.items()))} run(s)"
              + ("" if plan.cluster.retry == "failed" or not {"failed", "diverged"} & set(skipped)
                 else " (retry=failed relaunches failed and diverged ones)"))
    ordered, stranded = waves(views, chosen)
    if stranded:
        print(f"skipping {len(stranded)} run(s) whose parent run failed or diverged (retry=failed relaunches it)")
    launcher = {"inline": launch_inline, "local": launch_local, "slurm": submit_to_slurm}[plan.cluster.launcher]
    return launcher(plan, experiment_dir, ordered, views)


def _report(plan: Plan, experiment_dir: Path, outcomes: dict[str, str]) -> int:
    counts: dict[str, int] = {}
    for outcome in outcomes.values():
        counts[outcome] = counts.get(outcome, 0) + 1
    summary = ", ".join(f"{count} {state}" for state, count in counts.items()) or "nothing to do"
    print(f"{len(outcomes)} run(s) of experiment {plan.experiment!r} trained: {summary}. "
          f"Results in {ExperimentFolder(experiment_dir).runs_path}")
    return 1 if {"failed", "interrupted"} & set(counts) else 0


def launch_inline(plan: Plan, experiment_dir: Path, ordered: list[list[RunView]], _views) -> int:
    records = [view.settings.to_record() for wave in ordered for view in wave]  # parents before their children
    return _report(plan, experiment_dir, train_pack(experiment_dir, records, absolute_execution(plan)))


def launch_local(plan: Plan, experiment_dir: Path, ordered: list[list[RunView]], _views) -> int:
    """`workers` processes at a time, one run each (spawned: no state shared with this process); each
    wave (runs whose parents trained in the wave before) once the one before is through."""
    execution = absolute_execution(plan)
    cpus = cpus_per_process(plan.cluster.workers, devices.cpus_given())  # each worker's share, at a first start
    outcomes: dict[str, str] = {}
    with worker_pool(plan.cluster.workers, plan.execution.device) as pool:  # spread over the GPUs, if any
        for wave in ordered:
            futures = [pool.submit(train_pack, experiment_dir, [view.settings.to_record()], execution, cpus)
                       for view in wave]
            for future in futures:
                outcomes.update(future.result())
    return _report(plan, experiment_dir, outcomes)


class SbatchRefused(SettingsError):
    """sbatch refused a job; the message is Slurm's reason and the likely fix, on one line."""


def discard_empty_folders(experiment_dir: Path) -> None:
    """Remove the experiment's slurm and runs folders, then the experiment folder, where they are
    empty: after a refusal, nothing is left that looks like a launch (train.py creates the runs
    folder before the launcher decides anything)."""
    experiment = ExperimentFolder(experiment_dir)
    for folder in (experiment.slurm_path, experiment.runs_path, experiment.path):
        try:
            folder.rmdir()
        except OSError:  # not empty, or not there: either way nothing to discard
            pass


def discard_temporary_files(submissions_folder: Path, before: set[str]) -> None:
    """Remove the files submitit wrote for a refused submission: those named like its temporary files
    that were not in the folder `before` it (another submitter's, in the same folder, stay)."""
    after = set(os.listdir(submissions_folder)) if submissions_folder.is_dir() else set()
    for name in after - before:
        if SUBMITIT_TEMPORARY_FILE.match(name):
            (submissions_folder / name).unlink(missing_ok=True)


class ExplainingExecutor(submitit.SlurmExecutor):
    """submitit's SlurmExecutor that says what is wrong: its first submission is refused when no node
    of the partition can ever run such a job (slurm/capacity.py), and an sbatch refusal becomes one
    `SbatchRefused` line with the likely fix (not submitit's traceback). Either way nothing is left
    behind: not the files submitit writes before calling sbatch, not an empty experiment folder."""

    def __init__(self, folder: Path, cluster: Cluster, max_num_timeout: int):
        super().__init__(folder=folder, max_num_timeout=max_num_timeout)
        self.lab_cluster = cluster
        self.capacity_checked = False

    def _internal_process_submissions(self, delayed_submissions):
        """Every submission goes through here: `executor.batch()` and `map_array` alike."""
        submissions_folder = submitit.core.utils.JobPaths.get_first_id_independent_folder(self.folder)
        if not self.capacity_checked:  # here, not in make_executor: building an executor asks nothing of a cluster
            try:
                check_capacity(self.lab_cluster)
            except SettingsError:
                discard_empty_folders(submissions_folder.parent)
                raise
            self.capacity_checked = True
        before = set(os.listdir(submissions_folder)) if submissions_folder.is_dir() else set()
        printed = io.StringIO()  # submitit prints sbatch's refusal to stderr: it goes into our one line instead
        try:
            with contextlib.redirect_stderr(printed):
                jobs = super()._internal_process_submissions(delayed_submissions)
            sys.stderr.write(printed.getvalue())  # accepted: whatever sbatch said is still shown
            return jobs
        except submitit.core.utils.FailedJobError as error:
            discard_temporary_files(submissions_folder, before)
            discard_empty_folders(submissions_folder.parent)
            raise SbatchRefused(explain_refusal(str(error), self.lab_cluster)) from None


def make_executor(plan: Plan, slurm_path: Path) -> ExplainingExecutor:
    """The submitit executor of `plan`'s Slurm options (logs under `slurm_path`: the experiment's slurm folder);
    its first submission checks that a node of the partition can run such a job at all."""
    cluster = plan.cluster
    executor = ExplainingExecutor(slurm_path / "%j", cluster, cluster.max_requeues)
    # The job imports this repository's packages (the pickled TrainJob): put it first on PYTHONPATH.
    setup = [f'export PYTHONPATH="{REPOSITORY}${{PYTHONPATH:+:$PYTHONPATH}}"',
             *filter(None, (line.strip() for line in cluster.job_setup.split(";")))]
    parameters = dict(job_name=f"lab-{plan.experiment}", time=cluster.time_minutes, cpus_per_task=cluster.cpus,
                      signal_delay_s=cluster.signal_delay_seconds, array_parallelism=cluster.array_parallelism,
                      setup=setup, additional_parameters=sbatch_parameters(cluster.sbatch_extra))
    optional = {"partition": cluster.partition, "account": cluster.account, "qos": cluster.qos,
                "constraint": cluster.constraint, "gpus_per_node": cluster.gpus,
                "mem": f"{cluster.mem_gb}GB" if cluster.mem_gb else None}
    parameters.update({key: value for key, value in optional.items() if value})
    executor.update_parameters(**parameters)
    return executor


def check_submission(jobs: int, runs: int, limits: dict[str, int], experiment_dir: Path, cluster=None) -> None:
    """Refuse what no array split can fix (more jobs than MaxJobCount); warn of results on a node's /tmp
    and of a signal that may come before the job's Python is listening."""
    # Slurm may send --signal up to 60 s early: a job whose limit leaves less than that after the
    # delay can be signalled while starting, and a process not yet listening dies of SIGUSR2.
    if cluster is not None and cluster.time_minutes * 60 - cluster.signal_delay_seconds < 60:
        logger.warning("time=%s leaves less than 60 s before SIGUSR2 (signal_delay_seconds=%d): a job may be signalled "
                       "while it starts and end without being requeued; its runs then show as lost", cluster.time,
                       cluster.signal_delay_seconds)
    if jobs > limits["MaxJobCount"]:
        raise SettingsError(f"{jobs} jobs exceed the cluster's MaxJobCount={limits['MaxJobCount']}, which no split "
                            f"avoids; accepted: fewer runs, or runs_per_job >= {-(-runs // limits['MaxJobCount'])}")
    if limits["nodes"] > 1 and Path(experiment_dir).resolve().is_relative_to("/tmp"):
        logger.warning("out_dir %s is under /tmp on a %d-node cluster: other nodes will not see it", experiment_dir,
                       limits["nodes"])


def submit_to_slurm(plan: Plan, experiment_dir: Path, ordered: list[list[RunView]], views: list[RunView]) -> int:
    """One submitit array per chunk of at most MaxArraySize packs; job ids recorded in the run folders.
    Runs whose parent is launched now, or still queued or running, are submitted with
    `--dependency=afterok:<its job>` (and `--kill-on-invalid-dep`, so a cancelled parent does not
    leave them pending for ever: they show as lost and are launched again), wave after wave."""
    if shutil.which("sbatch") is None:
        raise SettingsError("launcher=slurm but there is no sbatch here; accepted here: launcher=inline or local")
    job_of: dict[str, str] = {}  # run id -> the job that will train it
    by_id = {view.settings.run_id: view for view in views}
    first = ordered[0] if ordered else []
    groups = waiting_groups(ordered[1:], by_id, {view.settings.run_id for view in first})
    waiting = [view for _, children in groups for view in children]
    packs_total = sum(len(pack_runs(group, runs_in_job(plan))) for group in (first, *(c for _, c in groups)))
    if not packs_total:
        print(f"submitted 0 jobs: every run of experiment {plan.experiment!r} is done, queued or running")
        return 0
    limits = cluster_limits()
    check_submission(packs_total, len(first) + len(waiting), limits, experiment_dir, plan.cluster)
    executor = make_executor(plan, ExperimentFolder(experiment_dir).slurm_path)
    execution = absolute_execution(plan)
    arrays = _submit_arrays(executor, experiment_dir, first, plan, limits, execution, job_of)
    extra = sbatch_parameters(plan.cluster.sbatch_extra)
    try:
        for parent_id, children in groups:  # in wave order: a parent's job id is known before its children's
            parent_job = job_of.get(parent_id) or by_id[parent_id].job_id
            executor.update_parameters(dependency=f"afterok:{parent_job}",
                                       additional_parameters={**extra, "kill_on_invalid_dep": "yes"})
            arrays += _submit_arrays(executor, experiment_dir, children, plan, limits, execution, job_of)
    except SbatchRefused as refusal:
        if not job_of:
            raise
        # The first arrays went through: say so, they are queued and recorded in their run folders.
        raise SbatchRefused(f"{refusal} (the {len(job_of)} run(s) submitted before it stay queued, first job "
                            f"{next(iter(job_of.values()))})") from None
    first_job = next(iter(job_of.values())).split("_")[0]
    print(f"submitted {packs_total} job(s) for {len(first) + len(waiting)} run(s) in {arrays} array(s) (first array job "
          f"{first_job}); logs in {ExperimentFolder(experiment_dir).slurm_path}; results in "
          f"{ExperimentFolder(experiment_dir).runs_path}")
    if waiting:
        print(f"{len(waiting)} run(s) wait for their parent run's job (afterok)")
    print(f"follow with: python train.py status experiment={plan.experiment_argument()} out_dir={plan.execution.out_dir} ...")
    return 0


def waiting_groups(later: list[list[RunView]], by_id: dict[str, RunView], submitted: set[str]) -> list[tuple[str, list]]:
    """[(parent id, its children)] of the later waves, in wave order, for the children whose parent has a
    job (submitted now, or queued or running); the others are said and left (no job to depend on)."""
    groups: list[tuple[str, list]] = []
    for wave in later:
        by_parent: dict[str, list[RunView]] = {}
        for view in wave:
            parent = parent_view(view, by_id)
            if parent.settings.run_id in submitted or parent.job_id:
                by_parent.setdefault(parent.settings.run_id, []).append(view)
            else:  # its parent trains outside Slurm right now (or waits on such a run): no job to depend on
                print(f"skipping {view.settings.run_id}: its parent run {parent.settings.run_id} is training outside "
                      "Slurm; submit again once it is done")
        groups += list(by_parent.items())
        submitted |= {view.settings.run_id for _, children in by_parent.items() for view in children}
    return groups


def _submit_arrays(executor, experiment_dir: Path, chosen: list[RunView], plan: Plan, limits: dict[str, int],
                   execution: dict, job_of: dict[str, str]) -> int:
    """Submit `chosen` packed and split into arrays; record each run's job (folder and `job_of`).
    Returns the number of arrays."""
    arrays = split_arrays(pack_runs(chosen, runs_in_job(plan)), limits["MaxArraySize"])
    for array in arrays:
        with executor.batch():
            jobs = [executor.submit(TrainJob(), str(experiment_dir), [view.settings.to_record() for view in pack],
                                    execution, plan.cluster.runs_in_parallel) for pack in array]
        for job, pack in zip(jobs, array):
            for view in pack:
                view.folder.write_job(job.job_id)
                job_of[view.settings.run_id] = job.job_id
    return len(arrays)
