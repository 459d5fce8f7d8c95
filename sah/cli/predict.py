"""`sah-predict`: segment blood on CT scans with a trained model, one command.

    sah-predict scan.nii.gz --model outputs/.../checkpoints/best.ckpt
    sah-predict dicom_folder/ other.nii.gz --model mlflow:<run_id> --out predictions/
    sah-predict cohort/manifest.csv --model fold0.ckpt --model fold1.ckpt --model fold2.ckpt

Writes per case ``<out>/<case>/mask.nii.gz`` (the input's grid and affine), ``result.json``
(blood volume in mL, metrics when a label is given, warnings) and ``overlay.png``; with several
cases also ``<out>/summary.csv``. Existing results are never overwritten without --overwrite.
"""

from __future__ import annotations

import argparse
import csv
import json
import re
import shutil
import sys
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np

from sah.cli.quiet import quiet
from sah.errors import SahError

RUN_ID = re.compile(r"^[0-9a-f]{32}$")


@dataclass
class Case:
    name: str
    image: Path
    label: Path | None = None


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="sah-predict", description=__doc__.split("\n\n")[0])
    parser.add_argument("inputs", nargs="+", help="NIfTI files, DICOM series folders or a manifest")
    parser.add_argument(
        "--model",
        action="append",
        required=True,
        help="checkpoint file, or mlflow:<run_id>; repeat for a fold ensemble",
    )
    parser.add_argument("--out", default="predictions", help="output folder (default predictions/)")
    parser.add_argument("--label", action="append", default=[], help="reference mask per input")
    parser.add_argument("--tta", action="store_true", help="left-right flip test-time augmentation")
    parser.add_argument("--tracking-uri", default="sqlite:///mlflow.db", help="for mlflow:<run_id>")
    parser.add_argument("--overwrite", action="store_true", help="replace existing case results")
    return parser.parse_args(argv)


def collect_cases(inputs: list[str], labels: list[str]) -> list[Case]:
    """Inputs as cases; a .csv input is a manifest whose rows (with labels) are cases."""
    from sah.data.cohorts.manifest import read_manifest

    if labels and len(labels) != len(inputs):
        raise SahError(f"--label given {len(labels)} times for {len(inputs)} inputs; give one each")
    cases: list[Case] = []
    for i, item in enumerate(inputs):
        path = Path(item)
        if path.suffix.lower() == ".csv":
            table = read_manifest(path)
            for row in table.to_dict("records"):
                label = row.get("label")
                cases.append(
                    Case(str(row["patient_id"]), Path(row["image"]), label and Path(label))
                )
            continue
        name = path.name.removesuffix(".gz").removesuffix(".nii") if path.is_file() else path.name
        cases.append(Case(name, path, Path(labels[i]) if labels else None))
    names = [c.name for c in cases]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise SahError(f"several inputs are named {duplicates}; rename them or use a manifest")
    return cases


def is_mlflow_run(model: str) -> bool:
    return model.startswith("mlflow:") or bool(RUN_ID.match(model) and not Path(model).exists())


def model_names(models: list[str]) -> list[str]:
    """The models as the user gave them, for result.json: ``mlflow:<run id>`` or the path."""
    return [f"mlflow:{m.removeprefix('mlflow:')}" if is_mlflow_run(m) else m for m in models]


def resolve_models(models: list[str], tracking_uri: str, download_dir: Path) -> list[Path]:
    """Checkpoint files for ``models``; logged runs' checkpoints are downloaded into
    ``download_dir`` (a temporary folder the caller removes)."""
    from sah.tracking.checkpoints import download_best_checkpoint

    paths = []
    for i, model in enumerate(models):
        if is_mlflow_run(model):
            dest = download_dir / str(i)
            dest.mkdir(parents=True, exist_ok=True)
            run = model.removeprefix("mlflow:")
            paths.append(download_best_checkpoint(tracking_uri, run, dest))
        else:
            paths.append(Path(model))
    return paths


def mask_in_input_orientation(mask_ras: np.ndarray, source: Path):
    """The RAS mask as a NIfTI image on the input file's own voxel grid and affine."""
    import nibabel as nib
    from nibabel.orientations import apply_orientation, axcodes2ornt, io_orientation, ornt_transform

    original = cast(nib.Nifti1Image, nib.load(str(source)))  # load_ct reads only NIfTI files
    transform = ornt_transform(axcodes2ornt(("R", "A", "S")), io_orientation(original.affine))
    data = apply_orientation(mask_ras.astype(np.uint8), transform)
    return nib.Nifti1Image(data, original.affine)


def mask_on_tilted_series(mask_ras: np.ndarray, meta: dict[str, Any]):
    """The mask of a gantry-tilted DICOM series on its acquired slices: voxel (i, j, k) is pixel
    (i, j) of slice k, and the sform carries the shear (a qform cannot, so it is unset)."""
    import nibabel as nib

    from sah.data.readers.dicom import mask_on_acquired_grid

    data, affine = mask_on_acquired_grid(mask_ras, meta)
    image = nib.Nifti1Image(data, affine)
    image.set_sform(affine, code=1)
    image.set_qform(None, code=0)
    return image


