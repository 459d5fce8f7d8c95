"""Bad config and bad data end sah-train with one line naming the key or file; nothing is lost."""

from __future__ import annotations

import gzip
import subprocess
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest


def run_train(*overrides: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["sah-train", f"paths.root_dir={cwd}", f"hydra.run.dir={cwd}/run", *overrides],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
    )


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 2, result.stderr[-2000:]
    lines = [line for line in result.stderr.splitlines() if line.startswith("sah-train:")]
    assert len(lines) == 1, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    return lines[0]


@pytest.mark.parametrize(
    ("override", "named"),
    [
        ("model=no_such_net", "model"),
        ("seed=abc", "seed"),
        ("no_such_key=1", "no_such_key"),
        ("task.module.loss=nope", "task.module.loss"),
    ],
)
def test_config_errors_name_the_key(override: str, named: str, tmp_path: Path) -> None:
    line = one_line_error(run_train(override, cwd=tmp_path))
    assert named in line


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (
            ["adapter.rnk=4"],
            "config key 'adapter.rnk' does not exist; did you mean 'adapter.rank'?",
        ),
        (["adapter=lora_cc"], "no option 'lora_cc' (did you mean 'lora_c'?)"),
        (
            ["adapter=cp_lora", "adapter.target=decodr"],
            "adapter.target: 'decodr' is neither a module group of GroupedUNet (all, encoder, "
            "bottleneck, decoder, head; did you mean 'decoder'?)",
        ),
        (["adapter=full", "adapter.rank=-1"], "adapter.rank: must be a positive integer, got -1"),
        (
            ["estimator=gbm"],
            "config group 'estimator' belongs to task=outcome: add task=outcome, "
            "or drop estimator=...",
        ),
    ],
    ids=["key", "option", "target", "full-rank", "group-of-another-task"],
)
def test_mistakes_name_what_the_user_typed_and_the_nearest_name(
    overrides: list[str], expected: str, tmp_path: Path
) -> None:
    line = one_line_error(
        run_train(*overrides, f"tracking.uri=sqlite:///{tmp_path}/m.db", cwd=tmp_path)
    )
    assert expected in line
    # Refused before a run is tracked: nothing tagged with the bad value.
    assert not (tmp_path / "m.db").exists()


def write_manifest(folder: Path, rows: list[str]) -> Path:
    manifest = folder / "manifest.csv"
    manifest.write_text("patient_id,image,label\n" + "".join(r + "\n" for r in rows))
    return manifest


def nifti(path: Path, shape=(32, 32, 8), affine=None) -> Path:
    affine = np.diag([1.0, 1.0, 3.0, 1.0]) if affine is None else affine
    data = np.full(shape, -1000, dtype=np.int16)
    nib.save(nib.Nifti1Image(data, affine), path)
    return path


def test_empty_manifest_names_the_file(tmp_path: Path) -> None:
    manifest = write_manifest(tmp_path, [])
    line = one_line_error(run_train("data=manifest", f"data.manifest={manifest}", cwd=tmp_path))
    assert str(manifest) in line


def test_missing_image_names_the_patient_and_file(tmp_path: Path) -> None:
    manifest = write_manifest(tmp_path, ["p1,missing.nii.gz,missing_label.nii.gz"])
    line = one_line_error(run_train("data=manifest", f"data.manifest={manifest}", cwd=tmp_path))
    assert "missing.nii.gz" in line


def test_corrupt_nifti_names_the_file(tmp_path: Path) -> None:
    good = nifti(tmp_path / "good.nii.gz")
    truncated = tmp_path / "bad.nii.gz"
    truncated.write_bytes(gzip.compress(good.read_bytes())[:200])
    nifti(tmp_path / "lab.nii.gz")
    manifest = write_manifest(tmp_path, ["p1,bad.nii.gz,lab.nii.gz"])
    line = one_line_error(run_train("data=manifest", f"data.manifest={manifest}", cwd=tmp_path))
    assert "bad.nii.gz" in line


def test_label_on_another_grid_names_both_files(tmp_path: Path) -> None:
    nifti(tmp_path / "img.nii.gz")
    nifti(tmp_path / "lab.nii.gz", shape=(30, 32, 8))
    manifest = write_manifest(tmp_path, ["p1,img.nii.gz,lab.nii.gz"])
    line = one_line_error(run_train("data=manifest", f"data.manifest={manifest}", cwd=tmp_path))
    assert "lab.nii.gz" in line
