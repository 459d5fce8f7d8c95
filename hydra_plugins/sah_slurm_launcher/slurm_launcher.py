"""``hydra/launcher=slurm``: each job a SLURM job through submitit, watched until it ends.

Before the sweep starts, the request (CPUs, memory, GPUs, nodes, time) is checked against what
``scontrol`` says the partition's nodes have: a job no node can run would otherwise pend
forever while the sweep waits in silence. While jobs wait, a line gives SLURM's reason. A job
that leaves the queue without a result is a failed job, not an endless wait (submitit alone
asks ``sacct``, which clusters without accounting lack). Ctrl-C, SIGTERM or the end of the
sweep's main thread cancels (``scancel``) every job of this sweep still queued or running.
"""

import logging
import signal
import subprocess
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, filter_overrides
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf

from hydra_plugins.sah_slurm_launcher.cluster import QueueState, pending_line, read_queue
from hydra_plugins.sah_slurm_launcher.preflight import preflight, with_cpu_default
from sah.errors import SahError
from sah.tracking.sweep_runs import stderr_lines

try:
    from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf
    from hydra_plugins.hydra_submitit_launcher.submitit_launcher import SlurmLauncher
except ImportError:  # the [slurm] extra is not installed: config.py registers nothing either
    SlurmLauncher = None

log = logging.getLogger("sah.launcher")

# Keys of sah's launcher config that are not sbatch/submitit parameters.
_OWN_KEYS = ("preflight", "poll_s", "pending_report_s")
# A job gone from squeue gets this long for its result file to appear (shared file systems).
_RESULT_GRACE_S = 60.0


def cancel(job_ids: Sequence[str], why: str) -> None:
    """``scancel`` these jobs (their arrays), saying so; never raises."""
    arrays = sorted({job_id.split("_")[0] for job_id in job_ids})
    if not arrays:
        return
    try:
        subprocess.run(["scancel", *arrays], capture_output=True, timeout=60, check=False)
        log.warning("cancelled SLURM job(s) %s: %s", ", ".join(arrays), why)
    except (OSError, subprocess.TimeoutExpired) as err:
        log.error("could not cancel SLURM job(s) %s (%s): %s", ", ".join(arrays), why, err)


@contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """In the main thread, SIGTERM (kill, preemption of the sweep's own job) raises like
    Ctrl-C, so the jobs get cancelled; a handler someone else installed is left alone."""
    main = threading.current_thread() is threading.main_thread()
    if not main or signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        yield
        return

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


class JobWatch:
    """Waits for submitted jobs, reporting pending reasons; cancels them if interrupted."""

    def __init__(self, jobs: list[Any], labels: list[str], poll_s: float, report_s: float):
        self.jobs = {job.job_id: job for job in jobs}
        self.labels = dict(zip(self.jobs, labels, strict=True))
        self.poll_s = poll_s
        self.report_s = report_s
        self.reported: dict[str, tuple[str, float]] = {}
        self.gone_at: dict[str, float] = {}
        self.started = time.monotonic()

    def wait(self) -> dict[str, Any]:
        """job id -> its task results (a list), or an exception when it failed without one."""
        active = dict(self.jobs)
        results: dict[str, Any] = {}
        looks = 0
        try:
            while active:
                if not threading.main_thread().is_alive():
                    cancel(list(active), "the sweep ended")
                    for job_id in active:
                        results[job_id] = SahError(f"SLURM job {job_id} cancelled: sweep ended")
                    break
                for job_id, job in list(active.items()):
                    if has_results(job):
                        results[job_id] = collect(job)
                        del active[job_id]
                if active and looks % 3 == 0:
                    queue = read_queue(list(active))
                    if queue is not None:
                        for job_id in self.lost(active, queue):
                            results[job_id] = SahError(
                                f"SLURM job {job_id} left the queue without a result (cancelled,"
                                f" killed or out of memory?); see {active[job_id].paths.stderr}"
                            )
                            del active[job_id]
                if active:
                    looks += 1
                    time.sleep(self.poll_s)
        except BaseException:
            cancel(list(active), "the sweep was interrupted")
            raise
        return results

    def lost(self, active: dict[str, Any], queue: dict[str, QueueState]) -> list[str]:
        now = time.monotonic()
        gone = []
        for job_id in active:
            state = queue.get(job_id)
            if state is None:
                if now - self.gone_at.setdefault(job_id, now) > _RESULT_GRACE_S:
                    gone.append(job_id)
                continue
            self.gone_at.pop(job_id, None)
            self.report(job_id, state, now)
        return gone

    def report(self, job_id: str, state: QueueState, now: float) -> None:
        if state.state == "PENDING" and state.reason == "None":
            return  # just submitted: the scheduler has not looked at it yet
        key = f"{state.state}:{state.reason}"
        last = self.reported.get(job_id)
        if last is not None and last[0] == key and now - last[1] < self.report_s:
            return
        self.reported[job_id] = (key, now)
        label = self.labels[job_id]
        if state.state == "PENDING":
            log.info(pending_line(job_id, label, state, now - self.started))
        elif last is None or not last[0].startswith(state.state):
            log.info("SLURM job %s (%s) %s on %s", job_id, label, state.state.lower(), state.nodes)


