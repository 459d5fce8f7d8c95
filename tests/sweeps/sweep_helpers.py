"""Helpers shared by the sweep tests: the tiny app, a clean environment, MLflow and Optuna
reads."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

TINY_APP = Path(__file__).parent / "tiny_app" / "app.py"
REPO = Path(__file__).resolve().parents[2]
# sah-train at tiny size (conf/experiment/tiny.yaml): six synthetic patients, one short epoch,
# a 2-level UNet on 64 px with a LoRA-C adapter; the scale-out checks run the same recipe.
TINY_TRAIN = ["experiment=tiny"]


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SAH_PARENT", "MLFLOW_"))}
    env.update(HYDRA_FULL_ERROR="1", PYTHONUNBUFFERED="1", **extra)
    return env


def mlflow_runs(workdir: Path, experiment: str) -> list:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{workdir / 'mlflow.db'}")
    found = client.get_experiment_by_name(experiment)
    return client.search_runs([found.experiment_id]) if found else []


def children_and_parents(runs: list) -> tuple[list, list]:
    parents = [r for r in runs if r.data.tags.get("sah.kind") == "sweep"]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    return children, parents


def optuna_trials(storage: str, study_name: str) -> list:
    import optuna

    return optuna.load_study(study_name=study_name, storage=storage).get_trials(deepcopy=False)


def tail(result: subprocess.CompletedProcess, n: int = 3000) -> str:
    return f"rc={result.returncode}\nSTDOUT:\n{result.stdout[-n:]}\nSTDERR:\n{result.stderr[-n:]}"
