"""Launching without Slurm: packing, array splitting, launch options, run states, local workers."""

import os
import re
import socket

import pytest

from conf import Cluster, SettingsError, parse_arguments
from conf.cluster import sbatch_parameters, time_in_minutes
from conf.plasticity import lineages
from slurm.launch import check_submission, make_executor, pack_runs, split_arrays
from slurm.runs import observe, observed_state, status_table, to_launch
from tests.conftest import read_json, tiny_words

pytestmark = pytest.mark.slow  # end to end: real runs trained and measured (make test-fast leaves them out)


def test_packing_and_array_splitting():
    runs = list(range(10))
    assert pack_runs(runs, 1) == [[run] for run in runs]
    assert pack_runs(runs, 4) == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    packs = pack_runs(list(range(2500)), 1)
    arrays = split_arrays(packs, 1001)
    assert [len(array) for array in arrays] == [1001, 1001, 498]
    assert [pack for array in arrays for pack in array] == packs
    assert split_arrays([], 1001) == []


def test_submission_limits(tmp_path, caplog):
    limits = {"MaxArraySize": 1001, "MaxJobCount": 100, "nodes": 1}
    check_submission(100, 100, limits, tmp_path)
    with pytest.raises(SettingsError, match="101 jobs exceed the cluster's MaxJobCount=100.*runs_per_job >= 2"):
        check_submission(101, 101, limits, tmp_path)
    check_submission(5, 5, {**limits, "nodes": 4}, tmp_path / "shared")
    assert ("under /tmp on a 4-node cluster" in caplog.text) == str(tmp_path.resolve()).startswith("/tmp/")
    caplog.clear()
    check_submission(5, 5, {**limits, "nodes": 1}, tmp_path / "shared")
    assert "under /tmp" not in caplog.text
    check_submission(5, 5, limits, tmp_path, Cluster(time="2", signal_delay_seconds=30))
    assert "signalled while it starts" not in caplog.text
    check_submission(5, 5, limits, tmp_path, Cluster(time="1", signal_delay_seconds=30))
    assert "signalled while it starts" in caplog.text


@pytest.mark.parametrize("text, minutes", [("90", 90), ("1:30", 2), ("24:00:00", 1440), ("2-0", 2880),
                                           ("1-2:30", 1590), ("0-0:0:1", 1)])
def test_slurm_time_formats(text, minutes):
    assert time_in_minutes(text) == minutes


@pytest.mark.parametrize("words, needle", [
    (["time=abc"], "time='abc' cannot be read; accepted: minutes, H:M:S or D-H:M:S"),
    (["time=0"], "accepted: a positive duration"),
    (["launcher=k8s"], "accepted: inline, local, slurm"),
    (["gpus=-1"], "gpus=-1 is out of range"),
    (["runs_per_job=0"], "runs_per_job=0 is out of range"),
    (["workers=0"], "workers=0 is out of range"),
    (["retry=always"], "accepted: none, failed"),
    (["sbatch_extra=Bad Key"], "sbatch_extra item 'Bad Key' cannot be read"),
    (["parition=gpu"], "unknown key 'parition'; did you mean 'partition'"),
])
def test_bad_launch_options_are_refused(words, needle):
    with pytest.raises(SettingsError, match=None) as raised:
        parse_arguments(words)
    assert needle in str(raised.value)


def test_launch_options_never_enter_the_run_id():
    plain = parse_arguments(["depth=3"]).grid[0]
    cluster = parse_arguments(["depth=3", "launcher=slurm", "partition=gpu", "time=24:00:00", "gpus=1"]).grid[0]
    assert plain.run_id == cluster.run_id


@pytest.fixture
def srun_on_path(tmp_path, monkeypatch):
    """submitit's SlurmExecutor refuses to be built where `srun` is not on PATH (a laptop, a CI box
    without Slurm): a stand-in makes these tests independent of the machine. It is never run."""
    folder = tmp_path / "fake-slurm-bin"
    folder.mkdir()
    (folder / "srun").write_text("#!/bin/sh\nexit 1\n")
    (folder / "srun").chmod(0o755)
    monkeypatch.setenv("PATH", f"{folder}{os.pathsep}{os.environ.get('PATH', '')}")


def test_executor_gets_the_cluster_options(tmp_path, srun_on_path):
    """Every launch option reaches submitit's parameters under its submitit name, in its units."""
    plan = parse_arguments(["launcher=slurm", "partition=gpu", "account=lab", "time=24:00:00", "gpus=2", "cpus=4",
                            "mem_gb=16", "array_parallelism=8", "signal_delay_seconds=300",
                            "sbatch_extra=reservation=r1;exclusive", "job_setup=module load cuda"])
    parameters = make_executor(plan, tmp_path).parameters
    assert parameters["partition"] == "gpu" and parameters["account"] == "lab" and parameters["time"] == 1440
    assert parameters["gpus_per_node"] == 2 and parameters["cpus_per_task"] == 4 and parameters["mem"] == "16GB"
    assert parameters["array_parallelism"] == 8 and parameters["signal_delay_s"] == 300
    assert parameters["additional_parameters"] == {"reservation": "r1", "exclusive": True}
    assert parameters["setup"][-1] == "module load cuda" and "PYTHONPATH" in parameters["setup"][0]
    assert "qos" not in parameters  # empty site values are left to the cluster
    assert sbatch_parameters("") == {}


