"""Slurm that says what is wrong, on the real one-node cluster of tests/test_slurm.py (2 CPUs, no GPU
gres): a job no node can run is refused before submission, an sbatch refusal is one line with the
fix; either way exit 2, nothing queued and nothing left in the experiment's folders."""

import os
import re
import shutil
import subprocess
import sys
import uuid

import pytest

from conf.cluster import Cluster
from folders import ExperimentFolder
from slurm.capacity import Node, capacity_refusal, explain_refusal, parse_node, parse_records
from tests.conftest import REPOSITORY, run_cli, tiny_words
from tests.test_slurm import slurm  # noqa: F401  (the fixture: the cluster already up, or started once)

# Captured from the test cluster: `scontrol -o show node` and `scontrol -o show partition`.
CAPTURED_NODE = (
    "NodeName=vm Arch=x86_64 CoresPerSocket=1  CPUAlloc=0 CPUEfctv=2 CPUTot=2 CPULoad=0.08 AvailableFeatures=(null) "
    "ActiveFeatures=(null) Gres=(null) NodeAddr=vm NodeHostName=vm Version=22.05.8 OS=Linux 6.18.44-fc-v657 #1 SMP "
    "PREEMPT_DYNAMIC @0  RealMemory=21695 AllocMem=0 FreeMem=21630 Sockets=2 Boards=1 State=IDLE ThreadsPerCore=1 "
    "TmpDisk=0 Weight=1 Owner=N/A MCS_label=N/A Partitions=debug  BootTime=2026-11-30T11:30:05 "
    "SlurmdStartTime=2026-11-30T19:18:47 LastBusyTime=2026-11-30T19:18:47 CfgTRES=cpu=2,mem=21695M,billing=2 "
    "AllocTRES= CapWatts=n/a CurrentWatts=0 AveWatts=0 ExtSensorsJoules=n/s ExtSensorsWatts=0 ExtSensorsTemp=n/s \n")
CAPTURED_PARTITION = (
    "PartitionName=debug AllowGroups=ALL AllowAccounts=ALL AllowQos=ALL AllocNodes=ALL Default=YES QoS=N/A "
    "DefaultTime=NONE DisableRootJobs=NO ExclusiveUser=NO GraceTime=0 Hidden=NO MaxNodes=UNLIMITED MaxTime=UNLIMITED "
    "MinNodes=0 LLN=NO MaxCPUsPerNode=UNLIMITED Nodes=vm PriorityJobFactor=1 PriorityTier=1 RootOnly=NO ReqResv=NO "
    "OverSubscribe=NO OverTimeLimit=NONE PreemptMode=OFF State=UP TotalCPUs=2 TotalNodes=1 SelectTypeParameters=NONE "
    "JobDefaults=(null) DefMemPerNode=UNLIMITED MaxMemPerNode=UNLIMITED TRES=cpu=2,mem=21695M,node=1,billing=2\n")
# What sbatch 22.05 said on the test cluster to --mem=100000GB.
CAPTURED_MEMORY_REFUSAL = ("sbatch: error: Memory specification can not be satisfied\n"
                           "sbatch: error: Batch job submission failed: Requested node configuration is not available")


def test_scontrol_records_parse_into_the_node_a_job_sees():
    (record,) = parse_records(CAPTURED_NODE)
    assert record["OS"] == "Linux 6.18.44-fc-v657 #1 SMP PREEMPT_DYNAMIC @0"  # a value with spaces stays whole
    assert parse_node(record) == Node("vm", cpus=2, memory_mb=21695, gpus=0, partitions=("debug",))
    partitions = parse_records(CAPTURED_PARTITION)
    nodes = [parse_node(record)]
    assert capacity_refusal(nodes, partitions, Cluster(cpus=2, mem_gb=21, gpus=0)) is None  # the node's limit fits
    assert capacity_refusal(nodes, partitions, Cluster(cpus=4, mem_gb=0, gpus=0)) == (
        "no node of partition debug has 4 CPUs and 0 GPUs: the largest (vm) has 2 CPUs, 21 GB, 0 GPUs; ask cpus<=2")
    assert capacity_refusal(nodes, partitions, Cluster(cpus=1, mem_gb=22, gpus=1)).endswith("ask mem_gb<=21, gpus=0")


