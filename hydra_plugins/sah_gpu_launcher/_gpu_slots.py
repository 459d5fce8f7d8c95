"""Disjoint sets of GPUs for jobs that run at the same time.

Threads of one launcher share the free set; a lock file per GPU (``flock``, released by the
kernel when its holder dies) keeps other sah sweeps on the same machine off those GPUs too.
"""

from __future__ import annotations

import fcntl
import getpass
import os
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

_POLL_S = 2.0


def default_lock_dir() -> Path:
    return Path(tempfile.gettempdir()) / f"sah-gpu-locks-{getpass.getuser()}"


def visible_gpus() -> list[str]:
    """GPU ids this process may use, without creating a CUDA context here."""
    mask = os.environ.get("CUDA_VISIBLE_DEVICES")
    if mask is not None:
        return [g.strip() for g in mask.split(",") if g.strip() and g.strip() != "-1"]
    try:
        import torch

        return [str(i) for i in range(torch.cuda.device_count())]
    except Exception:
        return []


class GpuSlots:
    def __init__(self, gpus: list[str], per_job: int, lock_dir: Path | None) -> None:
        self.gpus = gpus
        self.per_job = per_job
        self.lock_dir = lock_dir
        self._busy: set[str] = set()
        self._changed = threading.Condition()
        if lock_dir is not None:
            lock_dir.mkdir(parents=True, exist_ok=True)

    @property
    def n_slots(self) -> int:
        return len(self.gpus) // self.per_job

    def _lock_file(self, gpu: str) -> int | None:
        """An flock'ed descriptor for ``gpu``, or None when another process holds it."""
        if self.lock_dir is None:
            return -1
        name = "gpu-" + "".join(c if c.isalnum() or c in "-_" else "_" for c in gpu) + ".lock"
        fd = os.open(self.lock_dir / name, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        return fd

    def _release(self, taken: list[tuple[str, int]]) -> None:
        for gpu, fd in taken:
            if fd >= 0:
                fcntl.flock(fd, fcntl.LOCK_UN)
                os.close(fd)
            self._busy.discard(gpu)

    def _try_take(self) -> list[tuple[str, int]] | None:
        taken: list[tuple[str, int]] = []
        for gpu in self.gpus:
            if gpu in self._busy:
                continue
            fd = self._lock_file(gpu)
            if fd is None:
                continue
            taken.append((gpu, fd))
            self._busy.add(gpu)
            if len(taken) == self.per_job:
                return taken
        self._release(taken)
        return None

    @contextmanager
    def acquire(self) -> Iterator[list[str] | None]:
        """GPUs for one job, waiting until enough are free; None on a machine without GPUs."""
        if not self.gpus:
            yield None
            return
        with self._changed:
            while (taken := self._try_take()) is None:
                self._changed.wait(_POLL_S)  # re-polls other processes' locks too
        try:
            yield [gpu for gpu, _ in taken]
        finally:
            with self._changed:
                self._release(taken)
                self._changed.notify_all()
