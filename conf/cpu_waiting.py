"""How torch's idle CPU threads wait for work, set before torch is imported (train.py and analysis.py do it first).

    from conf.cpu_waiting import wait_briefly
    wait_briefly()            # GOMP_SPINCOUNT=1000 unless the environment already says how to wait
    import torch

torch's CPU kernels run on GNU OpenMP (libgomp), which reads OMP_WAIT_POLICY and GOMP_SPINCOUNT once, when it
is loaded. Unset, a thread that runs out of work spins for about 3 ms (300,000 turns) before it sleeps: on a
machine whose cores are busy with other processes, two threads then spin for CPU time the other one needs,
and the analysis took 2–3× as long as on one thread (issue 26; benchmarks/threads_under_load.py: 1.99×, and
3× the CPU time). PASSIVE (sleep at once) fixes that (0.99×) but loses what a second free core gives the
analysis, whose many small parallel steps then pay a wake-up each (1.02× one thread idle, against 0.72×
spinning). A short spin, 1,000 turns (about 10 µs), is close to the best of both: 0.72× idle, 1.08× under
load for the analysis; 0.87× and 1.04× for training (docs/benchmarks.md, medians of 3 rounds).
How threads wait changes no computed bit (tests/test_cpu_waiting.py): it is recorded in each run's
environment, never counted as an environment change. A policy the user sets is kept.
"""

from __future__ import annotations

import os
import sys

POLICY = "OMP_WAIT_POLICY"
SPIN_COUNT = "GOMP_SPINCOUNT"
DEFAULT_SPIN_COUNT = "1000"


def wait_briefly() -> None:
    """GOMP_SPINCOUNT=1000 in this process's environment (and so its children's: Slurm jobs, workers), unless
    OMP_WAIT_POLICY or GOMP_SPINCOUNT is set already, or torch is loaded (its runtime has read the environment
    then: setting it now would make `describe` say what is not in effect)."""
    if POLICY not in os.environ and SPIN_COUNT not in os.environ and "torch" not in sys.modules:
        os.environ[SPIN_COUNT] = DEFAULT_SPIN_COUNT


def describe() -> str:
    """The waiting in effect, as the environment record holds it: `GOMP_SPINCOUNT=1000`, `OMP_WAIT_POLICY=PASSIVE`,
    both, or `libgomp's default (spin about 3 ms)`."""
    parts = [f"{name}={os.environ[name]}" for name in (POLICY, SPIN_COUNT) if name in os.environ]
    return " ".join(parts) or "libgomp's default (spin about 3 ms)"