def test_a_gpu_node_is_read_from_its_gres_and_the_closest_node_is_named():
    gpu_line = (CAPTURED_NODE.replace("NodeName=vm", "NodeName=gpu1").replace("Gres=(null)", "Gres=gpu:a100:4(S:0-1)")
                .replace("CPUEfctv=2 CPUTot=2", "CPUEfctv=16 CPUTot=16"))
    nodes = [parse_node(record) for record in parse_records(CAPTURED_NODE + gpu_line)]
    assert nodes[1] == Node("gpu1", cpus=16, memory_mb=21695, gpus=4, partitions=("debug",))
    partitions = parse_records(CAPTURED_PARTITION.replace("MaxCPUsPerNode=UNLIMITED", "MaxCPUsPerNode=8"))
    assert capacity_refusal(nodes, partitions, Cluster(cpus=8, mem_gb=0, gpus=4)) is None
    assert capacity_refusal(nodes, partitions, Cluster(cpus=12, mem_gb=0, gpus=8)) == (  # the partition caps CPUs
        "no node of partition debug has 12 CPUs and 8 GPUs: the largest (gpu1) has 8 CPUs, 21 GB, 4 GPUs; "
        "ask cpus<=8, gpus<=4")


def test_sbatch_messages_become_one_line_with_the_fix():
    assert explain_refusal(CAPTURED_MEMORY_REFUSAL, Cluster(gpus=0)) == (
        "sbatch refused the job: Memory specification can not be satisfied; Requested node configuration is not "
        "available; lower mem_gb (mem_gb=0 takes the partition's default)")
    gres = explain_refusal("sbatch: error: Invalid generic resource (gres) specification", Cluster(gpus=1))
    assert gres.endswith("has no GPU gres: pass gpus=0, or partition= one with GPU nodes")


def test_the_parser_reads_the_live_cluster_as_sinfo_does(slurm):
    sinfo = subprocess.run(["sinfo", "-h", "-N", "-o", "%N %c %m"], capture_output=True, text=True, check=True).stdout
    expected = {name: (int(cpus), int(memory)) for name, cpus, memory in (line.split() for line in sinfo.splitlines())}
    live = subprocess.run(["scontrol", "-o", "show", "node"], capture_output=True, text=True, check=True).stdout
    nodes = [parse_node(record) for record in parse_records(live)]
    assert {node.name: (node.cpus, node.memory_mb) for node in nodes} == expected


# ---- end to end: `sh train.sh` and `analysis.py launcher=slurm` as a user types them ----

def default_partition_node() -> tuple[str, int, int]:
    """(partition, CPUs, memory in GB) of the default partition's largest node, from sinfo."""
    sinfo = subprocess.run(["sinfo", "-h", "-N", "-o", "%P %c %m"], capture_output=True, text=True, check=True).stdout
    rows = [line.split() for line in sinfo.splitlines() if line.split()[0].endswith("*")]
    return rows[0][0].rstrip("*"), max(int(row[1]) for row in rows), max(int(row[2]) for row in rows) // 1024


def jobs_with(comment: str) -> list[str]:
    """Every job the controller still knows (finished and failed ones too) that carries `comment`."""
    listing = subprocess.run(["squeue", "-h", "-t", "all", "-o", "%i %k"], capture_output=True, text=True,
                             check=True).stdout
    return [line.split()[0] for line in listing.splitlines() if line.split()[1:] == [comment]]


def tagged(*words: str) -> tuple[list[str], str]:
    """`words` with a comment unique to this call on every job they submit (how squeue finds them)."""
    comment = f"refusal-{uuid.uuid4().hex}"
    return [*words, f"sbatch_extra=comment={comment}"], comment


def train_sh(words: list[str], **options) -> subprocess.CompletedProcess:
    return subprocess.run(["sh", str(REPOSITORY / "train.sh"), *words], cwd="/", capture_output=True, text=True,
                          timeout=300, **options)


def error_lines(result: subprocess.CompletedProcess) -> list[str]:
    """What stderr says besides our logging lines (`12:00:00 WARNING ...`): sbatch's own words and
    submitit's traceback would be here."""
    return [line for line in result.stderr.splitlines() if not re.match(r"\d\d:\d\d:\d\d [A-Z]+ ", line)]