def predict_case(case: Case, segmenter, tta: bool, out_dir: Path) -> dict[str, Any]:
    """Segment one case into ``out_dir`` and return its summary row."""
    import nibabel as nib

    from sah.data.readers.ct import load_ct, load_label
    from sah.metrics import segmentation_metrics
    from sah.tasks.segmentation.inference import head_ct_warnings
    from sah.tasks.segmentation.overlay import save_overlays

    ct = load_ct(case.image)
    mask = segmenter.segment(ct, flip_tta=tta)
    voxel_ml = float(np.prod(ct.spacing)) / 1000.0
    result: dict[str, Any] = {
        "case": case.name,
        "blood_volume_ml": round(float(mask.sum()) * voxel_ml, 3),
        "spacing_mm": [round(float(s), 4) for s in ct.spacing],
        "shape": list(ct.array.shape),
        "models": segmenter.sources,
        "flip_tta": tta,
        "warnings": head_ct_warnings(ct.array),
    }
    if "gantry_tilt_deg" in ct.meta:
        result["gantry_tilt_deg"] = ct.meta["gantry_tilt_deg"]
    truth = None
    if case.label is not None:
        truth = load_label(case.label, like=ct).astype(bool)
        metrics = segmentation_metrics(mask, truth, ct.spacing)
        result["metrics"] = {k: round(float(v), 6) for k, v in metrics.items()}
    if ct.source.is_file():
        nib.save(mask_in_input_orientation(mask, ct.source), out_dir / "mask.nii.gz")
    elif "gantry_tilt_deg" in ct.meta:  # on the acquired (sheared) slices, voxel for pixel
        nib.save(mask_on_tilted_series(mask, ct.meta), out_dir / "mask.nii.gz")
    else:  # a DICOM series: the mask in RAS with the series' affine
        nib.save(nib.Nifti1Image(mask.astype(np.uint8), ct.affine), out_dir / "mask.nii.gz")
    (out_dir / "result.json").write_text(json.dumps(result, indent=2) + "\n")
    save_overlays([(case.name, ct.array, truth, mask)], out_dir / "overlay.png")
    return result


def summary_line(result: dict[str, Any]) -> str:
    line = f"{result['case']}: blood {result['blood_volume_ml']:.1f} mL"
    metrics = result.get("metrics")
    if isinstance(metrics, dict):
        line += f" (reference {metrics['volume_true_ml']:.1f} mL, Dice {metrics['dice']:.3f})"
    if "gantry_tilt_deg" in result:
        line += f" (gantry tilt {result['gantry_tilt_deg']:.1f}°, resampled)"
    if result["warnings"]:
        line += f"  WARNING: {result['warnings'][0]}"
    return line


def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    from sah.tasks.segmentation.inference import load_segmenter

    cases = collect_cases(args.inputs, args.label)
    out_root = Path(args.out)
    # Refuse before any work, so an existing result is never half replaced.
    existing = [c.name for c in cases if (out_root / c.name).exists()]
    if existing and not args.overwrite:
        raise SahError(
            f"results exist for {existing[:5]} in {out_root}; choose another --out or --overwrite"
        )
    with tempfile.TemporaryDirectory(prefix="sah-predict-") as download_dir:
        segmenter = load_segmenter(
            resolve_models(args.model, args.tracking_uri, Path(download_dir))
        )
    segmenter.sources = model_names(args.model)
    out_root.mkdir(parents=True, exist_ok=True)
    results = []
    for case in cases:
        # Write into a temporary folder and move it in place once complete.
        tmp = Path(tempfile.mkdtemp(prefix=f".{case.name}-", dir=out_root))
        try:
            result = predict_case(case, segmenter, args.tta, tmp)
            final = out_root / case.name
            if final.exists():
                shutil.rmtree(final)
            tmp.rename(final)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp)
        print(summary_line(result))
        results.append(result)
    if len(results) > 1:
        write_summary(results, out_root / "summary.csv")
        print(f"summary: {out_root / 'summary.csv'}")
    return results


def write_summary(results: list[dict[str, Any]], path: Path) -> None:
    rows = []
    for r in results:
        row = {"case": r["case"], "blood_volume_ml": r["blood_volume_ml"]}
        row.update({k: v for k, v in (r.get("metrics") or {}).items()})
        row["warnings"] = " | ".join(r["warnings"])
        rows.append(row)
    fields = list(dict.fromkeys(k for row in rows for k in row))
    tmp = path.with_suffix(".csv.tmp")
    with tmp.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    tmp.replace(path)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    with quiet():
        from sah.adapters import AdapterError, AdapterWarning

        # Which layers an adapter left frozen is a training matter; the model is trained.
        warnings.filterwarnings("ignore", category=AdapterWarning)
        try:
            run(args)
        except (SahError, AdapterError) as err:
            print(f"sah-predict: {err}", file=sys.stderr)
            sys.exit(2)


if __name__ == "__main__":
    main()
