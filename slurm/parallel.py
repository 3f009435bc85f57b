"""Several runs of one job at once (`runs_in_parallel=k`): k child processes sharing the job's GPUs.

A small model at batch 128 (CONV-3-64, VGG-8) keeps a large GPU mostly idle, so a job trains k runs
at once. Its pack (k × runs_per_job runs) is shared out round-robin; each child process trains its
share one run after another (`slurm.job.train_share`), every run under its own lock in its own
folder, so exact resume is untouched. Each child gets its own CUDA_VISIBLE_DEVICES (round-robin
over the job's GPUs) and cores ÷ k torch threads at a run's first start (a resume keeps its run's
count: loop.run_threads). When two or more children share a GPU and the
node has CUDA MPS, a control daemon with this job's own pipe and log folders runs while they train:
under MPS the kernels of several processes run on the GPU at the same time, instead of the GPU
switching between their contexts. Without MPS they still share it, time-sliced.

Signals: while the children run, SIGUSR2/SIGTERM to the job's process are forwarded to every child
(Slurm may signal the children directly too; a second copy changes nothing). Each child saves and
stops; once all have, the caller raises `loop.Interrupted` once, so the job is requeued once
and every unfinished run of it resumes in the next start. `worker_pool` gives launcher=local's
workers the same GPU spreading.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

from training import devices, loop

logger = logging.getLogger(__name__)
REPOSITORY = Path(__file__).resolve().parent.parent
STOP_SIGNALS = (signal.SIGUSR2, signal.SIGTERM)
CHILD = "import sys; from slurm.job import train_share; sys.exit(train_share(sys.argv[1]))"


def share_out(records: list, processes: int) -> list[list]:
    """The pack shared round-robin among at most `processes` children (none empty): a short last pack
    still trains in parallel, e.g. 4 runs for 2 children of 3 runs each -> [r0, r2], [r1, r3]."""
    return [records[index::processes] for index in range(min(processes, len(records)))]


def cpus_per_process(processes: int, cpus: int) -> int:
    """Each of `processes` processes' share of `cpus` CPUs: a run's thread count at its first start unless
    threads= says otherwise. Each process otherwise takes every core, and on a busy machine OpenMP
    threads spin-wait on each other (a 2-thread run took 210 s instead of 15 s on 2 cores with the
    other one busy)."""
    return max(1, cpus // processes)


def visible_gpus(device: str) -> list[str]:
    """The GPUs this process may hand out, as CUDA_VISIBLE_DEVICES entries (indices or UUIDs); [] with
    device=cpu or none. Read without touching CUDA: the parent needs no CUDA context of its own (the
    children make theirs, as MPS clients when the daemon runs)."""
    if device == "cpu":
        return []
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    if listed is not None:
        entries = [entry.strip() for entry in listed.split(",") if entry.strip()]
        return [] if not entries or entries[0].startswith("-") or entries[0] == "NoDevFiles" else entries
    if shutil.which("nvidia-smi") is None:
        return []
    try:
        listing = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=60).stdout
    except (subprocess.SubprocessError, OSError):
        return []
    return [str(index) for index, _ in enumerate(line for line in listing.splitlines() if line.startswith("GPU "))]


def gpu_environments(processes: int, gpus: list[str], mps: dict[str, str]) -> list[dict[str, str]]:
    """Per process: CUDA_VISIBLE_DEVICES round-robin over `gpus`, plus the MPS client variables. An MPS
    client names the daemon's devices by position: the daemon renumbers the job's CUDA_VISIBLE_DEVICES
    (NVIDIA's MPS guide, appendix "Environment Variables"); without MPS the job's own entries."""
    if not gpus:
        return [{} for _ in range(processes)]
    names = [str(position) for position in range(len(gpus))] if mps else gpus
    return [{"CUDA_VISIBLE_DEVICES": names[index % len(gpus)], **mps} for index in range(processes)]


@contextlib.contextmanager
def mps_daemon(folder: Path, gpus: list[str], processes: int):
    """Yield the MPS client variables while a control daemon of this job runs, and stop it at the end.
    Yields {} (plain time-sliced sharing) when no two processes share a GPU, the node has no
    nvidia-cuda-mps-control, the site runs MPS already (CUDA_MPS_PIPE_DIRECTORY is set), or the
    daemon does not start."""
    control = shutil.which("nvidia-cuda-mps-control")
    if not gpus or processes <= len(gpus) or control is None or "CUDA_MPS_PIPE_DIRECTORY" in os.environ:
        yield {}
        return
    mps = {"CUDA_MPS_PIPE_DIRECTORY": str(folder / "mps-pipe"), "CUDA_MPS_LOG_DIRECTORY": str(folder / "mps-log")}
    for path in mps.values():
        Path(path).mkdir(parents=True, exist_ok=True)
    environment = {**os.environ, **mps}
    try:
        started = subprocess.run([control, "-d"], env=environment, capture_output=True, text=True, timeout=60)
        problem = started.returncode and (started.stderr.strip() or f"exit code {started.returncode}")
    except (subprocess.SubprocessError, OSError) as error:
        problem = str(error)
    if problem:
        logger.warning("CUDA MPS did not start (%s): %d processes share %d GPU(s) without it", problem, processes,
                       len(gpus))
        yield {}
        return
    logger.info("CUDA MPS daemon started for %d processes on %d GPU(s)", processes, len(gpus))
    try:
        yield mps
    finally:
        try:
            subprocess.run([control], input="quit\n", env=environment, capture_output=True, text=True, timeout=60)
        except (subprocess.SubprocessError, OSError) as error:
            logger.warning("could not stop the CUDA MPS daemon (%s)", error)


@contextlib.contextmanager
def forwarding_stops(children: list[subprocess.Popen]):
    """While the children run, SIGUSR2/SIGTERM to this process go on to every child still running (each
    saves and stops). Yields the signals received, in order."""
    received: list[int] = []

    def forward(number, _frame):
        received.append(number)
        for child in children:
            child.send_signal(number)  # a no-op for a child already reaped

    previous = {number: signal.signal(number, forward) for number in STOP_SIGNALS}
    try:
        yield received
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


def stop_signal(received: list[int], codes: list[int]) -> int | None:
    """The signal that stopped the job: the first this process received, else one that ended a child
    (exit code 128 + n from train_share, or -n when it came before the child listened); None."""
    if received:
        return received[0]
    for code in codes:
        for number in STOP_SIGNALS:
            if code in (128 + number, -number):
                return number
    return None


def run_children(experiment_dir: str | Path, shares: list[list[dict]], execution_record: dict
                 ) -> tuple[list[int | None], int | None]:
    """Train every share in its own child process, all at once, and wait for all of them. Returns each
    share's exit code (None: not started, the job was stopped first) and the stop signal (None)."""
    gpus = visible_gpus(execution_record.get("device", "auto"))
    cpus = cpus_per_process(len(shares), devices.cpus_given())
    threads = execution_record.get("threads") or cpus  # at a first start; a resume keeps its run's count
    children: list[subprocess.Popen] = []
    with tempfile.TemporaryDirectory(prefix="lab-parallel-", ignore_cleanup_errors=True) as folder, \
            mps_daemon(Path(folder), gpus, len(shares)) as mps, forwarding_stops(children) as received:
        logger.info("training %d runs in %d processes at once (%d torch threads each at a first start%s)",
                    sum(map(len, shares)), len(shares), threads, f", GPUs {', '.join(gpus)}" if gpus else "")
        try:
            for index, (share, environment) in enumerate(zip(shares, gpu_environments(len(shares), gpus, mps))):
                if received:
                    break  # stopped while starting: the shares not started stay as they are
                spec = Path(folder) / f"share-{index}.json"
                spec.write_text(json.dumps({"experiment_dir": str(experiment_dir), "records": share,
                                            "execution": execution_record, "cpus": cpus}))
                children.append(spawn(spec, environment))
            if received:  # a child started while the stop was being forwarded missed it; the others ignore a copy
                for child in children:
                    child.send_signal(received[0])
            codes = [child.wait() for child in children]
        except BaseException:  # a child could not start, say: the others must not train on unwatched
            for child in children:
                child.send_signal(signal.SIGTERM)  # each saves and stops
            for child in children:
                child.wait()
            raise
    return codes + [None] * (len(shares) - len(codes)), stop_signal(received, codes)


def spawn(spec: Path, environment: dict[str, str]) -> subprocess.Popen:
    """A child that trains the share in `spec`, in this job's process group (Slurm's signals and
    scancel reach it), its output in the job's log."""
    path = os.environ.get("PYTHONPATH")
    variables = {**os.environ, **environment, "PYTHONPATH": str(REPOSITORY) + (f":{path}" if path else "")}
    return subprocess.Popen([sys.executable, "-c", CHILD, str(spec)], env=variables, cwd=REPOSITORY)


def stop_at_once() -> None:
    """In a child: SIGUSR2/SIGTERM that come outside loop.run's own handler (while the child
    starts, between runs) raise loop.Interrupted at once, as nothing is unsaved there, instead of
    being lost or killing the process (SIGUSR2's default); loop.run puts this back on its way out.
    Raises once: a later copy (Slurm signals the children too) must not break the stop under way."""
    stopping: list[int] = []

    def stop(number, _frame):
        if not stopping:
            stopping.append(number)
            raise loop.Interrupted(number)

    for number in STOP_SIGNALS:
        signal.signal(number, stop)


def ignore_stops() -> None:
    """In a child that is stopping: later copies of the stop (Slurm's and the parent's) are ignored."""
    for number in STOP_SIGNALS:
        signal.signal(number, signal.SIG_IGN)


def adopt_environment(queue) -> None:
    """A local worker's initializer: take the next GPU environment before anything touches CUDA."""
    os.environ.update(queue.get())


@contextlib.contextmanager
def worker_pool(workers: int, device: str):
    """launcher=local: a pool of `workers` spawned processes spread over the visible GPUs
    (round-robin), under MPS when several share one; plain processes on a CPU."""
    gpus = visible_gpus(device)
    context = get_context("spawn")
    with tempfile.TemporaryDirectory(prefix="lab-workers-", ignore_cleanup_errors=True) as folder, \
            mps_daemon(Path(folder), gpus, workers) as mps:
        queue = context.SimpleQueue()
        for environment in gpu_environments(workers, gpus, mps):
            queue.put(environment)
        with ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=adopt_environment,
                                 initargs=(queue,)) as pool:
            yield pool
