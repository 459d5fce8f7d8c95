"""Shared fixtures: a tiny synthetic cohort and an isolated MLflow store per test."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

# A cohort small enough to generate in seconds: 6 patients, 64 x 64 in-plane at 2.5 mm.
TINY_COHORT = {"kind": "sah", "n_patients": 6, "seed": 0, "matrix": 64, "spacing_mm": 2.5}


@pytest.fixture(scope="session")
def cache_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One cache folder for the whole test session, so the tiny cohort is generated once."""
    return tmp_path_factory.mktemp("sah-cache")


@pytest.fixture(scope="session", autouse=True)
def cache_outside_home(cache_root: Path):
    """The default cache is ~/.cache/sah for every command: a test (or a subprocess it starts)
    that gives no paths.cache_dir writes into the session's folder, never the user's home."""
    with pytest.MonkeyPatch.context() as patch:
        if not os.environ.get("SAH_CACHE_DIR"):
            patch.setenv("SAH_CACHE_DIR", str(cache_root))
        yield


@pytest.fixture(scope="session")
def tiny_manifest(cache_root: Path) -> Path:
    from sah.data.synthetic import SynthConfig, ensure_cohort

    return Path(ensure_cohort(SynthConfig(**TINY_COHORT), cache_root=cache_root))


@pytest.fixture(scope="session")
def tiny_overrides(cache_root: Path, tiny_manifest: Path):
    """Build sah-train overrides for a run of seconds on the tiny cohort, isolated in a folder."""
    return lambda workdir: tiny_train_overrides(cache_root, workdir)


@pytest.fixture(scope="session")
def isolated_overrides(cache_root: Path):
    """Build sah-train overrides that keep a run's cache, outputs and MLflow store in a folder."""
    return lambda workdir: isolation_overrides(cache_root, workdir)


def isolation_overrides(cache_root: Path, workdir: Path) -> list[str]:
    return [
        f"paths.cache_dir={cache_root}",
        f"paths.root_dir={workdir}",
        f"tracking.uri=sqlite:///{workdir}/mlflow.db",
        f"hydra.run.dir={workdir}/run",
        f"hydra.sweep.dir={workdir}/multirun",
    ]


def tiny_train_overrides(cache_root: Path, workdir: Path) -> list[str]:
    return [
        *isolation_overrides(cache_root, workdir),
        "data.manifest.config.n_patients=6",
        "data.manifest.config.matrix=64",
        "data.manifest.config.spacing_mm=2.5",
        "data.slice_size=64",
        "data.batch_size=4",
        "data.slices_per_epoch=8",
        "trainer.max_epochs=1",
        "callbacks.progress=null",
    ]


@pytest.fixture
def quick_benchmark(tmp_path: Path):
    """Run ``benchmarks/<name>.py --quick`` (a seconds-long smoke run); return its JSON path."""

    def run(name: str) -> Path:
        script = Path(__file__).resolve().parents[1] / "benchmarks" / f"{name}.py"
        out = tmp_path / f"{name}.json"
        done = subprocess.run(
            [sys.executable, str(script), "--quick", "--out", str(out)],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, done.stderr[-2000:]
        return out

    return run


@pytest.fixture
def quiet_trainer():
    """A CPU Lightning Trainer for ``epochs`` with no logger, checkpoints or progress output."""
    import lightning as L

    def make(epochs: int, callbacks: list | None = None) -> L.Trainer:
        return L.Trainer(
            max_epochs=epochs,
            accelerator="cpu",
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            num_sanity_val_steps=0,
            callbacks=callbacks or [],
        )

    return make
