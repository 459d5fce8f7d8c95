"""Readers of CT files: NIfTI volumes, DICOM series, and de-identification of what they carry."""
