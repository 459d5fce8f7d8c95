"""Run sah on the engines scripts/scaleout/services.sh started, then check what they recorded.

Every scenario runs the real ``sah-train`` (tiny settings: 6 synthetic patients, 1 epoch, a
2-level UNet on 64 px slices) against SLURM, PostgreSQL and the MLflow tracking server named in
the environment (SLURM_CONF, SAH_SCALEOUT_PG, SAH_SCALEOUT_MLFLOW[_ARTIFACTS]); the checks
read MLflow (MlflowClient), Optuna and squeue afterwards. Prints one table of checks with
PASS/FAIL and the seconds each scenario took; exits 1 if any check failed.

    python scripts/scaleout/check.py --work <folder> [--only name ...]
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

SAH_TRAIN = [sys.executable, "-m", "sah.cli.train"]
EXPERIMENT = "sah-segmentation"
TINY = ["experiment=tiny"]  # conf/experiment/tiny.yaml, as the sweep tests run it
COMMAND_TIMEOUT_S = 600


@dataclass
class Check:
    scenario: str
    name: str
    ok: bool
    detail: str = ""


@dataclass
class Report:
    checks: list[Check] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)

    def add(self, scenario: str, name: str, ok: bool, detail: str = "") -> bool:
        self.checks.append(Check(scenario, name, bool(ok), detail))
        return bool(ok)

    def table(self) -> str:
        rows = [("scenario", "check", "result", "s", "detail")]
        for c in self.checks:
            secs = f"{self.seconds.get(c.scenario, 0):.0f}"
            rows.append((c.scenario, c.name, "PASS" if c.ok else "FAIL", secs, c.detail))
        widths = [max(len(r[i]) for r in rows) for i in range(4)]
        lines = []
        for row in rows:
            cells = [row[i].ljust(widths[i]) for i in range(4)]
            lines.append("  ".join(cells) + "  " + row[4])
        lines.insert(1, "-" * len(lines[0]))
        return "\n".join(lines)


class Work:
    """One folder per scenario; commands run there with a clean environment, logs kept."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.cache = root / "cache"

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("SAH_PARENT", "MLFLOW_"))}
        env.update(SAH_CACHE_DIR=str(self.cache), PYTHONUNBUFFERED="1")
        return env

    def folder(self, name: str) -> Path:
        path = self.root / name
        path.mkdir(parents=True, exist_ok=True)
        return path

    def start(self, name: str, args: list[str], tag: str = "") -> subprocess.Popen:
        folder = self.folder(name)
        log = folder / f"sah-train{tag}.log"
        print(f"$ cd {folder} && sah-train {' '.join(args)}  > {log.name}", flush=True)
        return subprocess.Popen(
            [*SAH_TRAIN, *args],
            cwd=folder,
            env=self.env(),
            stdout=log.open("w"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def run(self, name: str, args: list[str], tag: str = "") -> tuple[int, str]:
        proc = self.start(name, args, tag)
        try:
            code = proc.wait(timeout=COMMAND_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            code = proc.wait()
        return code, self.log(name, tag)

    def log(self, name: str, tag: str = "") -> str:
        return (self.root / name / f"sah-train{tag}.log").read_text(errors="replace")


def client(uri: str):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


def runs_of(uri: str, experiment: str) -> list:
    mlflow = client(uri)
    found = mlflow.get_experiment_by_name(experiment)
    return mlflow.search_runs([found.experiment_id], max_results=1000) if found else []


def split_runs(runs: list) -> tuple[list, list]:
    parents = [r for r in runs if r.data.tags.get("sah.kind") == "sweep"]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    return parents, children


def queue_empty(wait_s: float = 60) -> tuple[bool, str]:
    """Whether SLURM's queue drains (within ``wait_s``: a job whose result is written still
    shows RUNNING, then COMPLETING, for a few seconds while its processes exit)."""
    deadline = time.monotonic() + wait_s
    while True:
        done = subprocess.run(["squeue", "-h", "-o", "%i %T %r"], capture_output=True, text=True)
        listed = "; ".join(done.stdout.split("\n")).strip("; ") or done.stderr.strip()
        if done.returncode == 0 and not done.stdout.strip():
            return True, ""
        if time.monotonic() > deadline:
            return False, f"still queued after {wait_s:.0f} s: {listed}"
        time.sleep(2)


def last_lines(text: str, n: int = 2) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    return " | ".join(lines[-n:])[-300:]


def check_sweep(
    report: Report, scenario: str, uri: str, experiment: str, n_children: int
) -> tuple[list, list]:
    parents, children = split_runs(runs_of(uri, experiment))
    report.add(
        scenario,
        "one parent run",
        len(parents) == 1,
        f"{len(parents)} parent(s): {[p.info.status for p in parents]}",
    )
    parent_ids = {p.info.run_id for p in parents}
    report.add(
        scenario,
        f"{n_children} children of it, FINISHED",
        len(children) == n_children
        and all(c.data.tags["mlflow.parentRunId"] in parent_ids for c in children)
        and all(c.info.status == "FINISHED" for c in children),
        f"{len(children)} child(ren): {sorted(c.info.status for c in children)}",
    )
    return parents, children


def check_artifacts(report: Report, scenario: str, uri: str, children: list) -> None:
    mlflow = client(uri)
    missing = [
        c.info.run_id
        for c in children
        if not {"checkpoints", "resolved_config.yaml"}
        <= {a.path for a in mlflow.list_artifacts(c.info.run_id)}
    ]
    report.add(
        scenario,
        "children's artifacts logged",
        bool(children) and not missing,
        f"missing in {missing}" if missing else "checkpoints/, resolved_config.yaml",
    )


def overlap(children: list) -> bool:
    """Whether the runs were all running at one moment (started before any ended)."""
    starts = [c.info.start_time for c in children]
    ends = [c.info.end_time or 0 for c in children]
    return len(children) > 1 and max(starts) < min(ends)


def scenario_server(work: Work, report: Report) -> None:
    uri = os.environ["SAH_SCALEOUT_MLFLOW"]
    destination = Path(os.environ["SAH_SCALEOUT_MLFLOW_ARTIFACTS"])
    code, log = work.run("server", [*TINY, f"tracking.uri={uri}", "tracking.experiment=sah-server"])
    report.add("mlflow-server", "sah-train exits 0", code == 0, last_lines(log))
    runs = runs_of(uri, "sah-server")
    report.add("mlflow-server", "one FINISHED run", [r.info.status for r in runs] == ["FINISHED"])
    if runs:
        run_id = runs[0].info.run_id
        stored = [p for p in destination.rglob("*") if p.is_file() and run_id in p.parts]
        names = sorted({p.name for p in stored})
        report.add(
            "mlflow-server",
            "artifacts at --artifacts-destination",
            any(p.suffix == ".ckpt" for p in stored) and "resolved_config.yaml" in names,
            f"{len(stored)} file(s) under the server's destination",
        )
    local = work.root / "server" / "mlartifacts"
    report.add("mlflow-server", "none left on the client", not local.exists(), str(local))
    report.add(
        "mlflow-server",
        "UI hint opens the server",
        f"open {uri} in a browser" in log and "mlflow ui --backend-store-uri http" not in log,
    )


def scenario_preflight(work: Work, report: Report) -> None:
    cpus = (os.cpu_count() or 2) * 4
    code, log = work.run(
        "preflight",
        [
            "-m",
            "hydra/launcher=slurm",
            f"hydra.launcher.cpus_per_task={cpus}",
            "adapter.rank=1,2",
            *TINY,
        ],
    )
    lines = [line for line in log.splitlines() if line.startswith("sah-train:")]
    report.add(
        "slurm-preflight",
        "refused in one line naming the key",
        code == 2 and len(lines) == 1 and "hydra.launcher.cpus_per_task" in lines[0],
        lines[0][:160] if lines else last_lines(log),
    )
    empty, queue = queue_empty()
    report.add("slurm-preflight", "nothing submitted", empty, queue)
    report.add(
        "slurm-preflight",
        "no parent run created",
        not runs_of(f"sqlite:///{work.root / 'preflight' / 'mlflow.db'}", EXPERIMENT),
    )


def scenario_grid(work: Work, report: Report) -> None:
    folder = work.folder("grid")
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    code, log = work.run(
        "grid",
        ["-m", "hydra/launcher=slurm", "adapter.rank=1,2", f"tracking.uri={uri}", *TINY],
    )
    report.add("slurm-grid", "sah-train -m exits 0", code == 0, last_lines(log))
    _, children = check_sweep(report, "slurm-grid", uri, EXPERIMENT, 2)
    check_artifacts(report, "slurm-grid", uri, children)
    report.add("slurm-grid", "both jobs ran at once", overlap(children))
    report.add("slurm-grid", "queue empty after", *queue_empty())


def scenario_optuna(work: Work, report: Report) -> None:
    import optuna

    folder = work.folder("optuna")
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    storage = f"sqlite:///{folder / 'optuna.db'}"
    code, log = work.run(
        "optuna",
        [
            "-m",
            "hydra/launcher=slurm",
            "hydra/sweeper=sah_optuna",
            "hydra/sweeper/sampler=grid",
            f"hydra.sweeper.storage={storage}",
            "hydra.sweeper.study_name=slurm",
            "hydra.sweeper.n_trials=2",
            "hydra.sweeper.n_jobs=2",
            "adapter.rank=choice(1,2)",
            f"tracking.uri={uri}",
            *TINY,
        ],
    )
    report.add("slurm-optuna", "sah-train -m exits 0", code == 0, last_lines(log))
    trials = optuna.load_study(study_name="slurm", storage=storage).get_trials()
    complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    report.add(
        "slurm-optuna",
        "2 unique complete trials",
        len(trials) == 2 and len(complete) == 2 and len({str(t.params) for t in trials}) == 2,
        f"{[(t.number, t.state.name, t.params) for t in trials]}",
    )
    _, children = check_sweep(report, "slurm-optuna", uri, EXPERIMENT, 2)
    check_artifacts(report, "slurm-optuna", uri, children)
    report.add("slurm-optuna", "both trials ran at once", overlap(children))


def scenario_interrupt(work: Work, report: Report) -> None:
    folder = work.folder("interrupt")
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    cpus = os.cpu_count() or 2  # one job fills the node: the others pend (Resources)
    proc = work.start(
        "interrupt",
        [
            "-m",
            "hydra/launcher=slurm",
            f"hydra.launcher.cpus_per_task={cpus}",
            "hydra.launcher.poll_s=1",
            "adapter.rank=1,2,3",
            f"tracking.uri={uri}",
            *TINY,
        ],
    )
    deadline = time.monotonic() + 180
    while "pending for" not in work.log("interrupt") and time.monotonic() < deadline:
        if proc.poll() is not None:
            break
        time.sleep(1)
    pending = [line for line in work.log("interrupt").splitlines() if "pending for" in line]
    report.add(
        "slurm-interrupt",
        "a line while jobs pend",
        bool(pending) and "reason" in pending[0],
        pending[0].split("] ", 1)[-1] if pending else "no pending line in 180 s",
    )
    os.kill(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=120)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    log = work.log("interrupt")
    report.add("slurm-interrupt", "SIGTERM cancels", "cancelled SLURM job(s)" in log)
    report.add("slurm-interrupt", "queue empty after", *queue_empty())
    parents, _ = split_runs(runs_of(uri, EXPERIMENT))
    report.add(
        "slurm-interrupt",
        "parent run ended KILLED",
        len(parents) == 1 and parents[0].info.status == "KILLED",
        f"{[p.info.status for p in parents]}",
    )


def scenario_postgres(work: Work, report: Report) -> None:
    import optuna

    storage = os.environ["SAH_SCALEOUT_PG"]
    uri = os.environ["SAH_SCALEOUT_MLFLOW"]
    destination = Path(os.environ["SAH_SCALEOUT_MLFLOW_ARTIFACTS"])
    args = [
        "-m",
        "hydra/sweeper=sah_optuna",
        "hydra/sweeper/sampler=grid",
        f"hydra.sweeper.storage={storage}",
        "hydra.sweeper.study_name=shared",
        "hydra.sweeper.n_trials=4",
        "adapter.rank=choice(1,2,4,8)",
        f"tracking.uri={uri}",
        "tracking.experiment=sah-shared-study",
        *TINY,
    ]
    # Two "machines": two processes in two folders, started at the same moment on a fresh
    # database (no Optuna schema yet).
    procs = [work.start(f"postgres-{side}", args) for side in ("a", "b")]
    codes = []
    for proc in procs:
        try:
            codes.append(proc.wait(timeout=COMMAND_TIMEOUT_S))
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            codes.append(proc.wait())
    logs = [work.log(f"postgres-{side}") for side in ("a", "b")]
    report.add(
        "postgres-2-procs",
        "both processes exit 0",
        codes == [0, 0],
        f"rc {codes}; " + " / ".join(last_lines(log, 1) for log in logs),
    )
    try:
        trials = optuna.load_study(study_name="shared", storage=storage).get_trials()
    except Exception as err:  # no study at all
        trials = []
        report.add("postgres-2-procs", "study readable", False, f"{type(err).__name__}: {err}")
    complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    report.add(
        "postgres-2-procs",
        "4 unique complete trials",
        len(trials) == 4 and len(complete) == 4 and len({str(t.params) for t in trials}) == 4,
        f"{[(t.number, t.state.name, t.params.get('adapter.rank')) for t in trials]}",
    )
    _, children = check_sweep(report, "postgres-2-procs", uri, "sah-shared-study", 4)
    ids = {c.info.run_id for c in children}
    stored = {part for p in destination.rglob("*.ckpt") for part in p.parts if part in ids}
    report.add(
        "postgres-2-procs",
        "artifacts at the server",
        bool(ids) and stored == ids,
        f"checkpoints of {len(stored)}/{len(ids)} children at the destination",
    )


def scenario_ddp(work: Work, report: Report) -> None:
    folder = work.folder("ddp")
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    code, log = work.run(
        "ddp",
        [
            "trainer=ddp",
            "trainer.devices=2",
            "trainer.accelerator=cpu",
            f"tracking.uri={uri}",
            *TINY,
        ],
    )
    report.add("ddp-cpu", "2-process DDP exits 0", code == 0, last_lines(log))
    report.add("ddp-cpu", "two ranks joined", "MEMBER: 1/2" in log and "MEMBER: 2/2" in log)
    runs = runs_of(uri, EXPERIMENT)
    report.add(
        "ddp-cpu",
        "one FINISHED run (rank 0 tracks)",
        [r.info.status for r in runs] == ["FINISHED"] and "val/dice" in runs[0].data.metrics,
        f"{[r.info.status for r in runs]}",
    )


def scenario_slurm_ddp(work: Work, report: Report) -> None:
    folder = work.folder("slurm-ddp")
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    code, log = work.run(
        "slurm-ddp",
        [
            "-m",
            "hydra/launcher=slurm",
            "hydra.launcher.tasks_per_node=2",
            "trainer=ddp",
            "trainer.devices=2",
            "trainer.accelerator=cpu",
            f"tracking.uri={uri}",
            *TINY,
        ],
    )
    report.add("slurm-ddp", "DDP over 2 SLURM tasks exits 0", code == 0, last_lines(log))
    check_sweep(report, "slurm-ddp", uri, EXPERIMENT, 1)
    job_logs = "".join(p.read_text(errors="replace") for p in folder.rglob("*_log.err"))
    report.add(
        "slurm-ddp",
        "two ranks joined",
        "MEMBER: 1/2" in job_logs and "MEMBER: 2/2" in job_logs,
    )


SCENARIOS: dict[str, Callable[[Work, Report], None]] = {
    # The server run first: it also generates the tiny cohort into the shared cache.
    "mlflow-server": scenario_server,
    "slurm-preflight": scenario_preflight,
    "slurm-grid": scenario_grid,
    "slurm-optuna": scenario_optuna,
    "slurm-interrupt": scenario_interrupt,
    "postgres-2-procs": scenario_postgres,
    "ddp-cpu": scenario_ddp,
    "slurm-ddp": scenario_slurm_ddp,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--only", nargs="*", choices=sorted(SCENARIOS))
    args = parser.parse_args(argv)
    work = Work(args.work)
    report = Report()
    for name, scenario in SCENARIOS.items():
        if args.only and name not in args.only:
            continue
        print(f"\n== {name}", flush=True)
        started = time.monotonic()
        try:
            scenario(work, report)
        except Exception as err:  # a scenario that crashes is a failed check, not a stop
            report.add(name, "scenario ran", False, f"{type(err).__name__}: {err}"[:300])
        report.seconds[name] = time.monotonic() - started
        print(f"   {report.seconds[name]:.0f} s", flush=True)
    print()
    print(report.table())
    failed = [c for c in report.checks if not c.ok]
    total = sum(report.seconds.values())
    print(
        f"\n{len(report.checks) - len(failed)}/{len(report.checks)} checks passed in {total:.0f} s"
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
