"""End to end on a real one-node Slurm (slurm/local_cluster.sh; CI installs and starts it): submit
with `sh train.sh`, requeue on the time limit with exact resume, idempotent resubmission, status."""

import json
import os
import shutil
import subprocess
import sys
import time

import pytest
import torch

from tests.conftest import REPOSITORY, read_json, run_cli, tiny_words

pytestmark = pytest.mark.slow
# Cluster options for the test node: no GPUs, one CPU per job, the node's default memory.
NODE = ["gpus=0", "cpus=1", "mem_gb=0", "time=10"]


@pytest.fixture(scope="session")
def slurm():
    """A running Slurm: the one already up, or the one-node cluster started as root; else skip."""
    def up() -> bool:
        try:
            listing = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=20).stdout
        except (OSError, subprocess.SubprocessError):
            return False
        return any(state in listing for state in ("idle", "mix", "alloc"))

    if not up():
        if shutil.which("slurmctld") is None or os.geteuid() != 0:
            pytest.skip("no Slurm here: install slurm-wlm and munge and run as root (CI does) to run these tests")
        started = subprocess.run(["sh", str(REPOSITORY / "slurm" / "local_cluster.sh"), "start"],
                                 capture_output=True, text=True, timeout=120)
        if started.returncode != 0 or not up():
            pytest.skip(f"Slurm could not be started here: {started.stderr.strip()[-300:]}")


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
        time.sleep(2)
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


LONG_RUN = ["depth=3", "width=16", "epochs=40", "synthetic_train_size=5000", "resume_every_seconds=3600"]


def slurm_logs(out_dir) -> dict[str, str]:
    return {path.name: path.read_text() for path in (out_dir / "default" / "slurm").rglob("*_log.err")}


def test_time_limit_requeue_resumes_bitwise(slurm, tmp_path):
    # A 2-minute limit and SIGUSR2 30 s before it (Slurm may send it up to 60 s early: between 30 s
    # and 90 s into the job), for a run of over two minutes: it is signalled, saves, is requeued by
    # submitit and resumes, as often as it takes; its weights end as those of an uninterrupted run
    # (trained meanwhile, beside the job). The one thing here that depends on speed: the run must outlast the
    # signal's latest time (90 s). 200 epochs took 78 s on an idle 2-core CI machine (2026-12-04) and were
    # never signalled; 500 epochs (78,000 iterations) take about 3 min there, 2x the window.
    longer = [*LONG_RUN, "epochs=500"]
    reference = subprocess.Popen([sys.executable, str(REPOSITORY / "train.py"), *tiny_words(tmp_path / "reference", *longer)],
                                 cwd=REPOSITORY, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    words = [*tiny_words(tmp_path / "cluster", *longer), *NODE]
    words[words.index("time=10")] = "time=2"
    submit(*words, "signal_delay_seconds=30")
    wait_for_jobs(tmp_path / "cluster", timeout=600)
    assert reference.wait(timeout=600) == 0, reference.stderr.read()
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


def test_only_the_signalled_array_element_is_requeued(slurm, tmp_path):
    submit(*tiny_words(tmp_path, *LONG_RUN, "epochs=20", "seed=0,1"), *NODE)
    runs = runs_of(tmp_path)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not all(
            (run / "status.json").exists() and read_json(run / "status.json").get("iteration", 0) > 0 for run in runs):
        time.sleep(0.5)
    signalled = read_json(runs[1] / "job.json")["job_id"]
    subprocess.run(["scancel", "--signal=USR2", signalled], check=True)  # as Slurm does before a time limit
    wait_for_jobs(tmp_path)
    assert [read_json(run / "status.json")["state"] for run in runs] == ["done", "done"]
    logs = slurm_logs(tmp_path)
    requeued = sorted(name for name, text in logs.items() if "Requeued job" in text)
    assert requeued == [f"{signalled}_0_log.err"], (signalled, requeued)


def test_status_shows_done_running_failed_and_diverged(slurm, tmp_path):
    from conf import parse_arguments

    grids = {  # state -> the words of a one-run grid that ends in it
        "done": tiny_words(tmp_path, "depth=1"),
        "failed": tiny_words(tmp_path, "depth=2"),
        "diverged": tiny_words(tmp_path, "depth=3", "lr=1e30", "batch_norm=false"),
        "running": tiny_words(tmp_path, *LONG_RUN, "epochs=400"),
    }
    failing = tmp_path / "default" / "runs" / parse_arguments(grids["failed"]).grid[0].run_id
    failing.mkdir(parents=True)  # the folder holds another run's settings: that run must fail, not mix
    (failing / "settings.json").write_text(json.dumps({"run_id": "someone-else", "settings": {}}))
    for words in grids.values():
        submit(*words, *NODE)

    def status(words):
        return run_cli("train.py", ["status", *words]).stdout

    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and not all(f"1 run(s): 1 {state}" in status(words)
                                                  for state, words in grids.items()):
        time.sleep(2)
    for state, words in grids.items():
        assert f"1 run(s): 1 {state}" in status(words), (state, status(words))
    assert "holds other settings" in status(grids["failed"])
    assert "non-finite training loss" in status(grids["diverged"])
    running = status(grids["running"])
    job_id = read_json(next((tmp_path / "default" / "runs").glob("convnet3-w16-*/job.json")))["job_id"]
    assert job_id in running
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
