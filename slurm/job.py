"""The unit of work every launcher runs: a pack of runs, one after another (loop.run each).

On Slurm it is wrapped in `TrainJob`, a submitit `Checkpointable`. While a run trains, loop.run's
own handler holds SIGUSR2: the loop finishes its step, saves the resumable state and raises
`Interrupted`. Only then is submitit's handler called, which pickles the job's *arguments* (the
settings, never a state path), requeues this array element alone (`scontrol requeue 123_4`) and
exits. On every start the runs discover their newest good state in their folders.

With `runs_in_parallel=k` the pack is shared among k child processes that train at once
(`train_pack_in_parallel`, slurm/parallel.py): the job's process forwards the signal to them, waits
until every one has saved, and requeues the job once.
"""

from __future__ import annotations

import json
import logging
import signal
from pathlib import Path

import submitit

from conf import Execution, Settings
from data import DataError
from folders import ExperimentFolder, RunFolder, RunFolderError
from slurm import parallel
from training import loop
from utils import describe_environment_error, setup_logging

logger = logging.getLogger(__name__)
FINISHED = ("done", "failed", "diverged")


def _folder(experiment_dir: str | Path, record: dict) -> RunFolder:
    return ExperimentFolder(experiment_dir).run(Settings.from_record(record).run_id)


def train_pack(experiment_dir: str | Path, records: list[dict], execution_record: dict, cpus: int = 0) -> dict[str, str]:
    """Train each run (settings records) under `<experiment_dir>/runs/`; a failure is recorded in the
    run's status and the pack goes on. `cpus`: this process's share of the machine's CPUs (a local
    worker's, a parallel child's; 0 = what the process was given, devices.cpus_given), a run's thread
    count at its first start. Returns {run_id: done | diverged | failed}."""
    execution = Execution(**execution_record)
    setup_logging(execution.log_level)  # in a job or worker process: our lines reach its log file
    outcomes = {}
    for record in records:
        settings, folder = Settings.from_record(record), _folder(experiment_dir, record)
        try:
            outcomes[settings.run_id] = loop.run(settings, folder.path, execution, cpus=cpus)
        except loop.Interrupted:
            raise
        except OSError as error:  # the environment (a full disk, say): resumable once it is fixed
            reason = describe_environment_error(error)
            logger.error("%s stopped: %s", settings.run_id, reason)
            outcomes[settings.run_id] = _record_stop(folder, "interrupted", reason)
        except (RunFolderError, DataError) as error:  # a damaged file or missing data: one line, no traceback
            logger.error("%s failed: %s", settings.run_id, error)
            outcomes[settings.run_id] = _record_stop(folder, "failed", str(error))
        except Exception as error:  # a bug: the traceback goes to the log, the status keeps the reason
            logger.exception("%s failed", settings.run_id)
            outcomes[settings.run_id] = _record_stop(folder, "failed", f"{type(error).__name__}: {error}")
    return outcomes


def train_share(spec_path: str) -> int:
    """`python -c "...train_share(spec)"` (slurm/parallel.py starts it): a child trains its share of a
    pack (`spec_path`: a JSON file with the experiment folder, the records, the execution options and
    the child's share of the job's CPUs).
    Returns 0, or 128 + the signal that stopped it once its run saved."""
    try:
        parallel.stop_at_once()
        spec = json.loads(Path(spec_path).read_text())
        train_pack(spec["experiment_dir"], spec["records"], spec["execution"], spec["cpus"])
        return 0
    except loop.Interrupted as interrupted:
        parallel.ignore_stops()
        return 128 + interrupted.signal_number


def train_pack_in_parallel(experiment_dir: str | Path, records: list[dict], execution_record: dict,
                           processes: int) -> dict[str, str]:
    """`train_pack` shared among `processes` child processes that train at once. Returns {run_id:
    done | diverged | failed | interrupted | busy}; raises Interrupted once every child has saved when
    the job was signalled."""
    setup_logging(Execution(**execution_record).log_level)
    shares = parallel.share_out(records, processes)
    codes, stop = parallel.run_children(experiment_dir, shares, execution_record)
    outcomes = {}
    for share, code in zip(shares, codes):
        for record in share:
            folder = _folder(experiment_dir, record)
            state = folder.read_status().get("state", "new")
            if stop is None and code != 0 and state not in FINISHED:  # the process died (killed, out of memory)
                state = _record_stop(folder, "interrupted", f"its training process ended with exit code {code}")
            outcomes[folder.run_id] = state if state in (*FINISHED, "interrupted") else "busy"
    if stop is not None:
        raise loop.Interrupted(stop)
    return outcomes


def _record_stop(folder: RunFolder, state: str, reason: str) -> str:
    """Write the state with its reason when the disk still takes it (a full one may not: the run then
    shows as lost, which is launched again too); the other runs of the pack go on either way, and
    the run's last good state is untouched. An interrupted run resumes on the next launch; a
    failed one only with retry=failed."""
    try:
        folder.write_status(state, reason=reason)
    except OSError as error:
        logger.error("%s: could not record that either (%s)", folder.run_id, describe_environment_error(error))
    return state


class TrainJob(submitit.helpers.Checkpointable):
    """A Slurm array element: `train_pack` (`train_pack_in_parallel` with runs_in_parallel > 1) with
    save-then-requeue on SIGUSR2 (timeout, preemption).

    A restart needs nothing but the arguments: each run discovers its state in its folder."""

    def checkpoint(self, experiment_dir: str, records: list[dict], execution_record: dict, runs_in_parallel: int = 1):
        """Resubmit the pack without its finished runs (a failed run is retried only when asked)."""
        remaining = [record for record in records
                     if _folder(experiment_dir, record).read_status().get("state") not in FINISHED]
        return submitit.helpers.DelayedSubmission(self, experiment_dir, remaining, execution_record, runs_in_parallel)

    def __call__(self, experiment_dir: str, records: list[dict], execution_record: dict,
                 runs_in_parallel: int = 1) -> dict[str, str]:
        try:
            if runs_in_parallel > 1 and len(records) > 1:
                return train_pack_in_parallel(experiment_dir, records, execution_record, runs_in_parallel)
            return train_pack(experiment_dir, records, execution_record)
        except loop.Interrupted as interrupted:
            if interrupted.signal_number != signal.SIGUSR2:
                raise  # SIGTERM: scancel or the end of the job; the state is saved, nothing to requeue
            for record in records:  # the pack's unfinished runs wait in the queue again, not "interrupted"
                folder = _folder(experiment_dir, record)
                if folder.read_status().get("state") not in FINISHED:
                    folder.write_status("queued", reason=f"requeued after SIGUSR2 ({interrupted})")
            submitit_handler = signal.getsignal(signal.SIGUSR2)  # loop.run restored it on the way out
            if callable(submitit_handler):
                submitit_handler(signal.SIGUSR2, None)  # checkpoint() -> scontrol requeue -> exit
            raise
