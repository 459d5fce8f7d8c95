"""Cohorts: manifests, public dataset layouts, and the patient-level folds they are split into."""
