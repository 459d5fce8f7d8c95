"""task=outcome: DCI and outcome from early EMR data, tabular models (study 4)."""
