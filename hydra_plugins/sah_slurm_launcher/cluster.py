"""What a SLURM cluster offers, read from ``scontrol``, and whether a job request fits it.

Plain functions over the text SLURM prints (``scontrol show partition|node --oneliner``,
``squeue -o '%i|%T|%r|%N'``), so tests feed them captured output. Nothing here submits.
No ``from __future__ import annotations``: Hydra's plugin scanner runs this module before it is
in ``sys.modules``, where dataclasses cannot resolve string annotations.
"""

import re
import subprocess
from dataclasses import dataclass, field

from sah.errors import ConfigError, SahError

# Partition states in which SLURM accepts no new job at all.
_CLOSED_STATES = ("INACTIVE", "DRAIN")
# Pending reasons that mean "never as asked": the request exceeds a limit, not a busy cluster.
NEVER_REASONS = (
    "PartitionConfig",
    "PartitionNodeLimit",
    "PartitionTimeLimit",
    "BadConstraints",
    "InvalidAccount",
    "InvalidQOS",
    "DependencyNeverSatisfied",
)
_KEY = re.compile(r"\s+(?=[A-Za-z][\w:./-]*=)")


def parse_records(text: str) -> list[dict[str, str]]:
    """``Key=Value`` records, one per line (values may hold spaces, e.g. ``OS=Linux 6.1 #1``)."""
    records = []
    for line in text.splitlines():
        if "=" not in line:
            continue
        fields = [token.split("=", 1) for token in _KEY.split(line.strip()) if "=" in token]
        records.append({key: value.strip() for key, value in fields})
    return records


def _number(value: str | None) -> float | None:
    """A count or a size in MB; None for UNLIMITED, N/A and the like."""
    if value is None:
        return None
    found = re.fullmatch(r"(\d+(?:\.\d+)?)([KMGT]?)", value.strip())
    if not found:
        return None
    scale = {"": 1, "K": 1 / 1024, "M": 1, "G": 1024, "T": 1024 * 1024}[found.group(2)]
    return float(found.group(1)) * scale


def minutes(value: str | None) -> float | None:
    """SLURM's time format ([D-]HH:MM:SS, MM, MM:SS, HH:MM:SS) in minutes; None if unlimited."""
    if value is None or value.upper() in ("UNLIMITED", "INFINITE", "NONE", "N/A"):
        return None
    days, _, clock = value.rpartition("-")
    parts = [int(p) for p in clock.split(":")]
    if len(parts) == 1:
        hours, mins, secs = (parts[0], 0, 0) if days else (0, parts[0], 0)
    elif len(parts) == 2:
        hours, mins, secs = (0, *parts) if not days else (*parts, 0)
    else:
        hours, mins, secs = parts
    return (int(days or 0) * 24 + hours) * 60 + mins + secs / 60


def gpu_count(gres: str | None) -> int:
    """GPUs in a node's ``Gres`` (``gpu:a100:4(S:0-1),gpu:2``); 0 for ``(null)``."""
    total = 0
    for item in (gres or "").split(","):
        item = re.sub(r"\(.*?\)", "", item)
        parts = item.split(":")
        if parts[0] == "gpu":
            count = parts[-1] if len(parts) > 1 else "1"
            total += int(count) if count.isdigit() else 1
    return total


@dataclass(frozen=True)
class Node:
    name: str
    cpus: int
    memory_mb: float
    gpus: int
    state: str
    partitions: tuple[str, ...]


@dataclass(frozen=True)
class Partition:
    name: str
    default: bool
    state: str
    max_time_min: float | None
    max_nodes: int | None
    max_cpus_per_node: int | None
    max_mem_per_node_mb: float | None
    nodes: list[Node] = field(default_factory=list)


@dataclass(frozen=True)
class Request:
    """What one job of the sweep asks for, as submitit will pass it to sbatch."""

    partition: str | None
    nodes: int = 1
    tasks_per_node: int = 1
    cpus_per_task: int = 1
    mem_gb: float | None = None
    gpus_per_node: int = 0
    timeout_min: float | None = None

    @property
    def cpus_per_node(self) -> int:
        return self.cpus_per_task * self.tasks_per_node


