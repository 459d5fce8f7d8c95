"""The synthetic clinical table: shape, ranges, determinism, grades consistent with the blood."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from sah.data.synthetic import findings as image_findings
from sah.data.synthetic.clinical import (
    LAB_RANGES,
    LAB_UNITS,
    clinical_columns,
    clinical_for_manifest,
    daily_columns,
    generate_clinical,
    modified_fisher,
    sample_image_findings,
    synthetic_emr_cohort,
)
from sah.errors import DataError


@pytest.fixture(scope="module")
def cohort() -> pd.DataFrame:
    return synthetic_emr_cohort(2000, seed=0)


def findings_table(n: int = 50, seed: int = 3) -> pd.DataFrame:
    table = sample_image_findings(n, np.random.default_rng(seed))
    table.insert(0, "patient_id", [f"p{i:03d}" for i in range(n)])
    return table


def test_columns_dtypes_and_one_row_per_patient(cohort: pd.DataFrame) -> None:
    assert list(cohort.columns) == clinical_columns()
    assert cohort["patient_id"].is_unique and len(cohort) == 2000
    for column in ["age", "gcs", "wfns", "hunt_hess", "modified_fisher", "mrs_3m", "dci"]:
        assert pd.api.types.is_integer_dtype(cohort[column]), column
    for variable in LAB_UNITS:
        for column in daily_columns(variable):
            assert pd.api.types.is_float_dtype(cohort[column]), column
    assert set(cohort["sex"]) == {"F", "M"}
    assert not cohort.isna().any().any()


def test_values_lie_in_clinical_ranges(cohort: pd.DataFrame) -> None:
    assert cohort["age"].between(18, 90).all()
    assert cohort["gcs"].between(3, 15).all()
    assert cohort["wfns"].between(1, 5).all() and cohort["hunt_hess"].between(1, 5).all()
    assert cohort["modified_fisher"].between(0, 4).all()
    assert cohort["mrs_3m"].between(0, 6).all()
    for column in ["dci", "mortality_3m", "hypertension", "smoking"]:
        assert set(cohort[column]) <= {0, 1}, column
    for variable, (low, high) in LAB_RANGES.items():
        values = cohort[daily_columns(variable)].to_numpy()
        assert values.min() >= low and values.max() <= high, variable
    # Medians where a clinician expects them.
    assert 125 < cohort["glucose_d0"].median() < 150
    assert 137 <= cohort["sodium_d0"].median() <= 141
    assert 36.6 < cohort["temperature_d0"].median() < 37.6


def test_wfns_follows_gcs(cohort: pd.DataFrame) -> None:
    gcs, wfns = cohort["gcs"], cohort["wfns"]
    assert (wfns[gcs == 15] == 1).all()
    assert wfns[gcs.between(13, 14)].isin([2, 3]).all()
    assert (wfns[gcs.between(7, 12)] == 4).all()
    assert (wfns[gcs <= 6] == 5).all()


def test_same_seed_same_table_other_seed_other_table() -> None:
    pd.testing.assert_frame_equal(synthetic_emr_cohort(60, 5), synthetic_emr_cohort(60, 5))
    assert not synthetic_emr_cohort(60, 5).equals(synthetic_emr_cohort(60, 6))
    findings = findings_table()
    pd.testing.assert_frame_equal(generate_clinical(findings, 1), generate_clinical(findings, 1))


def test_modified_fisher_matches_the_image_generators_rule() -> None:
    findings = findings_table(300)
    table = generate_clinical(findings, seed=0)
    expected = [
        image_findings.modified_fisher(t, v - i, i)
        for v, i, t in findings[
            ["blood_volume_ml", "ivh_volume_ml", "max_cisternal_thickness_mm"]
        ].itertuples(index=False)
    ]
    assert table["modified_fisher"].tolist() == expected
    thick = image_findings.THICK_CLOT_MM
    grades = modified_fisher(
        np.array([0.0, 5.0, 5.0, 50.0, 50.0]),
        np.array([0.0, 0.0, 1.0, 0.0, 8.0]),
        np.array([0.0, thick - 0.5, thick - 0.5, thick, thick + 3]),
    )
    assert grades.tolist() == [0, 1, 2, 3, 4]


def test_emr_findings_follow_the_generators_volume_schedule(cohort: pd.DataFrame) -> None:
    volume = cohort["blood_volume_ml"]
    bins = pd.cut(volume, [0, 25, 50, 100, 225]).value_counts(normalize=True)
    assert np.allclose(bins.to_numpy(), 0.25, atol=0.01)
    assert (cohort["ivh_volume_ml"] <= 0.3 * volume + 0.01).all()
    assert 0.25 < (cohort["ivh_volume_ml"] > 0).mean() < 0.55


def test_outcome_prevalence_is_plausible(cohort: pd.DataFrame) -> None:
    assert 0.20 <= cohort["dci"].mean() <= 0.35
    assert 0.25 <= (cohort["mrs_3m"] >= 4).mean() <= 0.45
    assert (cohort["mortality_3m"] == (cohort["mrs_3m"] == 6)).all()
    # Signal, not noise: poor grades and DCI raise the risk of a poor outcome.
    poor = cohort["mrs_3m"] >= 4
    assert poor[cohort["wfns"] >= 4].mean() > poor[cohort["wfns"] <= 2].mean() + 0.1
    assert poor[cohort["dci"] == 1].mean() > poor[cohort["dci"] == 0].mean() + 0.1


def test_missing_findings_column_is_named() -> None:
    with pytest.raises(DataError, match="ivh_volume_ml"):
        generate_clinical(findings_table().drop(columns="ivh_volume_ml"), 0)
    bad = findings_table().astype({"blood_volume_ml": object})
    bad.loc[2, "blood_volume_ml"] = "lots"
    with pytest.raises(DataError, match=r"blood_volume_ml.*p002"):
        generate_clinical(bad, 0)


def test_clinical_csv_beside_the_manifest_is_reused_for_the_same_seed(tmp_path) -> None:
    manifest = tmp_path / "manifest.csv"
    findings_table(20).assign(image="images/x.nii.gz").to_csv(manifest, index=False)
    path = clinical_for_manifest(manifest, seed=0)
    assert path == tmp_path / "clinical.csv"
    first = pd.read_csv(path)
    assert len(first) == 20 and list(first.columns) == clinical_columns()
    stamp = path.stat().st_mtime_ns
    assert clinical_for_manifest(manifest, seed=0).stat().st_mtime_ns == stamp
    other = pd.read_csv(clinical_for_manifest(manifest, seed=1))
    assert not other.equals(first)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "clinical.csv",
        "clinical.json",
        "manifest.csv",
    ]
    with pytest.raises(DataError, match="manifest not found"):
        clinical_for_manifest(tmp_path / "nope.csv")
