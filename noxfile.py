"""Developer sessions: `nox -s demo`, `tests`, `tests_slow`, `lint`, `typecheck`, `bench`,
`scaleout`.

Each session installs the CPU build of torch first (TORCH_SPEC, default torch==2.13.0), so
nothing pulls a multi-GB CUDA build. With TORCH_SPEC=none the session's venv reuses the torch
of the Python that runs nox (system site packages), for GPU users who already have one.
"""

from __future__ import annotations

import os

import nox

nox.options.default_venv_backend = "venv"
nox.options.reuse_existing_virtualenvs = True
nox.options.sessions = ["tests"]

TORCH_SPEC = os.environ.get("TORCH_SPEC", "torch==2.13.0")
VENV_PARAMS = {"--system-site-packages"} if TORCH_SPEC == "none" else set()


def install(session: nox.Session) -> None:
    if TORCH_SPEC != "none":
        session.install(TORCH_SPEC)
    session.install("-e", ".[dev]")


@nox.session(venv_params=list(VENV_PARAMS))
def demo(session: nox.Session) -> None:
    """Generate the synthetic SAH cohort, train the CPU UNet on fold 0, log to MLflow."""
    install(session)
    session.run("sah-train", *session.posargs)


@nox.session(venv_params=list(VENV_PARAMS))
def tests(session: nox.Session) -> None:
    """The fast suite (slow tests excluded), under 10 minutes on 2 cores."""
    install(session)
    session.run("pytest", "-q", *session.posargs)


@nox.session(venv_params=list(VENV_PARAMS))
def tests_slow(session: nox.Session) -> None:
    """Only the tests marked slow: sweeps, recipes, full-size runs."""
    install(session)
    session.run("pytest", "-q", "-m", "slow", *session.posargs)


@nox.session(venv_params=list(VENV_PARAMS))
def bench(session: nox.Session) -> None:
    """Benchmarks, ours against the reference side by side; results in bench_results/."""
    install(session)
    session.run("python", "benchmarks/bench_adapters.py", "--out", "bench_results/adapters.json")
    session.run(
        "python", "benchmarks/bench_conv_costs.py", "--out", "bench_results/conv_costs.json"
    )
    session.run("python", "benchmarks/bench_cache.py", "--out", "bench_results/cache.json")
    session.run("python", "benchmarks/bench_synthetic.py", "--out", "bench_results/synthetic.json")


@nox.session(venv_params=list(VENV_PARAMS))
def scaleout(session: nox.Session) -> None:
    """SLURM, PostgreSQL and an MLflow server started on 127.0.0.1 (Debian, as root), sah run on
    each and checked end to end; everything started is stopped (scripts/scaleout/)."""
    if TORCH_SPEC != "none":
        session.install(TORCH_SPEC)
    session.install("-e", ".[dev,slurm,postgres]")
    session.run("bash", "scripts/scaleout/run.sh", *session.posargs, external=True)


@nox.session
def lint(session: nox.Session) -> None:
    session.install("ruff")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session(venv_params=list(VENV_PARAMS))
def typecheck(session: nox.Session) -> None:
    install(session)
    session.run("mypy", "sah")
