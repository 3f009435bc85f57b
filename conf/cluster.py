"""sh train.sh [experiment=NAME] [key=value ...] partition=gpu time=24:00:00 gpus=1 — launch options.

How a grid is launched: one after another in this process (`launcher=inline`, what a plain
`python train.py` does), in parallel worker processes (`launcher=local workers=N`), or as Slurm job
arrays through submitit (`launcher=slurm`, what `sh train.sh` does). Like `Execution`, none of this
ever enters a run id.
"""

import re
from dataclasses import dataclass

from conf.global_settings import SettingsError, check_fields, setting

# ---- SITE: edit these for your cluster (the defaults of every Slurm option below) --------------
SITE = {
    "partition": "",  # "" = the cluster's default partition
    "account": "",
    "qos": "",
    "constraint": "",  # e.g. "a100|h100"
    "time": "04:00:00",  # per job; a run longer than this is requeued and resumes (exact resume)
    "gpus": 1,
    "cpus": 8,
    "mem_gb": 32,
    "job_setup": "",  # shell lines run before Python in every job, ';'-separated, e.g. "module load cuda/12.4"
}
# --------------------------------------------------------------------------------------------------

TIME_FORMAT = re.compile(r"^(?:(\d+)-)?(?:(\d+):)?(\d+)(?::(\d+))?$")


def time_in_minutes(text: str) -> int:
    """Slurm's time formats (minutes, M:S, H:M:S, D-H, D-H:M, D-H:M:S) -> whole minutes, rounded up."""
    match = TIME_FORMAT.match(text.strip())
    if not match:
        raise SettingsError(f"time={text!r} cannot be read; accepted: minutes, H:M:S or D-H:M:S, e.g. 24:00:00")
    days, first, second, third = match.groups()
    parts = [int(part) for part in (first, second, third) if part is not None]
    if days is not None:  # D-H, D-H:M, D-H:M:S
        hours, minutes, seconds = (parts + [0, 0])[:3]
    elif len(parts) == 3:
        hours, minutes, seconds = parts
    elif len(parts) == 2:  # M:S
        hours, (minutes, seconds) = 0, parts
    else:
        hours, minutes, seconds = 0, parts[0], 0
    total = ((int(days or 0) * 24 + hours) * 60 + minutes) * 60 + seconds
    if total <= 0:
        raise SettingsError(f"time={text!r} is out of range; accepted: a positive duration")
    return -(-total // 60)


def sbatch_parameters(text: str) -> dict[str, str | bool]:
    """'reservation=r1;exclusive' -> {"reservation": "r1", "exclusive": True} (extra #SBATCH lines)."""
    parameters: dict[str, str | bool] = {}
    for item in filter(None, (part.strip() for part in text.split(";"))):
        key, separator, value = item.partition("=")
        if not re.fullmatch(r"[a-z][a-z0-9_-]*", key.strip()):
            raise SettingsError(f"sbatch_extra item {item!r} cannot be read; accepted: name=value;name2 (sbatch long options)")
        parameters[key.strip().replace("-", "_")] = value.strip() if separator else True
    return parameters


@dataclass(frozen=True)
class Cluster:
    """Launch options. Slurm ones map onto sbatch options through submitit."""

    launcher: str = setting("inline", "inline: one run after another here; local: worker processes; slurm: job arrays", choices=("inline", "local", "slurm"))
    workers: int = setting(2, "local: runs at a time", minimum=1)
    retry: str = setting("none", "failed: also relaunch failed and diverged runs (done, queued and running ones never)", choices=("none", "failed"))
    # A grid is counted from its sweeps before any run is built (conf/cli.py, grid_size): a typo such as
    # seed=0,...,999 x depth=... x width=... is refused at once instead of expanding in silence.
    max_runs: int = setting(10000, "refuse a grid of more runs than this (counted before duplicates are removed), before any run is built", minimum=1)
    partition: str = setting(SITE["partition"], "slurm: partition ('' = the cluster's default)")
    account: str = setting(SITE["account"], "slurm: account to charge ('' = none)")
    qos: str = setting(SITE["qos"], "slurm: quality of service ('' = none)")
    constraint: str = setting(SITE["constraint"], "slurm: node features, e.g. a100 ('' = any)")
    time: str = setting(SITE["time"], "slurm: time limit per job (minutes, H:M:S or D-H:M:S); longer runs are requeued")
    gpus: int = setting(SITE["gpus"], "slurm: GPUs per job", minimum=0)
    cpus: int = setting(SITE["cpus"], "slurm: CPUs per job", minimum=1)
    mem_gb: int = setting(SITE["mem_gb"], "slurm: memory per job in GB (0 = the cluster's default)", minimum=0)
    array_parallelism: int = setting(64, "slurm: array tasks running at once (the %N throttle)", minimum=1)
    runs_per_job: int = setting(1, "slurm: runs packed one after another into each job (for short runs)", minimum=1)
    runs_in_parallel: int = setting(1, "slurm: runs trained at once in each job, as processes sharing its GPUs (CUDA MPS where the node has it); a job takes runs_in_parallel × runs_per_job runs", minimum=1)
    signal_delay_seconds: int = setting(120, "slurm: SIGUSR2 this long before the time limit (save, then requeue)", minimum=1)
    max_requeues: int = setting(20, "slurm: times a job may be requeued after its time limit", minimum=0)
    sbatch_extra: str = setting("", "slurm: more sbatch options, ';'-separated, e.g. reservation=r1;exclusive")
    job_setup: str = setting(SITE["job_setup"], "slurm: shell lines before Python in each job, ';'-separated")

    def __post_init__(self):
        check_fields(self)
        time_in_minutes(self.time)
        sbatch_parameters(self.sbatch_extra)

    @property
    def time_minutes(self) -> int:
        return time_in_minutes(self.time)
