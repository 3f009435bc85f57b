#!/bin/sh
# sh train.sh [experiment=NAME|FILE.py] [key=value ...] — submit the grid to Slurm as submitit job arrays.
# sh train.sh status [experiment=NAME|FILE.py] [key=value ...] — one row per run: state, iteration, job, reason.
#
# Takes the same arguments as `python train.py` (see `python train.py --help`), plus the launch
# options (partition, time, gpus, cpus, mem_gb, array_parallelism, runs_per_job, retry, ...; site
# defaults in conf/cluster.py). Prints the job ids and where the results go; runs already done,
# queued or running are not submitted again. Works from any directory, and stays in it: a relative
# experiment=path/to/study.py or out_dir= is read from where you call it. PYTHON overrides the
# interpreter (default: this repository's .venv).
set -eu
here=$(cd "$(dirname "$0")" && pwd)
python=${PYTHON:-"$here/.venv/bin/python"}
if [ ! -x "$python" ]; then
    echo "error: no Python environment at $python; run 'make setup' in $here first (or set PYTHON=...)" >&2
    exit 2
fi
if [ "${1:-}" = status ]; then  # `sh train.sh status ...`: train.py's subcommand comes first
    shift
    exec "$python" "$here/train.py" status launcher=slurm "$@"
fi
exec "$python" "$here/train.py" launcher=slurm "$@"
