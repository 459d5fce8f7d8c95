"""`data=<public layout> data.root=PATH` builds the manifest and feeds the datamodule."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.utils import instantiate

from sah.cli.schema import register_schema
from sah.cli.train import CONFIG_DIR


def bhsd_tree(root: Path, n: int = 3) -> None:
    (root / "images").mkdir(parents=True)
    (root / "ground truths").mkdir()
    affine = np.diag([0.9, 0.9, 5.0, 1.0])
    for i in range(n):
        image = np.full((32, 32, 6), -1000, dtype=np.int16)
        image[4:28, 4:28] = 35
        classes = np.zeros(image.shape, dtype=np.uint8)
        classes[10:14, 10:14, 2:4] = 4  # SAH
        classes[20:24, 20:24, 2:4] = 2  # intraparenchymal
        image[classes > 0] = 70
        nib.save(nib.Nifti1Image(image, affine), root / "images" / f"ID_{i:03d}.nii.gz")
        nib.save(nib.Nifti1Image(classes, affine), root / "ground truths" / f"ID_{i:03d}.nii.gz")


def test_bhsd_config_builds_manifest_and_loads_sah_labels(tmp_path: Path) -> None:
    bhsd_tree(tmp_path / "bhsd", n=5)  # test fold (2), selection set (2), a training patient
    register_schema()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose(
            "train",
            overrides=[
                "data=bhsd",
                f"data.root={tmp_path / 'bhsd'}",
                f"paths.cache_dir={tmp_path / 'cache'}",
                f"paths.root_dir={tmp_path}",
                "paths.output_dir=.",
                "data.slice_size=32",
            ],
        )
    datamodule = instantiate(cfg.data)
    assert Path(datamodule.manifest).is_file()
    datamodule.setup("fit")
    patients = datamodule.train_cases + datamodule.val_cases + datamodule.test_cases
    assert len(patients) == 5
    # labels=sah keeps class 4 only: 4 x 4 x 2 voxels per patient.
    assert all(int(p.label.sum()) == 32 for p in patients)
