"""Whether the cluster can ever run a job as asked, and what Slurm's refusals mean, in one line each.

Slurm accepts a job that asks more CPUs or memory than any node of its partition has and leaves it
pending for ever (reason PartitionConfig); `check_capacity` compares the request with the
partition's nodes first (`scontrol -o show node`) and refuses it, naming the largest node. When
sbatch itself refuses a job (GPUs on a cluster without GPU gres, an unknown partition or feature),
`explain_refusal` turns its message into one line with the likely fix.
"""

from __future__ import annotations

import logging
import re
import subprocess
from dataclasses import dataclass

from conf import SettingsError
from conf.cluster import Cluster

logger = logging.getLogger(__name__)
MEGABYTES_PER_GIGABYTE = 1024  # Slurm's G suffix (our --mem=<n>GB) and RealMemory's MB are powers of 1024
KEY = re.compile(r"[A-Za-z][A-Za-z0-9_]*")


def counted(number: int, noun: str) -> str:
    """'1 CPU', '2 CPUs'."""
    return f"{number} {noun}{'' if number == 1 else 's'}"


@dataclass(frozen=True)
class Node:
    """What one node of a partition offers a one-node job (capped by the partition's per-node limits)."""

    name: str
    cpus: int
    memory_mb: int
    gpus: int
    partitions: tuple[str, ...]

    def describe(self) -> str:
        gigabytes = self.memory_mb // MEGABYTES_PER_GIGABYTE
        return f"{counted(self.cpus, 'CPU')}, {gigabytes} GB, {counted(self.gpus, 'GPU')}"


def parse_records(text: str) -> list[dict[str, str]]:
    """`scontrol -o show node|partition` output -> one {key: value} per line. A token without `key=`
    continues the previous value: some values hold spaces (OS=Linux 6.1 #1 SMP, Reason=...)."""
    records = []
    for line in filter(None, (line.strip() for line in text.splitlines())):
        record: dict[str, str] = {}
        key = None
        for token in line.split():
            name, equals, value = token.partition("=")
            if equals and KEY.fullmatch(name):
                key, record[name] = name, value
            elif key is not None:
                record[key] += " " + token
        records.append(record)
    return records


def gpu_count(gres: str) -> int:
    """GPUs in a node's Gres field: 'gpu:a100:4(S:0-1),gpu:v100:2' -> 6, 'gpu' -> 1, '(null)' -> 0."""
    total = 0
    for item in re.sub(r"\([^)]*\)", "", gres).split(","):  # drop socket/index annotations first
        parts = item.strip().split(":")
        if parts[0] == "gpu":
            total += int(parts[-1]) if len(parts) > 1 and parts[-1].isdigit() else 1
    return total


def _number(text: str | None) -> int | None:
    return int(text) if text and text.isdigit() else None


def parse_node(record: dict[str, str]) -> Node:
    """A `scontrol -o show node` record -> Node: effective CPUs (without specialised cores when the
    version says), real memory less what is reserved for the system, GPUs from its gres."""
    cpus = _number(record.get("CPUEfctv")) or _number(record.get("CPUTot")) or 0
    memory = (_number(record.get("RealMemory")) or 0) - (_number(record.get("MemSpecLimit")) or 0)
    partitions = tuple(filter(None, record.get("Partitions", "").split(",")))
    return Node(record.get("NodeName", "?"), cpus, memory, gpu_count(record.get("Gres", "")), partitions)


def capped(node: Node, partition: dict[str, str]) -> Node:
    """The node as a job of `partition` sees it: its MaxCPUsPerNode and MaxMemPerNode (MB) apply."""
    cpus, memory = _number(partition.get("MaxCPUsPerNode")), _number(partition.get("MaxMemPerNode"))
    return Node(node.name, min(node.cpus, cpus or node.cpus), min(node.memory_mb, memory or node.memory_mb), node.gpus,
                node.partitions)


def chosen_partitions(partitions: list[dict[str, str]], asked: str) -> list[dict[str, str]]:
    """The partitions a job of `partition=asked` may run in: the named ones (sbatch takes a comma
    list), or the default one for ''. SettingsError naming the accepted ones for an unknown name."""
    by_name = {record.get("PartitionName"): record for record in partitions}
    if not asked:
        return [record for record in partitions if record.get("Default") == "YES"]
    unknown = [name for name in asked.split(",") if name.strip() not in by_name]
    if unknown:
        raise SettingsError(f"partition={asked!r} is not a partition of this cluster; accepted: "
                            f"{', '.join(sorted(filter(None, by_name)))} (or partition='' for the default)")
    return [by_name[name.strip()] for name in asked.split(",")]