def test_observed_state_from_the_folder_and_the_queue():
    here, dead_pid = socket.gethostname(), 2 ** 22 + 12345
    assert observed_state({"state": "done"}, {}, {"7_1"}) == "done"
    assert observed_state({}, {}, None) == "new"
    assert observed_state({"state": "running", "job_id": "7_1"}, {"job_id": "7_1"}, {"7_1"}) == "running"
    assert observed_state({"state": "running", "job_id": "7_1"}, {"job_id": "7_1"}, set()) == "lost"
    assert observed_state({}, {"job_id": "7_2", "submitted_at": 5.0}, {"7_2"}) == "queued"
    retried = {"job_id": "9_0", "submitted_at": 10.0}  # a failed run submitted again: queued until it starts
    assert observed_state({"state": "failed", "updated_at": 9.0}, retried, {"9_0"}) == "queued"
    assert observed_state({"state": "running", "updated_at": 11.0}, retried, {"9_0"}) == "running"
    assert observed_state({"state": "done", "updated_at": 12.0}, retried, {"9_0"}) == "done"  # job winding down
    assert observed_state({"state": "failed"}, {"job_id": "9_0"}, set()) == "failed"
    assert observed_state({"state": "running", "host": here, "pid": os.getpid()}, {}, None) == "running"
    assert observed_state({"state": "running", "host": here, "pid": dead_pid}, {}, None) == "lost"
    assert observed_state({"state": "running", "host": "elsewhere", "pid": dead_pid}, {}, None) == "running"


def test_what_is_launched_again(tmp_path):
    plan = parse_arguments(["depth=1,2,3,4,5,6"])
    states = ["done", "running", "failed", "diverged", "interrupted", None]
    views = observe(lineages(plan.grid), tmp_path, queue={"5_1"})
    for view, state in zip(views, states):
        if state:
            view.folder.path.mkdir(parents=True)
            view.folder.write_status(state, **({"job_id": "5_1"} if state == "running" else {}))
    views = observe(lineages(plan.grid), tmp_path, queue={"5_1"})
    assert [view.state for view in views] == ["done", "running", "failed", "diverged", "interrupted", "new"]
    assert [view.settings.depth for view in to_launch(views, "none")] == [5, 6]
    assert [view.settings.depth for view in to_launch(views, "failed")] == [3, 4, 5, 6]
    table = status_table(views)
    assert "6 run(s): 1 diverged, 1 done, 1 failed, 1 interrupted, 1 new, 1 running" in table
    assert "5_1" in table


def test_local_workers_train_a_grid_in_parallel_and_skip_done_runs(tmp_path, in_process):
    words = tiny_words(tmp_path, "depth=1,2", "seed=0,1", "launcher=local", "workers=2")
    first = in_process("train.py", words)  # the workers are processes of their own all the same (spawned)
    assert first.returncode == 0, first.stderr
    assert "4 run(s) of experiment 'default' trained: 4 done" in first.stdout
    runs = sorted((tmp_path / "default" / "runs").iterdir())
    assert [read_json(run / "status.json")["state"] for run in runs] == ["done"] * 4
    assert len({read_json(run / "status.json")["pid"] for run in runs}) >= 2  # really other processes
    again = in_process("train.py", words)
    assert "skipping 4 done run(s)" in again.stdout and "0 run(s)" in again.stdout


def test_status_command_lists_every_run(tmp_path, in_process):
    assert in_process("train.py", tiny_words(tmp_path, "depth=1,2", "lr=0.05,1e30", "batch_norm=false")).returncode == 0
    result = in_process("train.py", ["status", *tiny_words(tmp_path, "depth=1,2", "lr=0.05,1e30", "batch_norm=false")])
    assert result.returncode == 0
    assert "4 run(s): 2 diverged, 2 done" in result.stdout
    assert "non-finite training loss at iteration" in result.stdout


SBATCH_LINE = re.compile(r"#SBATCH --([a-z][a-z0-9-]*)=([^\s']\S*)")  # --name=value, the value neither empty nor ''


def test_cluster_defaults_are_valid(tmp_path, srun_on_path, caplog):
    """The site defaults (conf/cluster.py) make an sbatch script of well-formed, non-empty options with
    the default resources, and leave the requeue signal a safe margin before the time limit."""
    defaults = Cluster()
    check_submission(1, 1, {"MaxArraySize": 1001, "MaxJobCount": 10000, "nodes": 1}, tmp_path, defaults)
    assert caplog.text == ""  # no "signalled while it starts" warning
    executor = make_executor(parse_arguments(["launcher=slurm"]), tmp_path)
    script = executor._make_submission_file_text("python -u job.py", "uid")
    lines = [line for line in script.splitlines() if line.startswith("#SBATCH")]
    assert all(SBATCH_LINE.fullmatch(line) for line in lines), lines
    options = dict(SBATCH_LINE.fullmatch(line).groups() for line in lines)
    assert options["time"] == str(defaults.time_minutes)
    assert options["signal"] == f"USR2@{defaults.signal_delay_seconds}"
    assert defaults.time_minutes * 60 - defaults.signal_delay_seconds >= 60
    assert options["cpus-per-task"] == str(defaults.cpus)
    assert options.get("gpus-per-node") == (str(defaults.gpus) if defaults.gpus else None)
    assert options.get("mem") == (f"{defaults.mem_gb}GB" if defaults.mem_gb else None)
    for key in ("partition", "account", "qos", "constraint"):  # "" = the cluster's default: no option at all
        assert options.get(key) == (getattr(defaults, key) or None), key
    assert script.index("export PYTHONPATH=") < script.index("srun ")  # the repository importable in the job


def test_local_workers_and_parallel_children_share_the_cores():
    from slurm.parallel import cpus_per_process

    assert cpus_per_process(2, cpus=2) == 1 and cpus_per_process(2, cpus=16) == 8
    assert cpus_per_process(4, cpus=2) == 1 and cpus_per_process(1, cpus=3) == 3
