"""A synthetic cohort on disk, laid out like a real one: NIfTI images and labels + manifest.

Layout under ``cache_dir() / "synthetic" / "<kind>-n<N>-seed<S>-<hash>"``::

    manifest.csv          patient_id,image,label,site,blood_volume_ml,... (relative paths)
    cohort.json           the generator parameters and version (provenance)
    images/<id>.nii.gz    int16 HU, RAS
    labels/<id>.nii.gz    uint8, 1 = blood

The folder is generated into a temporary sibling and renamed when complete, so it either
exists whole or not at all; the hash covers every parameter and the generator version.
"""

from __future__ import annotations

import csv
import json
import os
import sys
import time
from collections.abc import Iterable
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from multiprocessing.context import BaseContext
from pathlib import Path

import nibabel as nib
import numpy as np

from sah.data.cache import atomic_dir, cache_dir, content_key
from sah.data.progress import Progress, stamp
from sah.data.synthetic.anatomy import ANATOMY_VERSION, load_anatomy
from sah.data.synthetic.config import SynthConfig
from sah.data.synthetic.phantom import simulate, site_name
from sah.errors import DataError

MANIFEST_NAME = "manifest.csv"
MANIFEST_COLUMNS = (
    "patient_id",
    "image",
    "label",
    "site",
    "blood_volume_ml",
    "sah_volume_ml",
    "ivh_volume_ml",
    "edh_volume_ml",
    "sdh_volume_ml",
    "iph_volume_ml",
    "tsah_volume_ml",
    "max_cisternal_thickness_mm",
    "modified_fisher",
    "bleed_site",
    "lesion_types",
    "target_volume_ml",
    "slice_mm",
    "noise_hu",
    "atrophy_mm",
)


def patient_id(config: SynthConfig, index: int) -> str:
    return f"{config.kind}{index:04d}"


def cohort_dir(config: SynthConfig, cache_root: str | Path | None = None) -> Path:
    """Where the cohort for ``config`` lives (whether or not it exists yet)."""
    key = content_key({**config.hash_params(), "anatomy_version": ANATOMY_VERSION})
    name = f"{config.kind}-n{config.patients}-seed{config.seed}-{key}"
    return cache_dir(cache_root) / "synthetic" / name


def _save_nifti(array: np.ndarray, affine: np.ndarray, path: Path) -> None:
    image = nib.Nifti1Image(array, affine)
    image.set_qform(affine, code=1)
    image.set_sform(affine, code=1)
    image.header.set_xyzt_units("mm")
    nib.save(image, path)


def write_patient(
    config: SynthConfig, index: int, folder: Path, cache_root: str | Path | None = None
) -> dict[str, object]:
    """Render patient ``index``, write its image and label under ``folder``, return its row."""
    anatomy = load_anatomy(config.anatomy_mm, _root(cache_root))
    phantom = simulate(config, index, anatomy)
    pid = patient_id(config, index)
    image, label = f"images/{pid}.nii.gz", f"labels/{pid}.nii.gz"
    _save_nifti(phantom.image, phantom.affine, folder / image)
    _save_nifti(phantom.label, phantom.affine, folder / label)
    row: dict[str, object] = {
        "patient_id": pid,
        "image": image,
        "label": label,
        "site": site_name(config, index),
    }
    row.update(phantom.findings)
    return row


def _root(cache_root: str | Path | None) -> Path | None:
    return None if cache_root is None or str(cache_root) == "" else Path(cache_root)


def _write_manifest(rows: Iterable[dict[str, object]], path: Path) -> None:
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=MANIFEST_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: row.get(k, "") for k in MANIFEST_COLUMNS})


def _pool_context() -> BaseContext:
    """Fork on Linux: workers inherit the loaded anatomy and need no ``__main__`` guard in the
    caller's script (they only run numpy/scipy code); the platform default elsewhere."""
    if sys.platform.startswith("linux"):
        return get_context("fork")
    return get_context()


def _default_workers(n: int) -> int:
    return max(1, min(2, os.cpu_count() or 1, n))


def ensure_cohort(
    config: SynthConfig,
    cache_root: str | Path | None = None,
    workers: int | None = None,
) -> Path:
    """The manifest of the cohort described by ``config``, generated on first use.

    Later calls with an equal config return the cached manifest without touching it.
    ``workers`` processes render patients in parallel (default: up to 2); the cache root is
    ``cache_root``, else $SAH_CACHE_DIR, else ~/.cache/sah.
    """
    root = _root(cache_root)
    final = cohort_dir(config, root)
    manifest = final / MANIFEST_NAME
    if manifest.exists():
        return manifest
    if final.exists():  # complete folders always hold a manifest: someone removed it
        raise DataError(final, f"cohort folder without {MANIFEST_NAME}", "delete the folder")
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataError(
            final.parent,
            f"cannot create the cache folder ({exc.strerror})",
            "set SAH_CACHE_DIR or paths.cache_dir to a writable folder",
        ) from exc
    print(f"{stamp()} generating synthetic cohort into {final}", file=sys.stderr, flush=True)
    load_anatomy(config.anatomy_mm, root)  # build the shared anatomy once, before any worker
    started = time.perf_counter()
    n = config.patients
    workers = _default_workers(n) if workers is None else max(1, int(workers))
    with atomic_dir(final) as tmp:
        (tmp / "images").mkdir()
        (tmp / "labels").mkdir()
        rows: list[dict[str, object]] = []
        label = f"synthetic cohort {config.kind} n={n}"
        with Progress(label, total=n, unit="patient") as progress:
            if workers == 1:
                for i in range(n):
                    rows.append(write_patient(config, i, tmp, root))
                    progress.advance()
            else:
                with ProcessPoolExecutor(workers, mp_context=_pool_context()) as pool:
                    args = ([config] * n, range(n), [tmp] * n, [root] * n)
                    for row in pool.map(write_patient, *args):
                        rows.append(row)
                        progress.advance()
        _write_manifest(rows, tmp / MANIFEST_NAME)
        provenance = {
            "config": config.hash_params(),
            "seconds": round(time.perf_counter() - started, 1),
        }
        (tmp / "cohort.json").write_text(json.dumps(provenance, indent=2, default=str))
    return manifest