def files_under(folder) -> list[str]:
    return sorted(str(path) for path in folder.rglob("*") if path.is_file())


NODE = ["gpus=0", "cpus=1", "mem_gb=0", "time=10"]


@pytest.mark.slow
@pytest.mark.parametrize("asked, fix", [("cpus=64", "ask cpus<={cpus}"), ("mem_gb=1000000", "ask mem_gb<={memory}")])
def test_a_job_no_node_can_run_is_refused_before_anything_is_written(slurm, tmp_path, asked, fix):
    partition, cpus, memory = default_partition_node()
    words, comment = tagged(*tiny_words(tmp_path), *NODE, asked)
    result = train_sh(words)
    assert result.returncode == 2, result.stderr
    (line,) = error_lines(result)
    assert line.startswith(f"error: no node of partition {partition} has ") and "the largest" in line, line
    assert line.endswith(fix.format(cpus=cpus, memory=memory)), line
    assert jobs_with(comment) == []
    assert files_under(tmp_path) == [] and not ExperimentFolder.of(tmp_path, "default").path.exists()


@pytest.mark.slow
def test_gpus_where_there_is_no_gpu_gres_is_one_line_even_when_scontrol_is_unreadable(slurm, tmp_path):
    # Without scontrol the check before submission cannot run (a warning): sbatch's own refusal of
    # --gpus-per-node=1 is what the user sees, in one line, instead of submitit's traceback.
    commands = tmp_path / "bin"
    commands.mkdir()
    for name in ("sbatch", "srun", "squeue"):
        (commands / name).symlink_to(shutil.which(name))
    words, comment = tagged(*tiny_words(tmp_path / "out"), *NODE)
    words[words.index("gpus=0")] = "gpus=1"
    result = subprocess.run([sys.executable, str(REPOSITORY / "train.py"), "launcher=slurm", *words], cwd=REPOSITORY,
                            env={**os.environ, "PATH": str(commands)}, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2, result.stderr
    assert "not checking that a node can run the jobs" in result.stderr
    assert error_lines(result) == ["error: sbatch refused the job: Invalid generic resource (gres) specification; "
                                   "this cluster (or partition) has no GPU gres: pass gpus=0, or partition= one with "
                                   "GPU nodes"]
    assert jobs_with(comment) == []
    assert files_under(tmp_path / "out") == [] and not ExperimentFolder.of(tmp_path / "out", "default").path.exists()


@pytest.mark.slow
def test_a_job_at_the_node_s_limits_is_submitted(slurm, tmp_path):
    """The checks refuse nothing a node can run: all its CPUs and 1 GB are submitted (then cancelled)."""
    _, cpus, _ = default_partition_node()
    words, comment = tagged(*tiny_words(tmp_path), "gpus=0", f"cpus={cpus}", "mem_gb=1", "time=10")
    result = train_sh(words)
    jobs = jobs_with(comment)
    subprocess.run(["scancel", *jobs], check=False)
    assert result.returncode == 0 and "submitted 1 job(s)" in result.stdout, result.stderr
    assert len(jobs) == 1


@pytest.mark.slow
def test_analysis_on_slurm_is_refused_the_same_way(slurm, tmp_path, one_thread):
    from conf import parse_arguments
    from slurm.launch import launch

    # One run to analyse, trained here (inline): a second interpreter would cost more than the run.
    assert launch(parse_arguments(tiny_words(tmp_path, "image_size=8", "depth=1", "width=4", "epochs=1",
                                             "synthetic_train_size=128"))) == 0
    slurm_folder = ExperimentFolder.of(tmp_path, "default").slurm_path
    partition, _, _ = default_partition_node()
    refused_by_sbatch = "error: sbatch refused the job: Invalid feature specification; check constraint="
    for asked, expected in [("cpus=64", f"error: no node of partition {partition} has 64 CPUs"),
                            ("constraint=no-such-feature", refused_by_sbatch)]:
        words, comment = tagged(f"out_dir={tmp_path}", "launcher=slurm", *NODE, asked)
        result = run_cli("analysis.py", words)
        assert result.returncode == 2, result.stderr
        (line,) = error_lines(result)
        assert line.startswith(expected), line
        assert jobs_with(comment) == [] and not slurm_folder.exists()