def has_results(job: Any) -> bool:
    """Every task of the job wrote its result file (DDP jobs have one task per rank)."""
    return all(job.task(t).paths.result_pickle.exists() for t in range(job.num_tasks))


def collect(job: Any) -> Any:
    try:
        return job.results()
    except Exception as err:  # the job raised outside the task (submitit wraps it)
        return err


if SlurmLauncher is not None:

    class SahSlurmLauncher(SlurmLauncher):  # type: ignore[misc, valid-type]
        def __init__(self, **params: Any) -> None:
            self.own = {key: params.pop(key) for key in _OWN_KEYS if key in params}
            super().__init__(**params)

        def setup(
            self,
            *,
            hydra_context: HydraContext,
            task_function: TaskFunction,
            config: DictConfig,
        ) -> None:
            super().setup(hydra_context=hydra_context, task_function=task_function, config=config)
            stderr_lines(log.name)
            self.params = with_cpu_default(self.params, config)
            if self.own.get("preflight", True):
                part = preflight(self.params, config)
                log.info(
                    "SLURM partition %r: %s CPU(s) x %s task(s), %s GB, %s GPU(s) per node fit",
                    part.name,
                    self.params["cpus_per_task"],
                    self.params.get("tasks_per_node", 1),
                    self.params.get("mem_gb"),
                    self.params.get("gpus_per_node") or 0,
                )

        def executor(self) -> Any:
            import submitit

            executor = submitit.AutoExecutor(
                folder=self.params["submitit_folder"],
                cluster="slurm",
                slurm_max_num_timeout=self.params.get("max_num_timeout", 0),
            )
            generic = set(OmegaConf.structured(BaseQueueConf).keys())
            executor.update_parameters(
                **{
                    key if key in generic else f"slurm_{key}": value
                    for key, value in self.params.items()
                    if key not in ("submitit_folder", "max_num_timeout")
                }
            )
            return executor

        def launch(
            self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int
        ) -> Sequence[JobReturn]:
            assert self.config is not None
            sweep_dir = Path(str(self.config.hydra.sweep.dir))
            sweep_dir.mkdir(parents=True, exist_ok=True)
            state = Singleton.get_state()
            indices = range(initial_job_idx, initial_job_idx + len(job_overrides))
            labels = [f"#{idx}" for idx in indices]
            # What BaseSubmititLauncher.__call__ takes in the job, one tuple per job.
            arguments = [
                (list(overrides), "hydra.sweep.dir", idx, f"job_id_for_{idx}", state)
                for idx, overrides in zip(indices, job_overrides, strict=True)
            ]
            with sigterm_as_interrupt():
                jobs = self.executor().map_array(self, *zip(*arguments, strict=True))
                for job, label, overrides in zip(jobs, labels, job_overrides, strict=True):
                    log.info(
                        "SLURM job %s (%s): %s",
                        job.job_id,
                        label,
                        " ".join(filter_overrides(overrides)),
                    )
                watch = JobWatch(
                    jobs,
                    labels,
                    float(self.own.get("poll_s", 5.0)),
                    float(self.own.get("pending_report_s", 300.0)),
                )
                results = watch.wait()
            returns = []
            for job, overrides in zip(jobs, job_overrides, strict=True):
                outcome = results[job.job_id]
                if isinstance(outcome, BaseException):
                    log.error("%s", outcome)
                    outcome = [
                        JobReturn(
                            overrides=list(overrides),
                            status=JobStatus.FAILED,
                            _return_value=outcome,
                        )
                    ]
                returns.append(outcome[0])  # rank 0's return for a multi-task (DDP) job
            return returns
