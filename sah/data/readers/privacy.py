"""Patient identity stays in the loader: downstream code names a patient by a manifest id or a hash.

DICOM headers carry names, ids, dates and free text that can identify a patient. The loaders copy
only the attributes in ``SAFE_DICOM_ATTRIBUTES`` out of a header, so nothing else can leak into
logs, experiment trackers or reports.
"""

from __future__ import annotations

import hashlib

from sah.errors import ConfigError

# Acquisition facts that describe the scanner and reconstruction, never the patient or the visit.
# Free-text fields (SeriesDescription, StudyDescription, ...), dates, times, UIDs and institution
# names are left out on purpose: de-identification profiles (DICOM PS3.15 annex E) remove them.
SAFE_DICOM_ATTRIBUTES: tuple[str, ...] = (
    "Modality",
    "Manufacturer",
    "ManufacturerModelName",
    "KVP",
    "ConvolutionKernel",
    "SliceThickness",
    "SeriesNumber",
)

# Attributes that tests check never appear in a loaded volume (not an exhaustive list: the loaders
# use an allow-list, so anything not in SAFE_DICOM_ATTRIBUTES stays behind).
IDENTIFYING_DICOM_ATTRIBUTES: tuple[str, ...] = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientAddress",
    "OtherPatientIDs",
    "AccessionNumber",
    "InstitutionName",
    "ReferringPhysicianName",
    "StudyDate",
    "StudyTime",
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "SOPInstanceUID",
    "SeriesDescription",
    "StudyDescription",
)

ANONYMOUS_ID_HEX_CHARS = 16


def anonymous_id(patient_id: str, salt: str) -> str:
    """Return a short stable pseudonym for ``patient_id``: the salted SHA-256, first 16 hex chars.

    The salt must stay secret: without it, anyone holding a list of hospital ids could hash each
    candidate and recognise patients. 16 hex characters (64 bits) make collisions negligible for
    any cohort size.
    """
    if not salt:
        raise ConfigError(
            "salt",
            "is empty; an unsalted hash of a patient id can be reversed by hashing candidate ids",
            "set a secret salt (e.g. from an environment variable) and keep it out of shared files",
        )
    if not str(patient_id).strip():
        raise ConfigError("patient_id", "is empty", "pass the patient's id from the manifest")
    digest = hashlib.sha256(f"{salt}\0{patient_id}".encode()).hexdigest()
    return digest[:ANONYMOUS_ID_HEX_CHARS]
