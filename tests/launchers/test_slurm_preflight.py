"""The SLURM launcher's pre-flight check, fed what `scontrol show partition|node --oneliner` and
`squeue` printed on real slurmctld 22.05 instances (slurm_text/): this project's single-node
scale-out cluster (2 CPUs, 23.5 GB, no GPU) and a lab cluster of CPU and GPU partitions."""

from __future__ import annotations

from pathlib import Path

import pytest

from hydra_plugins.sah_slurm_launcher.cluster import (
    Request,
    check_request,
    gpu_count,
    minutes,
    parse_cluster,
    parse_records,
    parse_squeue,
    pending_line,
)
from sah.errors import ConfigError

TEXT = Path(__file__).parent / "slurm_text"


def cluster(name: str):
    return parse_cluster(
        (TEXT / f"{name}_partitions.txt").read_text(), (TEXT / f"{name}_nodes.txt").read_text()
    )


def test_the_single_node_cluster_reads_as_scontrol_printed_it() -> None:
    (debug,) = cluster("single_node").values()
    assert (debug.name, debug.default, debug.state, debug.max_time_min) == (
        "debug",
        True,
        "UP",
        None,
    )
    (node,) = debug.nodes
    assert (node.name, node.cpus, node.memory_mb, node.gpus) == ("localhost", 2, 24105, 0)


def test_the_lab_cluster_reads_as_scontrol_printed_it() -> None:
    parts = cluster("lab_cluster")
    assert sorted(parts) == ["cpu", "gpu", "old"]
    assert parts["cpu"].default and len(parts["cpu"].nodes) == 4
    assert parts["cpu"].max_time_min == 2 * 24 * 60
    assert parts["gpu"].max_nodes == 1 and parts["gpu"].max_time_min == 24 * 60
    assert {(n.name, n.cpus, n.gpus) for n in parts["gpu"].nodes} == {
        ("gpu01", 32, 4),
        ("gpu02", 32, 4),
    }
    assert parts["old"].state == "INACTIVE"


def test_a_value_with_spaces_stays_whole() -> None:
    (node,) = parse_records((TEXT / "single_node_nodes.txt").read_text())
    assert node["OS"].startswith("Linux ") and node["RealMemory"] == "24105"


def test_the_issue_request_is_refused_naming_the_key() -> None:
    """The old defaults (8 CPUs, 32 GB) on the 2-CPU node: sbatch accepts it and it pends
    forever (Reason=PartitionConfig); the check refuses it before anything is submitted."""
    request = Request(partition="debug", cpus_per_task=8, mem_gb=32)
    with pytest.raises(ConfigError, match=r"'hydra\.launcher\.cpus_per_task'.*8 CPUs.* has 2"):
        check_request(request, cluster("single_node"))


@pytest.mark.parametrize(
    ("request_", "key", "says"),
    [
        (Request(partition="debug", mem_gb=32), "mem_gb", "23.5 GB"),
        (Request(partition="debug", gpus_per_node=1), "gpus_per_node", "have none"),
        (Request(partition="gpu"), "partition", "no partition 'gpu'.*use one of debug"),
        (Request(partition="debug", tasks_per_node=3), "tasks_per_node", "3 task"),
        (Request(partition="debug", nodes=2), "nodes", "at most 1"),
    ],
)
def test_requests_the_single_node_cannot_meet(request_: Request, key: str, says: str) -> None:
    with pytest.raises(ConfigError, match=rf"'hydra\.launcher\.{key}'.*{says}"):
        check_request(request_, cluster("single_node"))


def test_what_fits_the_single_node_passes() -> None:
    # The defaults for a loader without workers: 1 CPU, 8 GB, no GPU; DDP over 2 tasks.
    assert check_request(Request(partition=None, mem_gb=8), cluster("single_node")).name == "debug"
    assert check_request(Request(partition="debug", tasks_per_node=2), cluster("single_node"))


@pytest.mark.parametrize(
    ("request_", "key", "says"),
    [
        (Request(partition="cpu", gpus_per_node=1), "gpus_per_node", "choose a GPU partition"),
        (Request(partition="gpu", gpus_per_node=8), "gpus_per_node", "at most 4"),
        (Request(partition="gpu", timeout_min=2000), "timeout_min", "MaxTime of 1440"),
        (Request(partition="gpu", gpus_per_node=1, nodes=2), "nodes", "at most 1"),
        (Request(partition="old"), "partition", "INACTIVE"),
        (Request(partition="cpu", cpus_per_task=32), "cpus_per_task", "has 16"),
        (Request(partition="cpu", nodes=5), "nodes", "at most 4"),
    ],
)
def test_requests_the_lab_cluster_cannot_meet(request_: Request, key: str, says: str) -> None:
    with pytest.raises(ConfigError, match=rf"'hydra\.launcher\.{key}'.*{says}"):
        check_request(request_, cluster("lab_cluster"))


def test_what_fits_the_lab_cluster_passes() -> None:
    parts = cluster("lab_cluster")
    ddp = Request(partition="gpu", gpus_per_node=4, tasks_per_node=4, cpus_per_task=8, mem_gb=200)
    assert check_request(ddp, parts).name == "gpu"
    assert check_request(Request(partition=None, nodes=4, mem_gb=60), parts).name == "cpu"


def test_slurm_time_and_gres_formats() -> None:
    assert minutes("2-00:00:00") == 2880 and minutes("1-12") == 2160 and minutes("90") == 90
    assert minutes("01:30:00") == 90 and minutes("UNLIMITED") is None
    assert gpu_count("gpu:a100:4(S:0-1),gpu:v100:2") == 6 and gpu_count("(null)") == 0


def test_pending_reasons_read_from_squeue() -> None:
    queue = parse_squeue((TEXT / "squeue.txt").read_text())
    assert queue["4_0"].state == "RUNNING" and queue["4_0"].nodes == "localhost"
    assert queue["4_1"].reason == "Resources"
    line = pending_line("1", "#0", queue["1"], 125)
    assert line.startswith("SLURM job 1 (#0) pending for 2m05s: reason PartitionConfig")
    assert "will not start it as asked" in line
    assert "will not start" not in pending_line("4_1", "#1", queue["4_1"], 5)