def shortfalls(node: Node, cluster: Cluster) -> list[str]:
    """The options to lower for `node` to run a job of `cluster` ([] when it fits)."""
    fixes = []
    if cluster.cpus > node.cpus:
        fixes.append(f"cpus<={node.cpus}")
    if cluster.mem_gb and cluster.mem_gb * MEGABYTES_PER_GIGABYTE > node.memory_mb:
        most = node.memory_mb // MEGABYTES_PER_GIGABYTE
        fixes.append(f"mem_gb<={most}" if most else "mem_gb=0 (the cluster's default)")
    if cluster.gpus > node.gpus:
        fixes.append(f"gpus<={node.gpus}" if node.gpus else "gpus=0")
    return fixes


def capacity_refusal(nodes: list[Node], partitions: list[dict[str, str]], cluster: Cluster) -> str | None:
    """Why no node of the chosen partitions can ever run a job of `cluster`, in one line; None when
    one can (or when the partitions have no node we could read)."""
    candidates = [capped(node, partition) for partition in partitions for node in nodes
                  if partition.get("PartitionName") in node.partitions]
    if not candidates or any(not shortfalls(node, cluster) for node in candidates):
        return None
    # The node closest to the request: fewest options to lower, then the most GPUs, CPUs, memory.
    best = min(candidates, key=lambda node: (len(shortfalls(node, cluster)), -node.gpus, -node.cpus, -node.memory_mb))
    largest = all(best.gpus >= node.gpus and best.cpus >= node.cpus and best.memory_mb >= node.memory_mb
                  for node in candidates)
    names = ",".join(partition["PartitionName"] for partition in partitions)
    asked = (counted(cluster.cpus, "CPU") + (f", {cluster.mem_gb} GB" if cluster.mem_gb else "")
             + f" and {counted(cluster.gpus, 'GPU')}")
    return (f"no node of partition {names} has {asked}: the {'largest' if largest else 'closest'} ({best.name}) "
            f"has {best.describe()}; ask {', '.join(shortfalls(best, cluster))}")


def read_scontrol(*words: str) -> str | None:
    """`scontrol --all -o <words>` (hidden partitions too); None, with a warning, when it cannot be read."""
    try:
        return subprocess.run(["scontrol", "--all", "-o", *words], capture_output=True, text=True, timeout=60,
                              check=True).stdout
    except (subprocess.SubprocessError, OSError) as error:
        detail = getattr(error, "stderr", None) or error
        logger.warning("could not read the cluster's nodes (scontrol %s: %s); not checking that a node can run the "
                       "jobs", " ".join(words), str(detail).strip())
        return None


def check_capacity(cluster: Cluster) -> None:
    """Refuse (SettingsError) a job that no node of its partition can ever run, before submitting it.
    Unreadable scontrol output is a warning, never a refusal: sbatch still has its say."""
    partition_text = read_scontrol("show", "partition")
    node_text = None if partition_text is None else read_scontrol("show", "node")
    if node_text is None:
        return
    partitions = chosen_partitions(parse_records(partition_text), cluster.partition)
    refusal = capacity_refusal([parse_node(record) for record in parse_records(node_text)], partitions, cluster)
    if refusal:
        raise SettingsError(refusal)


# Slurm's message -> the likely fix, first match wins (a memory refusal also says "node configuration").
HINTS = (
    (r"generic resource|gres", "gpus"),
    (r"invalid partition", "pass partition= one that `sinfo -s` lists, or partition='' for the default one"),
    (r"feature specification", "check constraint= against the nodes' features (`sinfo -o '%P %f'`), or constraint=''"),
    (r"memory specification", "lower mem_gb (mem_gb=0 takes the partition's default)"),
    (r"node configuration is not available", "ask fewer cpus, mem_gb or gpus, or another partition="),
    (r"time limit", "lower time= to the partition's limit (`sinfo -o '%P %l'`)"),
    (r"account", "check account= (`sacctmgr show associations user=$USER`), or account=''"),
    (r"qos", "check qos=, or qos=''"),
)


def explain_refusal(message: str, cluster: Cluster) -> str:
    """sbatch's stderr -> 'sbatch refused the job: <Slurm's words>; <the likely fix>' on one line."""
    said = []
    for line in message.splitlines():
        line = re.sub(r"^(sbatch: error: )?(Batch job submission failed: )?", "", line.strip())
        if line and line not in said:
            said.append(line)
    text = "; ".join(said) or "no reason given"
    hint = next((hint for pattern, hint in HINTS if re.search(pattern, text, re.IGNORECASE)),
                "check the Slurm options (partition, account, qos, constraint, gpus, cpus, mem_gb, time, sbatch_extra)")
    if hint == "gpus":
        hint = ("this cluster (or partition) has no GPU gres: pass gpus=0, or partition= one with GPU nodes"
                if cluster.gpus else "check the gres asked in sbatch_extra")
    return f"sbatch refused the job: {text}; {hint}"
