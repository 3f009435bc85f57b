"""End to end on a real one-node Slurm (slurm/local_cluster.sh; CI installs and starts it): submit
with `sh train.sh`, requeue on the time limit with exact resume, idempotent resubmission, status."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tests.conftest import REPOSITORY, read_json, run_cli, tiny_words

pytestmark = pytest.mark.slow
# Cluster options for the test node: no GPUs, one CPU per job, the node's default memory.
NODE = ["gpus=0", "cpus=1", "mem_gb=0", "time=10"]


@pytest.fixture(scope="session")
def slurm(slurm_cluster):
    """A running Slurm (conftest's slurm_cluster, started at the session's start); else skip, saying why."""
    if slurm_cluster:
        pytest.skip(slurm_cluster)


def submit(*words: str) -> subprocess.CompletedProcess:
    result = subprocess.run(["sh", str(REPOSITORY / "train.sh"), *words], cwd="/", capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr
    return result


def wait_for_jobs(out_dir, timeout: float = 420) -> None:
    """Until no job of these runs is left in the queue."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        queue = set(subprocess.run(["squeue", "--me", "-h", "-r", "-o", "%i"], capture_output=True, text=True)
                    .stdout.split())
        recorded = {read_json(job)["job_id"] for job in out_dir.rglob("job.json")}
        if not recorded & queue:
            return
        time.sleep(0.5)
    raise AssertionError(f"jobs still queued after {timeout} s: {recorded & queue}")


def runs_of(out_dir, experiment="default"):
    return sorted((out_dir / experiment / "runs").iterdir())


def test_train_sh_runs_a_grid_and_resubmits_only_what_is_missing(slurm, tmp_path):
    words = [*tiny_words(tmp_path, "depth=1,2", "label_noise=0,0.2"), *NODE]
    first = submit(*words)
    assert "submitted 4 job(s) for 4 run(s) in 1 array(s)" in first.stdout
    wait_for_jobs(tmp_path)
    for run_dir in runs_of(tmp_path):
        assert read_json(run_dir / "status.json")["state"] == "done"
        manifest = read_json(run_dir / "manifest.json")
        assert sorted(manifest["files"]) == [f"iteration_{i:08d}.pt" for i in manifest["schedule"]]
        for name, entry in manifest["files"].items():
            assert subprocess.run(["sha256sum", str(run_dir / "checkpoints" / name)], capture_output=True,
                                  text=True).stdout.split()[0] == entry["sha256"]
    again = submit(*words)
    assert "submitted 0 jobs" in again.stdout and "skipping 4 done run(s)" in again.stdout
    deleted = runs_of(tmp_path)[1]
    shutil.rmtree(deleted)
    third = submit(*words)
    assert "submitted 1 job(s) for 1 run(s)" in third.stdout
    assert read_json(deleted / "job.json")["job_id"]
    wait_for_jobs(tmp_path)
    assert read_json(deleted / "status.json")["state"] == "done"


# 156 iterations per epoch, 1,560 in all (about 4 s on an idle 2-core machine, 12 s on a busy one): tests stop it
# mid-run (stop_when_training)
LONG_RUN = ["depth=3", "width=16", "epochs=10", "synthetic_train_size=5000", "resume_every_seconds=3600"]


def slurm_logs(out_dir) -> dict[str, str]:
    return {path.name: path.read_text() for path in (out_dir / "default" / "slurm").rglob("*_log.err")}


def wait_until(condition, timeout: float, what, every: float = 0.05):
    """`condition()`'s first true value, polled every `every` s; fails naming `what` (or what `what()` says)
    after `timeout` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"{what() if callable(what) else what} after {timeout} s")


def training_status(run_dir) -> dict | None:
    """The run's status once it trains and has saved a resumable state (iteration > 0: the status is
    written right after the state, at the first scheduled checkpoint, iteration 1); else None."""
    try:
        status = read_json(run_dir / "status.json")
    except FileNotFoundError:
        return None
    return status if status["state"] == "running" and status.get("iteration", 0) > 0 else None


def process_state(pid: int) -> str | None:
    """/proc's one-letter state of `pid` (T: stopped), None once it is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return None


