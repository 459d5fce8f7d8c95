"""The jobs of a sweep start together: each resolves the experiment it logs into and logs the
cohort it trains on, and none may fail because another job created the experiment, tagged it
or inserted the cohort's dataset row a moment earlier."""

from __future__ import annotations

import multiprocessing as mp
from pathlib import Path
from typing import Any

from mlflow.tracking import MlflowClient

from sah.tracking.datasets import log_cohort
from sah.tracking.mlflow_run import EXPERIMENT_KIND, EXPERIMENT_KIND_TAG, resolve_experiment

ROUNDS = 6
JOBS = 4


def _job(uri: str, manifest: Path, barrier: Any, results: Any) -> None:
    client = MlflowClient(tracking_uri=uri)
    for round_ in range(ROUNDS):
        barrier.wait()
        try:
            experiment_id = resolve_experiment(client, f"sweep-{round_}")
            run_id = client.create_run(experiment_id).info.run_id
            log_cohort(client, run_id, manifest, {"train": ["p1", "p2"]}, name="cohort")
            results.put((round_, experiment_id, run_id))
        except Exception as err:  # reported to the test, which names it
            results.put((round_, f"{type(err).__name__}: {err}", None))


def test_jobs_starting_together_share_one_tagged_experiment_and_cohort(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    manifest = tmp_path / "manifest.csv"
    manifest.write_text("patient_id,image\np1,a.nii.gz\np2,b.nii.gz\np3,c.nii.gz\n")
    client = MlflowClient(tracking_uri=uri)
    client.search_experiments()  # the store's tables exist before the jobs race
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(JOBS)
    results = ctx.Queue()
    jobs = [ctx.Process(target=_job, args=(uri, manifest, barrier, results)) for _ in range(JOBS)]
    for job in jobs:
        job.start()
    got = [results.get(timeout=240) for _ in range(JOBS * ROUNDS)]
    for job in jobs:
        job.join(timeout=60)

    for round_ in range(ROUNDS):
        experiment = client.get_experiment_by_name(f"sweep-{round_}")
        assert experiment is not None
        assert {e for r, e, _ in got if r == round_} == {experiment.experiment_id}
        assert experiment.tags[EXPERIMENT_KIND_TAG] == EXPERIMENT_KIND
        for run_id in (run for r, _, run in got if r == round_):
            contexts = {
                tag.value for i in client.get_run(run_id).inputs.dataset_inputs for tag in i.tags
            }
            assert contexts == {"cohort", "train"}
