"""sah.data: CT volumes, labels and manifests from real-world files, and the data modules.

By role: ``readers`` (CT files), ``cohorts`` (manifests, layouts, folds), ``preprocess``
(deterministic pipelines, their cache, random augmentation), ``modules`` (the data modules a task
trains on), ``synthetic`` (phantom cohorts). Names are imported on first use so that
``import sah.data`` stays cheap (no pandas or pydicom until a manifest or a DICOM series is
actually read).
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "CTVolume": "sah.data.readers.ct",
    "load_ct": "sah.data.readers.ct",
    "load_label": "sah.data.readers.ct",
    "read_manifest": "sah.data.cohorts.manifest",
    "write_manifest": "sah.data.cohorts.manifest",
    "build_manifest": "sah.data.cohorts.layouts",
    "anonymous_id": "sah.data.readers.privacy",
}

__all__ = [
    "CTVolume",
    "anonymous_id",
    "build_manifest",
    "load_ct",
    "load_label",
    "read_manifest",
    "write_manifest",
]

if TYPE_CHECKING:
    from sah.data.cohorts.layouts import build_manifest
    from sah.data.cohorts.manifest import read_manifest, write_manifest
    from sah.data.readers.ct import CTVolume, load_ct, load_label
    from sah.data.readers.privacy import anonymous_id


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'sah.data' has no attribute {name!r}")
    return getattr(import_module(module), name)