def parse_cluster(partitions_text: str, nodes_text: str) -> dict[str, Partition]:
    """Partitions by name, each with its nodes, from ``scontrol show ... --oneliner`` text."""
    nodes = []
    for rec in parse_records(nodes_text):
        if "NodeName" not in rec:
            continue
        cpus = rec.get("CPUEfctv") or rec.get("CPUTot") or "0"
        nodes.append(
            Node(
                name=rec["NodeName"],
                cpus=int(cpus) if cpus.isdigit() else 0,
                memory_mb=_number(rec.get("RealMemory")) or 0.0,
                gpus=gpu_count(rec.get("Gres")),
                state=rec.get("State", "UNKNOWN"),
                partitions=tuple(p for p in rec.get("Partitions", "").split(",") if p),
            )
        )
    cluster = {}
    for rec in parse_records(partitions_text):
        if "PartitionName" not in rec:
            continue
        name = rec["PartitionName"]
        max_nodes = _number(rec.get("MaxNodes"))
        max_cpus = _number(rec.get("MaxCPUsPerNode"))
        cluster[name] = Partition(
            name=name,
            default=rec.get("Default") == "YES",
            state=rec.get("State", "UP"),
            max_time_min=minutes(rec.get("MaxTime")),
            max_nodes=int(max_nodes) if max_nodes else None,
            max_cpus_per_node=int(max_cpus) if max_cpus else None,
            max_mem_per_node_mb=_number(rec.get("MaxMemPerNode")),
            nodes=[n for n in nodes if name in n.partitions],
        )
    return cluster


def _key(name: str) -> str:
    return f"hydra.launcher.{name}"


def _gb(mb: float) -> str:
    return f"{mb / 1024:.1f}".rstrip("0").rstrip(".")


def check_request(request: Request, cluster: dict[str, Partition]) -> Partition:
    """The partition the request goes to, or a ConfigError naming the launcher key that asks
    for more than any node (or the partition's limits) can give, so it would pend forever."""
    if request.partition:
        if request.partition not in cluster:
            raise ConfigError(
                _key("partition"),
                f"this cluster has no partition {request.partition!r}",
                f"use one of {', '.join(sorted(cluster)) or '(none listed by scontrol)'}",
            )
        part = cluster[request.partition]
    else:
        defaults = [p for p in cluster.values() if p.default]
        if not defaults:
            raise ConfigError(
                _key("partition"),
                "null, and this cluster has no default partition",
                f"set it to one of {', '.join(sorted(cluster))}",
            )
        part = defaults[0]
    where = f"partition {part.name!r}"
    if part.state.upper() in _CLOSED_STATES:
        raise ConfigError(
            _key("partition"),
            f"{where} is {part.state} and accepts no jobs",
            "choose another partition (scontrol show partition)",
        )
    if request.timeout_min and part.max_time_min and request.timeout_min > part.max_time_min:
        raise ConfigError(
            _key("timeout_min"),
            f"{request.timeout_min:g} min is over {where}'s MaxTime of {part.max_time_min:g} min",
            f"set it to at most {int(part.max_time_min)}",
        )
    if not part.nodes:
        raise ConfigError(_key("partition"), f"{where} has no nodes", "choose another partition")

    most_cpus = max(n.cpus for n in part.nodes)
    if part.max_cpus_per_node:
        most_cpus = min(most_cpus, part.max_cpus_per_node)
    if request.cpus_per_node > most_cpus:
        per_task = most_cpus // max(1, request.tasks_per_node)
        key = "cpus_per_task" if per_task >= 1 else "tasks_per_node"
        raise ConfigError(
            _key(key),
            f"{request.cpus_per_task} CPUs per task x {request.tasks_per_node} task(s) = "
            f"{request.cpus_per_node} CPUs, and the largest node of {where} has {most_cpus}",
            f"set hydra.launcher.cpus_per_task to at most {max(per_task, 1)}"
            if per_task >= 1
            else f"set hydra.launcher.tasks_per_node to at most {most_cpus}",
        )
    if request.mem_gb:
        most_mb = max(n.memory_mb for n in part.nodes)
        if part.max_mem_per_node_mb:
            most_mb = min(most_mb, part.max_mem_per_node_mb)
        if request.mem_gb * 1024 > most_mb:
            raise ConfigError(
                _key("mem_gb"),
                f"{request.mem_gb:g} GB per node, and the largest node of {where} has "
                f"{_gb(most_mb)} GB",
                f"set it to at most {int(most_mb // 1024)}",
            )
    most_gpus = max(n.gpus for n in part.nodes)
    if request.gpus_per_node > most_gpus:
        raise ConfigError(
            _key("gpus_per_node"),
            f"{request.gpus_per_node} GPU(s) per node, and the nodes of {where} have "
            + (f"at most {most_gpus}" if most_gpus else "none"),
            f"set it to {most_gpus} or choose a GPU partition"
            if most_gpus
            else "set it to 0 (CPU jobs) or choose a GPU partition",
        )
    fitting = [n for n in part.nodes if fits(request, n)]
    if not fitting:
        raise ConfigError(
            _key("partition"),
            f"no single node of {where} has {request.cpus_per_node} CPUs, "
            f"{request.mem_gb or 0:g} GB and {request.gpus_per_node} GPU(s) together",
            "ask for less of one of them or choose another partition",
        )
    limit = min(len(fitting), part.max_nodes or len(fitting))
    if request.nodes > limit:
        raise ConfigError(
            _key("nodes"),
            f"{request.nodes} nodes, and {where} can give at most {limit} for this request",
            f"set it to at most {limit}",
        )
    return part