def signal_pending(pid: int, number: int) -> bool:
    """Whether signal `number` was sent to `pid` and not yet handled (as while it is stopped)."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines())
    return bool((int(fields["SigPnd"], 16) | int(fields["ShdPnd"], 16)) >> (number - 1) & 1)


def job_of_process(pid: int) -> str | None:
    """The Slurm job id (`123_4` for an array task, as job.json holds it) that process `pid` runs in."""
    environment = dict(entry.split("=", 1) for entry in Path(f"/proc/{pid}/environ").read_text().split("\0")
                       if "=" in entry)
    if "SLURM_ARRAY_JOB_ID" in environment:
        return f"{environment['SLURM_ARRAY_JOB_ID']}_{environment['SLURM_ARRAY_TASK_ID']}"
    return environment.get("SLURM_JOB_ID")


@pytest.fixture
def stop_when_training():
    """stop(*run_dirs): SIGSTOP the job process training each run as soon as it has saved its first
    resumable state (training_status); their pids, in order. Stopped, a run cannot go on, let alone end:
    whatever comes next (a signal) finds it mid-run, on any machine. Between the status write at iteration 1
    and the stop there is one poll (at most 50 ms) and two small file reads; the runs here are over a thousand
    iterations. At the end every process stopped is sent SIGCONT (a failed test leaves none stopped)."""
    stopped: list[int] = []

    def stop(*run_dirs, timeout: float = 180) -> list[int]:
        pids: dict = {}
        deadline = time.monotonic() + timeout
        while len(pids) < len(run_dirs):
            assert time.monotonic() < deadline, f"runs not training after {timeout} s: {set(run_dirs) - set(pids)}"
            for run_dir in run_dirs:
                status = None if run_dir in pids else training_status(run_dir)
                if status is not None:
                    assert job_of_process(status["pid"]) == read_json(run_dir / "job.json")["job_id"], status
                    os.kill(status["pid"], signal.SIGSTOP)
                    pids[run_dir] = status["pid"]
                    stopped.append(status["pid"])
            time.sleep(0.05)
        for run_dir, pid in pids.items():
            wait_until(lambda pid=pid: process_state(pid) == "T", 30, f"process {pid} not stopped")
            status = read_json(run_dir / "status.json")  # stopped mid-run, not yet signalled
            assert status["state"] == "running" and status["pid"] == pid, status
            assert 0 < status["iteration"] < status["total_iterations"], status
        return [pids[run_dir] for run_dir in run_dirs]

    yield stop
    for pid in stopped:
        if process_state(pid) == "T":
            os.kill(pid, signal.SIGCONT)


def job_elapsed_seconds(job_id: str) -> int:
    """How long the job has run by Slurm's clock (squeue's elapsed time, [D-][H:]M:S)."""
    elapsed = subprocess.run(["squeue", "-h", "-j", job_id, "-o", "%M"], capture_output=True, text=True,
                             check=True).stdout.strip()
    days, _, clock = elapsed.rpartition("-")
    seconds = 0
    for part in clock.split(":"):
        seconds = seconds * 60 + int(part)
    return seconds + int(days or 0) * 86400


def test_time_limit_requeue_resumes_bitwise(slurm, tmp_path, stop_when_training):
    # Slurm's own time-limit signal, waited for as an event, not outlasted by a longer run. A 2-minute limit and
    # SIGUSR2 30 s before it: slurmctld checks time limits every 30 s (PERIODIC_TIMEOUT) and sends SIGCONT, then
    # SIGUSR2, to the job's steps at the first check where elapsed >= 120 - 30 - 30 s (send_job_warn_signal in
    # job_mgr.c, Slurm 22.05): 60 to 90 s into the job (`man sbatch`, --signal: "up to 60 seconds earlier", so
    # from 30 s). The run is stopped (SIGSTOP) at its first saved state, a few seconds into the job (8-12 s on a
    # busy 2-core machine, well before 60 s); stopped, it cannot end before the signal however fast the machine
    # (stop_when_training: one 50 ms poll after iteration 1 of 1,560). Slurm's SIGCONT wakes it with SIGUSR2 on
    # its way; the test sends SIGCONT itself where only the SIGUSR2 is pending. The run saves, submitit requeues
    # it, the next start resumes and ends; its weights end as those of an uninterrupted run trained meanwhile,
    # beside the stopped job. Wall time, about 95-120 s: Slurm's clock (60-90 s), then the requeued job's wait to
    # start again (cred_expire=10 s, slurm/local_cluster.sh) and the rest of the run.
    words = [*tiny_words(tmp_path / "cluster", *LONG_RUN), *NODE]
    words[words.index("time=10")] = "time=2"
    submit(*words, "signal_delay_seconds=30")
    (run_dir,) = runs_of(tmp_path / "cluster")
    job_id = read_json(run_dir / "job.json")["job_id"]
    (pid,) = stop_when_training(run_dir)
    stopped_at, elapsed_then = time.monotonic(), job_elapsed_seconds(job_id)
    reference = subprocess.Popen([sys.executable, str(REPOSITORY / "train.py"),
                                  *tiny_words(tmp_path / "reference", *LONG_RUN)],
                                 cwd=REPOSITORY, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    # woken by Slurm's SIGCONT, or stopped with Slurm's SIGUSR2 pending; by 90 s into the job at the latest
    wait_until(lambda: process_state(pid) != "T" or signal_pending(pid, signal.SIGUSR2), 150,
               "no time-limit signal from Slurm", every=0.2)
    elapsed = elapsed_then + time.monotonic() - stopped_at  # the job's elapsed time then, by Slurm's clock at the stop
    assert elapsed >= 2 * 60 - 30 - 60, elapsed  # Slurm's time-limit warning, not anything sooner
    try:
        os.kill(pid, signal.SIGCONT)
    except ProcessLookupError:
        pass  # woken by Slurm, saved and requeued already
    wait_for_jobs(tmp_path / "cluster", timeout=300)
    assert reference.wait(timeout=300) == 0, reference.stderr.read()
    (reference_run,) = runs_of(tmp_path / "reference")
    (run_dir,) = runs_of(tmp_path / "cluster")
    assert run_dir.name == reference_run.name and read_json(run_dir / "status.json")["state"] == "done"
    expected = {name: entry["sha256"] for name, entry in read_json(reference_run / "manifest.json")["files"].items()}
    resumed = {name: entry["sha256"] for name, entry in read_json(run_dir / "manifest.json")["files"].items()}
    assert resumed == expected
    last = torch.load(run_dir / "checkpoints" / max(expected), weights_only=True)["model"]
    reference_last = torch.load(reference_run / "checkpoints" / max(expected), weights_only=True)["model"]
    assert all(torch.equal(last[name], reference_last[name]) for name in reference_last)
    log = "".join(slurm_logs(tmp_path / "cluster").values())
    assert "this job is timed-out" in log and "Requeued job" in log and "resuming at iteration" in log


def test_only_the_signalled_array_element_is_requeued(slurm, tmp_path, stop_when_training):
    # Both elements train at once (a CPU each) and are stopped at their first saved state, so both are mid-run
    # when the signal comes, however fast the machine (stop_when_training); they go on once it is pending.
    submit(*tiny_words(tmp_path, *LONG_RUN, "seed=0,1"), *NODE)
    runs = runs_of(tmp_path)
    pids = stop_when_training(*runs)
    signalled = read_json(runs[1] / "job.json")["job_id"]
    subprocess.run(["scancel", "--signal=USR2", signalled], check=True)  # as Slurm does before a time limit
    wait_until(lambda: signal_pending(pids[1], signal.SIGUSR2), 60, f"SIGUSR2 not delivered to {signalled}")
    assert not signal_pending(pids[0], signal.SIGUSR2)  # the other element's process was not signalled
    for pid in pids:
        os.kill(pid, signal.SIGCONT)
    wait_for_jobs(tmp_path)
    assert [read_json(run / "status.json")["state"] for run in runs] == ["done", "done"]
    logs = slurm_logs(tmp_path)
    requeued = sorted(name for name, text in logs.items() if "Requeued job" in text)
    assert requeued == [f"{signalled}_0_log.err"], (signalled, requeued)


def test_status_shows_done_running_failed_and_diverged(slurm, tmp_path, capsys, stop_when_training):
    import train
    from conf import parse_arguments

    grids = {  # state -> the words of a one-run grid that ends in it
        "done": tiny_words(tmp_path, "depth=1"),
        "failed": tiny_words(tmp_path, "depth=2"),
        "diverged": tiny_words(tmp_path, "depth=3", "lr=1e30", "batch_norm=false"),
        "running": tiny_words(tmp_path, *LONG_RUN),  # stopped mid-run below: running as long as the test looks
    }
    failing = tmp_path / "default" / "runs" / parse_arguments(grids["failed"]).grid[0].run_id
    failing.mkdir(parents=True)  # the folder holds another run's settings: that run must fail, not mix
    (failing / "settings.json").write_text(json.dumps({"run_id": "someone-else", "settings": {}}))
    for words in grids.values():
        submit(*words, *NODE)
    stop_when_training(tmp_path / "default" / "runs" / parse_arguments(grids["running"]).grid[0].run_id)

    def status(words):  # `train.py status`, in this process: what it prints
        capsys.readouterr()
        assert train.main(["status", *words]) == 0
        return capsys.readouterr().out

    wait_until(lambda: all(f"1 run(s): 1 {state}" in status(words) for state, words in grids.items()), 300,
               lambda: {state: status(words).splitlines()[-1] for state, words in grids.items()}, every=0.5)
    for state, words in grids.items():
        assert f"1 run(s): 1 {state}" in status(words), (state, status(words))
    assert "holds other settings" in status(grids["failed"])
    assert "non-finite training loss" in status(grids["diverged"])
    running = status(grids["running"])
    job_id = read_json(next((tmp_path / "default" / "runs").glob("convnet3-w16-*/job.json")))["job_id"]
    assert job_id in running
    command = run_cli("train.py", ["status", *grids["running"]])  # the command line itself, once
    assert command.returncode == 0 and command.stdout == running, (command.stdout, running, command.stderr)
    subprocess.run(["scancel", job_id.split("_")[0]], check=False)


def test_analysis_runs_as_one_array_task_per_run(slurm, tmp_path):
    import pandas as pd

    assert run_cli("train.py", tiny_words(tmp_path, "image_size=8", "depth=1", "width=4", "epochs=1",
                                           "synthetic_train_size=128", "seed=0,1")).returncode == 0
    result = run_cli("analysis.py", [f"out_dir={tmp_path}", "launcher=slurm", *NODE, "probe_dimensions=32"])
    assert result.returncode == 0 and "submitted 2 analysis job(s)" in result.stdout, result.stderr
    array = result.stdout.split("(array ")[1].split(")")[0]
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and array in subprocess.run(["squeue", "--me", "-h", "-o", "%i"],
                                                                   capture_output=True, text=True).stdout:
        time.sleep(2)
    table = pd.read_parquet(tmp_path / "default" / "metrics.parquet")
    assert table["run_id"].nunique() == 2 and set(table["iteration"]) == {0, 1, 2, 4}


def test_warm_started_children_wait_for_their_shared_stage1_job(slurm, tmp_path):
    words = [*tiny_words(tmp_path, "pretrain_fraction=0.5", "pretrain_epochs=2", "epochs=2", "reset_last=0,2"), *NODE]
    first = submit(*words)
    assert "submitted 3 job(s) for 3 run(s) in 2 array(s)" in first.stdout
    assert "2 run(s) wait for their parent run's job (afterok)" in first.stdout
    wait_for_jobs(tmp_path)
    folders = {path.name: path for path in runs_of(tmp_path)}
    (parent_id,) = [name for name in folders if "-stage1-" in name]
    children = [folders[name] for name in folders if "-warm-" in name]
    assert len(folders) == 3 and len(children) == 2
    parent_job = read_json(folders[parent_id] / "job.json")["job_id"]
    parent_done = read_json(folders[parent_id] / "status.json")
    assert parent_done["state"] == "done"
    parent_log = (folders[parent_id] / "log.jsonl").read_text().splitlines()
    assert [json.loads(line)["iteration"] for line in parent_log] == list(range(1, 9))  # stage 1 trained once
    for child in children:
        job = read_json(child / "job.json")["job_id"]
        assert job != parent_job
        (script,) = (tmp_path / "default" / "slurm").rglob(f"{job.split('_')[0]}_submission.sh")
        assert f"--dependency=afterok:{parent_job}" in script.read_text()
        assert "--kill-on-invalid-dep=yes" in script.read_text()
        lineage = read_json(child / "lineage.json")
        assert lineage["parent_run_id"] == parent_id
        assert read_json(child / "status.json")["state"] == "done"
        assert (child / "lineage.json").stat().st_mtime >= parent_done["updated_at"]  # started after the parent ended
    again = submit(*words)
    assert "submitted 0 jobs" in again.stdout and "skipping 3 done run(s)" in again.stdout


def test_transfer_children_on_another_dataset_wait_for_their_parents_job(slurm, tmp_path):
    from folders import RunFolder
    from tests import fabricate

    fabricate.fabricate_mnist(tmp_path / "data", 64, 32, seed=1)
    fabricate.fabricate_fashionmnist(tmp_path / "data", 64, 32, seed=2)
    # 64 images, batch 32: the parent trains 4 iterations on MNIST; the children 2 on Fashion-MNIST, from
    # iteration 1 (on the log schedule), 3 (off it: added to the parent's checkpoints) and the end
    words = ["arch=convnet", "depth=2", "width=8", "batch_size=32", "lr=0.05", "dataset=fashionmnist",
             "pretrain_dataset=mnist", "pretrain_epochs=2", "epochs=1", "start_from_iteration=1,3,final",
             f"data_root={tmp_path / 'data'}", "download=false", f"out_dir={tmp_path}", "progress=off", "threads=1",
             *NODE]
    first = submit(*words)
    assert "submitted 4 job(s) for 4 run(s) in 2 array(s)" in first.stdout
    assert "3 run(s) wait for their parent run's job (afterok)" in first.stdout
    wait_for_jobs(tmp_path)
    folders = {path.name: path for path in runs_of(tmp_path)}
    children = [folders[name] for name in folders if "-transfer-" in name]
    (parent_id,) = set(folders) - {child.name for child in children}
    assert len(children) == 3
    parent_job = read_json(folders[parent_id] / "job.json")["job_id"]
    parent_done = read_json(folders[parent_id] / "status.json")
    assert parent_done["state"] == "done" and RunFolder(folders[parent_id]).read_settings().dataset == "mnist"
    assert 3 in read_json(folders[parent_id] / "manifest.json")["schedule"]
    for child in children:
        (script,) = (tmp_path / "default" / "slurm").rglob(f"{read_json(child / 'job.json')['job_id'].split('_')[0]}"
                                                          "_submission.sh")
        assert f"--dependency=afterok:{parent_job}" in script.read_text()
        lineage = read_json(child / "lineage.json")
        assert lineage["parent_run_id"] == parent_id and lineage["parent_iteration"] in (1, 3, 4)
        assert read_json(child / "status.json")["state"] == "done"
        assert (child / "lineage.json").stat().st_mtime >= parent_done["updated_at"]
