"""What a run saw, as MLflow dataset inputs: the cohort's manifest and its patient splits.

The runs table's Dataset column and the run page's "Datasets used" then name the cohort (with a
digest of its manifest file, so two runs on different versions of a cohort differ) and, one
input per split, the patients a run trained on, selected with and was tested on:

    log_cohort(client, run_id, manifest, {"train": [...], "selection": [...], "test": [...]},
               name="sah-n30-seed0")

MLflow stores each dataset's schema (the manifest's columns), its row count and its source (the
manifest's path), never its rows. The patient ids of each split are in the dataset's profile, so
the run page answers "which patients?"; they are the manifest's study ids, never names.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from mlflow.entities import Dataset, DatasetInput, InputTag
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

from sah.errors import DataError

COHORT_CONTEXT = "cohort"
DIGEST_CHARS = 16  # MLflow keeps at most 36


def file_digest(path: Path) -> str:
    """sha256 of the file's bytes (hex), read in blocks."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def log_cohort(
    client: MlflowClient,
    run_id: str,
    manifest: Path,
    splits: Mapping[str, Sequence[str]],
    name: str,
) -> list[DatasetInput]:
    """Log ``manifest`` as the run's dataset (context ``cohort``) and each split's patients as
    a dataset with the split's name as context (``train``, ``selection``, ``test``, ...).

    Every patient of a split must be in the manifest (DataError naming the file otherwise).
    Returns the inputs logged.
    """
    import pandas as pd

    manifest = Path(manifest)
    if not manifest.is_file():
        raise DataError(manifest, "does not exist, so the run's cohort cannot be logged")
    table = pd.read_csv(manifest, dtype={"patient_id": str})
    if "patient_id" not in table.columns:
        raise DataError(manifest, "has no patient_id column", "see docs/CONVENTIONS.md, Manifest")
    known = set(table["patient_id"])
    content = file_digest(manifest)
    source = str(manifest.resolve())

    cohort = from_pandas(table, source=source, name=name, digest=content[:DIGEST_CHARS])
    inputs = [_input(cohort, COHORT_CONTEXT)]
    for split, patients in splits.items():
        ids = [str(p) for p in patients]
        unknown = sorted(set(ids) - known)
        if unknown:
            raise DataError(
                manifest,
                f"has no patient(s) {unknown[:5]} of split '{split}'",
                "log the manifest the splits were made from",
            )
        rows = table[table["patient_id"].isin(ids)]
        key = json.dumps([content, split, sorted(ids)]).encode()
        digest = hashlib.sha256(key).hexdigest()[:DIGEST_CHARS]
        dataset = from_pandas(rows, source=source, name=f"{name}/{split}", digest=digest)
        inputs.append(_input(dataset, split, patients=sorted(ids)))
    try:
        client.log_inputs(run_id, datasets=inputs)
    except MlflowException:
        # Jobs of one sweep share the cohort's dataset row: when another job inserted it
        # between this store's lookup and insert, logging again finds it and links to it.
        client.log_inputs(run_id, datasets=inputs)
    return inputs


def from_pandas(table: Any, *, source: str, name: str, digest: str) -> Any:
    """mlflow.data.from_pandas without its warning that a local path "can be interpreted in
    multiple ways" (it registers the local-file source twice; either reads the same file)."""
    from mlflow.data.pandas_dataset import from_pandas as mlflow_from_pandas

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*can be interpreted in multiple ways")
        return mlflow_from_pandas(table, source=source, name=name, digest=digest)


def _input(dataset: Any, context: str, patients: list[str] | None = None) -> DatasetInput:
    entity = dataset._to_mlflow_entity()
    if patients is not None:
        profile = json.loads(entity.profile) if entity.profile else {}
        entity = Dataset(
            name=entity.name,
            digest=entity.digest,
            source_type=entity.source_type,
            source=entity.source,
            schema=entity.schema,
            profile=json.dumps({**profile, "patients": patients}),
        )
    return DatasetInput(dataset=entity, tags=[InputTag(key=MLFLOW_DATASET_CONTEXT, value=context)])
