"""Several runs at once in one job (runs_in_parallel, slurm/parallel.py): how a pack is shared out and
GPUs handed round; a signal to the job's process alone reaches every child, which saves; on the real
one-node Slurm (tests/test_slurm.py's cluster), one job trains 2 × 2 runs, each child on its share of the
job's CPUs, is requeued once by SIGUSR2 and ends bitwise equal to the same runs trained inline with that
thread count."""

import dataclasses
import os
import signal
import subprocess
import sys
import threading
import time

import pytest
import torch

from slurm.parallel import gpu_environments, share_out, visible_gpus
from tests.conftest import REPOSITORY, read_json, tiny_words
from tests.test_slurm import (  # noqa: F401 (fixtures)
    runs_of,
    signal_pending,
    slurm,
    slurm_logs,
    stop_when_training,
    submit,
    wait_for_jobs,
    wait_until,
)

# 62 steps per epoch. The Slurm grid's 6-epoch runs (372 steps) are stopped at their first saved state, before the
# signal (tests.test_slurm.stop_when_training); the grid adds a 1-epoch run behind each long one.
LONG = ["depth=3", "width=16", "synthetic_train_size=2000", "resume_every_seconds=3600"]
NODE = ["gpus=0", "cpus=2", "mem_gb=0", "time=10"]  # the test node: 2 CPUs, no GPU; one thread per child


def test_a_pack_is_shared_round_robin_and_gpus_handed_round():
    assert share_out(list(range(4)), 2) == [[0, 2], [1, 3]]
    assert share_out(list(range(5)), 2) == [[0, 2, 4], [1, 3]]
    assert share_out([0], 3) == [[0]]
    assert gpu_environments(2, [], {}) == [{}, {}]
    plain = gpu_environments(3, ["0", "2"], {})
    assert [environment["CUDA_VISIBLE_DEVICES"] for environment in plain] == ["0", "2", "0"]
    # under MPS the daemon renumbers the job's GPUs: its clients name them 0, 1, ...
    mps = {"CUDA_MPS_PIPE_DIRECTORY": "/tmp/pipe", "CUDA_MPS_LOG_DIRECTORY": "/tmp/log"}
    shared = gpu_environments(3, ["0", "2"], mps)
    assert [environment["CUDA_VISIBLE_DEVICES"] for environment in shared] == ["0", "1", "0"]
    assert all(environment["CUDA_MPS_PIPE_DIRECTORY"] == "/tmp/pipe" for environment in shared)


def test_visible_gpus_follow_cuda_visible_devices(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,GPU-1a2b")
    assert visible_gpus("auto") == ["3", "GPU-1a2b"] and visible_gpus("cpu") == []
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert visible_gpus("cuda") == []


def test_a_signal_to_the_parent_alone_stops_every_child_after_it_saved(tmp_path):
    """This process is the job's: a thread sends it SIGUSR2 once both children have saved a state (they
    cannot get it from anywhere else), and train_pack_in_parallel must stop only after both saved."""
    from conf import parse_arguments
    from slurm.job import train_pack_in_parallel
    from training.loop import Interrupted

    plan = parse_arguments(tiny_words(tmp_path, *LONG, "epochs=100", "seed=0,1"))
    signaller = threading.Thread(target=lambda: (wait_until_training(tmp_path, runs=2),
                                                 os.kill(os.getpid(), signal.SIGUSR2)), daemon=True)
    signaller.start()
    with pytest.raises(Interrupted) as stopped:
        train_pack_in_parallel(tmp_path / "default", [settings.to_record() for settings in plan.grid],
                               dataclasses.asdict(plan.execution), 2)
    assert stopped.value.signal_number == signal.SIGUSR2
    for run in runs_of(tmp_path):
        status = read_json(run / "status.json")
        assert status["state"] == "interrupted" and status["reason"] == "signal SIGUSR2", status
        assert 0 < status["iteration"] < status["total_iterations"]


def wait_until_training(out_dir, runs: int, timeout: float = 180) -> list:
    """Until `runs` runs are training and each has saved a resumable state (iteration > 0 in its
    status: written right after the state); returns their folders."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        folders = runs_of(out_dir) if (out_dir / "default" / "runs").exists() else []
        training = [run for run in folders if (run / "status.json").exists()
                    and read_json(run / "status.json").get("state") == "running"
                    and read_json(run / "status.json").get("iteration", 0) > 0]
        if len(training) >= runs:
            return training
        time.sleep(0.2)
    raise AssertionError(f"{runs} runs were not training after {timeout} s")


@pytest.mark.slow
def test_one_job_trains_runs_at_once_and_a_requeue_resumes_them_bitwise(slurm, tmp_path,  # noqa: F811
                                                                     stop_when_training):  # noqa: F811
    from conf import parse_arguments

    grid = [*LONG, "epochs=6,1", "seed=0,1"]  # long s0, long s1, short s0, short s1
    # no threads= in the job: each child takes its share of the job's 2 CPUs (1), which the reference asks for
    shared = [word for word in tiny_words(tmp_path / "cluster", *grid) if word != "threads=1"]
    first = submit(*shared, *NODE, "runs_in_parallel=2", "runs_per_job=2")
    assert "submitted 1 job(s) for 4 run(s)" in first.stdout
    runs = runs_of(tmp_path / "cluster")
    (job_id,) = {read_json(run / "job.json")["job_id"] for run in runs}
    # the two long runs, one per child (each child trains its long run first): both stopped at their first saved
    # state, so the signal finds both mid-run on any machine (stop_when_training); they go on once it is pending
    interrupted = [tmp_path / "cluster" / "default" / "runs" / settings.run_id
                   for settings in parse_arguments(shared).grid[:2]]
    children = stop_when_training(*interrupted)
    subprocess.run(["scancel", "--signal=USR2", job_id], check=True)  # as Slurm does before a time limit
    for child in children:  # from Slurm to every process of the job, and forwarded by the job's own
        wait_until(lambda child=child: signal_pending(child, signal.SIGUSR2), 60, f"SIGUSR2 not delivered to {child}")
    for child in children:
        os.kill(child, signal.SIGCONT)
    reference = subprocess.Popen([sys.executable, str(REPOSITORY / "train.py"), *tiny_words(tmp_path / "reference", *grid)],
                                 cwd=REPOSITORY, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wait_for_jobs(tmp_path / "cluster")
    assert reference.wait(timeout=300) == 0, reference.stderr.read()
    statuses = [read_json(run / "status.json") for run in runs]
    assert [status["state"] for status in statuses] == ["done"] * 4 and {s["job_id"] for s in statuses} == {job_id}
    assert {status["environment"]["threads"] for status in statuses} == {1}
    assert not any("environment_changes" in status for status in statuses)
    assert len({status["pid"] for status in statuses}) > 1  # trained by more than one process
    log = "".join(slurm_logs(tmp_path / "cluster").values())
    assert log.count("Requeued job") == 1, log[-3000:]
    assert all(f"{run.name}: resuming at iteration" in log for run in interrupted), log[-3000:]
    for run, reference_run in zip(runs, runs_of(tmp_path / "reference")):
        assert run.name == reference_run.name
        expected = {name: entry["sha256"] for name, entry in read_json(reference_run / "manifest.json")["files"].items()}
        assert {name: entry["sha256"] for name, entry in read_json(run / "manifest.json")["files"].items()} == expected
        weights = torch.load(run / "checkpoints" / max(expected), weights_only=True)["model"]
        reference_weights = torch.load(reference_run / "checkpoints" / max(expected), weights_only=True)["model"]
        assert all(torch.equal(weights[name], reference_weights[name]) for name in reference_weights)
