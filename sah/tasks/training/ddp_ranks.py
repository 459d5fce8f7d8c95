"""DDP for sah-train jobs, sweeps included: rank 0 starts the other ranks itself.

Lightning's own launcher re-runs ``sys.argv``, which inside a sweep is the whole sweep (and
inside a launcher's worker process is not sah-train at all). Here rank 0 starts ranks 1..n-1
as ``python -m sah.cli.train <this job's overrides>`` in the job's output folder, with the
torchrun-style variables (MASTER_ADDR/PORT, WORLD_SIZE, RANK, LOCAL_RANK) that make Lightning
treat the processes as launched externally. Every rank composes the same config from the same
overrides, so a sweep's parameters are sampled once per trial, never per rank. Ranks other than
0 only train; tracking and evaluation stay on rank 0. Under SLURM (tasks_per_node = devices) or
torchrun the ranks already exist and nothing is started here.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from sah.errors import ConfigError

log = logging.getLogger("sah.train")

_DDP_ENV = ("MASTER_ADDR", "MASTER_PORT", "WORLD_SIZE", "NODE_RANK", "RANK", "LOCAL_RANK")


def is_worker_rank() -> bool:
    """True in a DDP rank other than 0, however it was started."""
    for name in ("RANK", "LOCAL_RANK", "SLURM_PROCID"):
        if os.environ.get(name, "0") not in ("", "0"):
            return True
    return False


def ranks_exist() -> bool:
    """Whether something else (torchrun, SLURM tasks, this module) already started the ranks."""
    return "LOCAL_RANK" in os.environ or int(os.environ.get("SLURM_NTASKS", "1") or 1) > 1


def device_count(trainer: DictConfig) -> int:
    devices: Any = trainer.get("devices", 1)
    if isinstance(devices, int):
        return devices
    if hasattr(devices, "__len__") and not isinstance(devices, str):
        return len(devices)
    return 1


def on_cuda(accelerator: str) -> bool:
    """Whether Lightning's ``accelerator`` setting puts this run on CUDA GPUs."""
    name = str(accelerator).lower()
    if name == "auto":
        import torch

        return torch.cuda.is_available()
    return name in ("gpu", "cuda")


def sync_batchnorm_for(accelerator: str) -> bool:
    """trainer=ddp's default: synchronise BatchNorm statistics across ranks on GPUs, where
    per-rank batches are small; torch's SyncBatchNorm has no CPU (gloo) implementation."""
    return on_cuda(accelerator)


def check_sync_batchnorm(trainer: DictConfig) -> None:
    """Refuse SyncBatchNorm off the GPU before any rank starts, naming the key."""
    accelerator = str(trainer.get("accelerator", "auto"))
    if trainer.get("sync_batchnorm") and not on_cuda(accelerator):
        raise ConfigError(
            "trainer.sync_batchnorm",
            f"SyncBatchNorm runs on CUDA GPUs only, and trainer.accelerator={accelerator} "
            "gives none here",
            "leave it to trainer=ddp (on with GPUs, off without) or set it to false",
        )


def rank_command() -> list[str]:
    """``python -m sah.cli.train`` with this job's overrides, run in this job's output folder."""
    hydra_cfg = HydraConfig.get()
    command = [sys.executable, "-m", "sah.cli.train"]
    for source in hydra_cfg.runtime.config_sources:
        if source.provider == "command-line" and source.schema == "file":
            command += ["--config-dir", str(source.path)]
    if hydra_cfg.job.config_name and hydra_cfg.job.config_name != "train":
        command += ["--config-name", str(hydra_cfg.job.config_name)]
    output_dir = str(hydra_cfg.runtime.output_dir).replace("'", "\\'")
    return [
        *command,
        *hydra_cfg.overrides.task,
        f"hydra.run.dir='{output_dir}'",
        "hydra.output_subdir=null",
    ]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _watch(procs: list[subprocess.Popen], done: threading.Event) -> None:
    """A rank that dies leaves the others blocked in a collective: end this job too."""
    while not done.wait(2.0):
        for rank, proc in enumerate(procs, start=1):
            code = proc.poll()
            if code not in (None, 0):
                log.error("DDP rank %d exited with code %s; stopping this trial", rank, code)
                for other in procs:
                    if other.poll() is None:
                        other.kill()
                os.kill(os.getpid(), signal.SIGTERM)
                return


@contextmanager
def ddp_ranks(cfg: DictConfig) -> Iterator[None]:
    """Around trainer creation and fit: start the other ranks when this job needs them."""
    trainer = cfg.trainer
    n = device_count(trainer)
    if str(trainer.get("strategy", "")) == "ddp":
        check_sync_batchnorm(trainer)
    if str(trainer.get("strategy", "")) != "ddp" or n < 2 or ranks_exist():
        yield
        return
    shared = {
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(_free_port()),
        "WORLD_SIZE": str(n),
        "NODE_RANK": "0",
    }
    saved = {name: os.environ.get(name) for name in _DDP_ENV}
    os.environ.update(shared, RANK="0", LOCAL_RANK="0")
    command = rank_command()
    log.info("starting DDP ranks 1..%d: %s", n - 1, " ".join(command))
    record = Path(str(HydraConfig.get().runtime.output_dir)) / "ddp_rank_command.txt"
    record.write_text(" ".join(command) + "\n")
    procs = [
        subprocess.Popen(command, env={**os.environ, "RANK": str(r), "LOCAL_RANK": str(r)})
        for r in range(1, n)
    ]
    done = threading.Event()
    threading.Thread(target=_watch, args=(procs, done), daemon=True).start()
    try:
        yield
    finally:
        done.set()
        deadline = time.monotonic() + 120
        for proc in procs:
            try:
                proc.wait(timeout=max(1.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