def fits(request: Request, node: Node) -> bool:
    return (
        node.cpus >= request.cpus_per_node
        and node.memory_mb >= (request.mem_gb or 0) * 1024
        and node.gpus >= request.gpus_per_node
    )


def run_scontrol(*args: str) -> str:
    """``scontrol <args> --oneliner``; a SahError saying what failed if SLURM cannot answer."""
    command = ["scontrol", *args, "--oneliner"]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    except FileNotFoundError as err:
        raise SahError(
            "hydra/launcher=slurm: scontrol is not on PATH; run the sweep on a SLURM login node"
        ) from err
    except subprocess.TimeoutExpired as err:
        raise SahError(f"hydra/launcher=slurm: `{' '.join(command)}` did not answer") from err
    if done.returncode != 0:
        raise SahError(
            f"hydra/launcher=slurm: `{' '.join(command)}` failed: "
            f"{(done.stderr or done.stdout).strip()} — is slurmctld reachable from here?"
        )
    return done.stdout


def read_cluster() -> dict[str, Partition]:
    return parse_cluster(run_scontrol("show", "partition"), run_scontrol("show", "node"))


@dataclass(frozen=True)
class QueueState:
    state: str
    reason: str
    nodes: str


def parse_squeue(text: str) -> dict[str, QueueState]:
    """``squeue -h -r -o '%i|%T|%r|%N'`` lines by job id (``123_0`` for array tasks)."""
    states = {}
    for line in text.splitlines():
        parts = line.strip().split("|")
        if len(parts) >= 3:
            states[parts[0]] = QueueState(parts[1], parts[2], parts[3] if len(parts) > 3 else "")
    return states


def read_queue(job_ids: list[str]) -> dict[str, QueueState] | None:
    """The queue state of these jobs (absent: finished); None when squeue could not answer."""
    arrays = sorted({job_id.split("_")[0] for job_id in job_ids})
    command = ["squeue", "-h", "-r", "-o", "%i|%T|%r|%N", "-j", ",".join(arrays)]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if done.returncode != 0:
        # Every id already gone from the queue: squeue says so and fails.
        return {} if "Invalid job id" in done.stderr else None
    return parse_squeue(done.stdout)


def pending_line(job_id: str, label: str, state: QueueState, waited_s: float) -> str:
    """The line a user sees while a job waits, with SLURM's reason and what it means."""
    waited = f"{int(waited_s) // 60}m{int(waited_s) % 60:02d}s"
    line = f"SLURM job {job_id} ({label}) pending for {waited}: reason {state.reason}"
    if state.reason in NEVER_REASONS:
        line += " — SLURM will not start it as asked (Ctrl-C cancels this sweep's jobs)"
    return line
