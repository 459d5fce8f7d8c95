"""Synthetic clinical table (first 72 h of EMR data and 3-month outcomes) for SAH cohorts.

The outcomes here are drawn from the generative model written below. They exist to exercise the
outcome-prediction pipeline (study 4, Savarraj et al., Neurology 2021) end to end; they are not
clinical truth, and no conclusion about patients may be drawn from models fitted to them.

Image findings
--------------
Per patient: total blood ``V = blood_volume_ml``, intraventricular blood ``ivh_volume_ml`` and the
thickest cisternal clot ``T = max_cisternal_thickness_mm`` (in-plane, as
``findings.max_clot_thickness_mm`` measures it). For an image cohort they come from the
generator's manifest; ``sample_image_findings`` draws them for an EMR-only cohort the way the
generator does (``bleeds_sah``), with T from a fit to generated cohorts::

    V = bleeds_sah.target_volume_ml(i)     the generator's schedule: a quarter of the patients
                                           in each volume bin 0-25-50-100-225 mL
    IVH present ~ Bernoulli(0.2 + 0.5 min(V / 150, 1)); ivh_volume_ml = U(0.05, 0.3) V
    T = clip(2.9 + 2.0 log V + N(0, 2.2), 0, 17) mm

Modified Fisher grade by the generator's rule (``findings.modified_fisher``, Frontera 2006):
thick = T >= ``THICK_CLOT_MM``, ivh = ivh_volume_ml >= ``IVH_MIN_ML``; grade = 1 + 2 thick + ivh
(1 thin, 2 thin + IVH, 3 thick, 4 thick + IVH), 0 without blood.
``zV = (log V - 3.6) / 1.35`` is log volume standardised over that schedule.

Admission
---------
Below, every ``e`` is a fresh N(0, 1) draw per patient (``e_d`` one per patient and day)::

    age ~ round(N(55, 12)) in 18-90        female ~ Bernoulli(0.68)
    hypertension ~ Bernoulli(sigmoid(-0.3 + 0.05 (age - 55)))
    smoking ~ Bernoulli(sigmoid(-0.4 - 0.02 (age - 55)))
    s = 0.75 clip(zV, -3, 3) + 0.55 log1p(ivh_volume_ml) / 1.5 + 0.65 e    (latent severity)
    GCS = clip(round(15.2 - 3.0 max(s + 0.1, 0)^1.3 + 0.6 e), 3, 15)
    motor deficit ~ Bernoulli(sigmoid(-1.2 + 0.8 s))
    WFNS = 1 if GCS 15; 2 if GCS 13-14 (3 with a motor deficit); 4 if GCS 7-12; 5 if GCS 3-6
    Hunt-Hess = clip(round(1.6 + (15 - GCS) / 3 + 0.6 e), 1, 5)

Days 0-3
--------
Latents: inflammation ``I = 0.15 s + 0.99 e``, WBC rise over days 0-3 ``R = 1.6 + 2.0 I``,
fever ``F = 0.45 I + 0.3 s + 0.4 e``, glucose variability ``G = exp(N(log 14, 0.6))`` mg/dL,
mean glucose ``Gbar = 130 + 12 s + 15 e``, CRP growth ``k = 0.6 + 0.3 I`` per day; d = 0..3::

    WBC (10^9/L)       = 10 + 1.2 s + 1.5 e + R d / 3 + 0.7 e_d
    glucose (mg/dL)    = Gbar + G e_d
    sodium (mmol/L)    = Na_d + 0.8 e_d,   Na_d = 139 + 2 e + D d  with the daily drift D ~
                         N(-2, 0.6) with probability sigmoid(-1.9 + 0.3 s) (salt wasting),
                         else N(+2, 0.6) with probability 0.05, else N(0, 0.5)
    CRP (mg/L)         = C0 exp(k d + 0.15 e_d),   C0 = exp(N(log 6, 0.7))
    hemoglobin (g/dL)  = 14.0 (men) / 12.9 (women) + 1.1 e - 0.3 |e| d + 0.3 e_d
    platelets (10^9/L) = 240 + 55 e - 8 d + 15 e_d
    INR                = 1.02 + 0.06 |e| (+1.0 if anticoagulated, probability 0.03) + 0.04 e_d
    heart rate (bpm)   = 80 + 4 s + 10 e + 2 e d + 6 e_d
    MAP (mmHg)         = 96 + 6 hypertension + 9 e - 1.5 d + 6 e_d
    temperature (C)    = 37.0 + F (0.4 + 0.2 d) + 0.25 e_d

Each value is clipped to a physiological range (``LAB_RANGES``) and rounded.

Outcomes
--------
With ``U = min(((mean_d Na_d - 139) / 4)^2, 4)`` (U-shaped: low and high sodium both harm),
``thick = [T >= THICK_CLOT_MM]`` and ``L = log1p(ivh_volume_ml) / log(11)``::

    logit P(DCI) = -3.75 + 0.2 [mFisher >= 3] + 0.1 [WFNS >= 4]
                   + 2.8 [R > 3]        threshold on the WBC rise over days 0-3
                   + 1.7 U              U-shaped sodium
                   + 2.0 [G > 25]       glucose variability
                   + 0.8 thick L        IVH volume x thick cisternal clot
                   + 0.3 smoking

    eta = 0.2 (WFNS - 1) + 0.02 (age - 55)
          + 2.8 [age >= 65][WFNS >= 4]  age x grade
          + 1.2 DCI + 0.8 L + 2.4 [F > 0.6] + 2.4 [Gbar > 160] + 1.7 U
          + 1.7 [C0 exp(3 k) > 60] + 1.0 [min hemoglobin < 10]
    mRS_3m = number of cut points (1.3, 2.6, 3.6, 4.5, 5.2, 5.9) below eta + Logistic(0, 1)
    mortality_3m = [mRS_3m == 6]

About 28 % have DCI, 33 % a poor outcome (mRS 4-6) and 22 % die. Grades carry little of the DCI
signal and a fraction of the outcome signal, and a logistic model on grades and age cannot
capture the thresholds, the U shape or the interactions: on 400-patient cohorts it reaches a DCI
AUC near 0.6 and a 3-month AUC near 0.76, tree ensembles on the 72-h trajectories about 0.77 and
0.88 (measured numbers: experiments/dci/README.md).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pandas as pd

from sah.data.cache import atomic_file, commit_file
from sah.data.cohorts.manifest import require_columns
from sah.data.synthetic.bleeds_sah import target_volume_ml
from sah.data.synthetic.findings import IVH_MIN_ML, THICK_CLOT_MM
from sah.errors import DataError

# Bump whenever the generated table changes for the same findings and seed.
CLINICAL_VERSION = 1

FINDINGS_COLUMNS = ("blood_volume_ml", "ivh_volume_ml", "max_cisternal_thickness_mm")
DAYS = (0, 1, 2, 3)

# Daily variables: unit and the physiological range every generated value is clipped to.
LAB_UNITS = {
    "wbc": "10^9/L",
    "glucose": "mg/dL",
    "sodium": "mmol/L",
    "crp": "mg/L",
    "hemoglobin": "g/dL",
    "platelets": "10^9/L",
    "inr": "ratio",
    "heart_rate": "bpm",
    "map": "mmHg",
    "temperature": "degC",
}
LAB_RANGES = {
    "wbc": (2.0, 40.0),
    "glucose": (50.0, 500.0),
    "sodium": (118.0, 165.0),
    "crp": (0.5, 400.0),
    "hemoglobin": (6.0, 19.0),
    "platelets": (40.0, 700.0),
    "inr": (0.8, 5.0),
    "heart_rate": (35.0, 180.0),
    "map": (50.0, 160.0),
    "temperature": (35.0, 41.0),
}
LAB_DECIMALS = {"inr": 2, "temperature": 1, "hemoglobin": 1, "wbc": 1, "crp": 1}
OUTCOME_COLUMNS = ("dci", "mrs_3m", "mortality_3m")
ADMISSION_COLUMNS = (
    "age",
    "sex",
    "hypertension",
    "smoking",
    "gcs",
    "wfns",
    "hunt_hess",
    "modified_fisher",
)

# Generative-model constants (see the module docstring).
_DCI_INTERCEPT = -3.75
_MRS_CUTS = np.array([-0.6, 0.7, 1.7, 2.6, 3.3, 4.0]) + 1.9
_MEAN_LOG_VOLUME = 3.6  # about 37 mL
_SD_LOG_VOLUME = 1.35


def daily_columns(variable: str) -> list[str]:
    """``wbc`` -> ``['wbc_d0', 'wbc_d1', 'wbc_d2', 'wbc_d3']``."""
    return [f"{variable}_d{d}" for d in DAYS]


def clinical_columns() -> list[str]:
    """Every column of ``generate_clinical``'s table, in order."""
    labs = [c for v in LAB_UNITS for c in daily_columns(v)]
    return ["patient_id", *FINDINGS_COLUMNS, *ADMISSION_COLUMNS, *labs, *OUTCOME_COLUMNS]


def _sigmoid(x: np.ndarray | float) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.asarray(x, dtype=np.float64)))


def _z_volume(volume_ml: np.ndarray) -> np.ndarray:
    """log blood volume standardised over the generator's volume schedule."""
    return (np.log(np.maximum(volume_ml, 0.1)) - _MEAN_LOG_VOLUME) / _SD_LOG_VOLUME


def sample_image_findings(n: int, rng: np.random.Generator) -> pd.DataFrame:
    """Blood volume, IVH volume and thickest cisternal clot of ``n`` aneurysmal-SAH patients,
    drawn as the image generator draws them (module docstring), for cohorts without CT."""
    volume = np.array([target_volume_ml(i, rng) for i in range(n)])
    has_ivh = rng.random(n) < 0.2 + 0.5 * np.minimum(volume / 150.0, 1.0)
    ivh = np.where(has_ivh, rng.uniform(0.05, 0.3, n) * volume, 0.0)
    thickness = np.clip(2.9 + 2.0 * np.log(volume) + rng.normal(0.0, 2.2, n), 0.0, 17.0)
    return pd.DataFrame(
        {
            "blood_volume_ml": np.round(volume, 2),
            "ivh_volume_ml": np.round(ivh, 2),
            "max_cisternal_thickness_mm": np.round(thickness, 2),
        }
    )


def modified_fisher(
    blood_volume_ml: np.ndarray, ivh_volume_ml: np.ndarray, max_cisternal_thickness_mm: np.ndarray
) -> np.ndarray:
    """Modified Fisher grade 0-4 by the image generator's rule (``findings.modified_fisher``):
    a clot of at least ``THICK_CLOT_MM`` filling a cistern -> 3/4, IVH of at least
    ``IVH_MIN_ML`` -> 2/4, no blood -> 0."""
    ivh_ml = np.asarray(ivh_volume_ml, dtype=np.float64)
    sah_ml = np.asarray(blood_volume_ml, dtype=np.float64) - ivh_ml
    ivh = ivh_ml >= IVH_MIN_ML
    thick = np.asarray(max_cisternal_thickness_mm, dtype=np.float64) >= THICK_CLOT_MM
    grade = 1 + 2 * thick.astype(int) + ivh.astype(int)
    return np.where((sah_ml <= 0) & ~ivh, 0, grade).astype(np.int64)


def _wfns(gcs: np.ndarray, motor_deficit: np.ndarray) -> np.ndarray:
    return np.select(
        [gcs == 15, (gcs >= 13) & ~motor_deficit, gcs >= 13, gcs >= 7], [1, 2, 3, 4], default=5
    ).astype(np.int64)


def _lab(name: str, values: np.ndarray) -> np.ndarray:
    low, high = LAB_RANGES[name]
    return np.round(np.clip(values, low, high), LAB_DECIMALS.get(name, 0))


def _validated_findings(findings: pd.DataFrame) -> pd.DataFrame:
    require_columns(
        findings,
        ("patient_id", *FINDINGS_COLUMNS),
        "findings",
        f"the findings table needs patient_id and {list(FINDINGS_COLUMNS)}",
    )
    if findings["patient_id"].duplicated().any():
        dup = findings.loc[findings["patient_id"].duplicated(), "patient_id"].iloc[0]
        raise DataError("findings", f"patient_id {dup!r} appears more than once")
    out = findings[["patient_id", *FINDINGS_COLUMNS]].copy()
    out["patient_id"] = out["patient_id"].astype(str)
    for column in FINDINGS_COLUMNS:
        values = pd.to_numeric(out[column], errors="coerce")
        bad = values.isna() | (values < 0)
        if bad.any():
            raise DataError(
                "findings",
                f"column {column!r} needs non-negative numbers; patient "
                f"{out.loc[bad, 'patient_id'].iloc[0]!r} has {findings[column][bad].iloc[0]!r}",
            )
        out[column] = values.astype(np.float64)
    return out.reset_index(drop=True)


def generate_clinical(findings: pd.DataFrame, seed: int) -> pd.DataFrame:
    """One row per patient of ``findings`` (patient_id + ``FINDINGS_COLUMNS``): admission data,
    daily labs and vitals for days 0-3, and outcomes, drawn from the module's generative model.

    The same findings and seed give the same table. A ``modified_fisher`` column in ``findings``
    is ignored: the grade is derived here from the blood, by the rule in the docstring.
    """
    table = _validated_findings(findings)
    n = len(table)
    rng = np.random.default_rng([int(seed), 0x5A4, CLINICAL_VERSION])
    e = lambda *shape: rng.normal(0.0, 1.0, shape or n)  # noqa: E731
    volume = table["blood_volume_ml"].to_numpy()
    ivh_ml = table["ivh_volume_ml"].to_numpy()
    thickness = table["max_cisternal_thickness_mm"].to_numpy()
    fisher = modified_fisher(volume, ivh_ml, thickness)
    thick = (thickness >= THICK_CLOT_MM).astype(float)
    ivh_load = np.log1p(ivh_ml) / np.log(11.0)

    # Admission.
    age = np.clip(np.round(rng.normal(55.0, 12.0, n)), 18, 90)
    female = rng.random(n) < 0.68
    hypertension = rng.random(n) < _sigmoid(-0.3 + 0.05 * (age - 55))
    smoking = rng.random(n) < _sigmoid(-0.4 - 0.02 * (age - 55))
    severity = 0.75 * np.clip(_z_volume(volume), -3, 3) + 0.55 * np.log1p(ivh_ml) / 1.5 + 0.65 * e()
    impairment = np.maximum(severity + 0.1, 0.0) ** 1.3
    gcs = np.clip(np.round(15.2 - 3.0 * impairment + 0.6 * e()), 3, 15).astype(np.int64)
    motor_deficit = rng.random(n) < _sigmoid(-1.2 + 0.8 * severity)
    wfns = _wfns(gcs, motor_deficit)
    hunt_hess = np.clip(np.round(1.6 + (15 - gcs) / 3 + 0.6 * e()), 1, 5).astype(np.int64)

    # Days 0-3.
    days = np.asarray(DAYS, dtype=np.float64)[None, :]
    noise = lambda scale: scale * rng.normal(0.0, 1.0, (n, len(DAYS)))  # noqa: E731
    col = lambda v: v[:, None]  # noqa: E731
    inflammation = 0.15 * severity + 0.99 * e()
    wbc_rise = 1.6 + 2.0 * inflammation
    fever = 0.45 * inflammation + 0.3 * severity + 0.4 * e()
    glucose_sd = np.exp(rng.normal(np.log(14.0), 0.6, n))
    kind = rng.random(n)
    salt_wasting = kind < _sigmoid(-1.9 + 0.3 * severity)
    hypernatraemic = ~salt_wasting & (kind > 0.95)
    sodium_drift = np.select(
        [salt_wasting, hypernatraemic], [rng.normal(-2.0, 0.6, n), rng.normal(2.0, 0.6, n)],
        default=rng.normal(0.0, 0.5, n),
    )  # fmt: skip
    sodium_true = col(139.0 + 2.0 * e()) + col(sodium_drift) * days
    glucose_true = 130.0 + 12.0 * severity + 15.0 * e()
    crp_start = np.exp(rng.normal(np.log(6.0), 0.7, n))
    crp_growth = 0.6 + 0.3 * inflammation
    anticoagulated = rng.random(n) < 0.03
    hb_start = np.where(female, 12.9, 14.0) + 1.1 * e()
    labs = {
        "wbc": col(10.0 + 1.2 * severity + 1.5 * e()) + col(wbc_rise) * days / 3 + noise(0.7),
        "glucose": col(glucose_true) + col(glucose_sd) * noise(1.0),
        "sodium": sodium_true + noise(0.8),
        "crp": col(crp_start) * np.exp(col(crp_growth) * days + noise(0.15)),
        "hemoglobin": col(hb_start) - 0.3 * col(np.abs(e())) * days + noise(0.3),
        "platelets": col(240.0 + 55.0 * e()) - 8.0 * days + noise(15.0),
        "inr": col(1.02 + 0.06 * np.abs(e()) + 1.0 * anticoagulated) + noise(0.04),
        "heart_rate": col(80.0 + 4.0 * severity + 10.0 * e()) + col(2.0 * e()) * days + noise(6.0),
        "map": col(96.0 + 6.0 * hypertension + 9.0 * e()) - 1.5 * days + noise(6.0),
        "temperature": 37.0 + col(fever) * (0.4 + 0.2 * days) + noise(0.25),
    }
    labs = {name: _lab(name, values) for name, values in labs.items()}
    crp_day3_true = crp_start * np.exp(3 * crp_growth)

    # Outcomes.
    dysnatraemia = np.minimum(((sodium_true.mean(axis=1) - 139.0) / 4.0) ** 2, 4.0)
    dci_logit = (
        _DCI_INTERCEPT
        + 0.2 * (fisher >= 3)
        + 0.1 * (wfns >= 4)
        + 2.8 * (wbc_rise > 3.0)
        + 1.7 * dysnatraemia
        + 2.0 * (glucose_sd > 25.0)
        + 0.8 * thick * ivh_load
        + 0.3 * smoking
    )
    dci = rng.random(n) < _sigmoid(dci_logit)
    eta = (
        0.2 * (wfns - 1)
        + 0.02 * (age - 55)
        + 2.8 * ((age >= 65) & (wfns >= 4))
        + 1.2 * dci
        + 0.8 * ivh_load
        + 2.4 * (fever > 0.6)
        + 2.4 * (glucose_true > 160.0)
        + 1.7 * dysnatraemia
        + 1.7 * (crp_day3_true > 60.0)
        + 1.0 * (labs["hemoglobin"].min(axis=1) < 10.0)
    )
    latent = eta + rng.logistic(0.0, 1.0, n)
    mrs = (latent[:, None] > _MRS_CUTS[None, :]).sum(axis=1).astype(np.int64)

    out = table.copy()
    out["age"] = age.astype(np.int64)
    out["sex"] = np.where(female, "F", "M")
    out["hypertension"] = hypertension.astype(np.int64)
    out["smoking"] = smoking.astype(np.int64)
    out["gcs"] = gcs
    out["wfns"] = wfns
    out["hunt_hess"] = hunt_hess
    out["modified_fisher"] = fisher
    daily = {
        column: labs[name][:, d]
        for name in LAB_UNITS
        for d, column in enumerate(daily_columns(name))
    }
    out = pd.concat([out, pd.DataFrame(daily)], axis=1)
    out["dci"] = dci.astype(np.int64)
    out["mrs_3m"] = mrs
    out["mortality_3m"] = (mrs == 6).astype(np.int64)
    return out[clinical_columns()]


def synthetic_emr_cohort(n: int, seed: int) -> pd.DataFrame:
    """An EMR-only cohort of ``n`` patients (ids ``emr-0000``...): image findings drawn as the
    image generator draws them, then ``generate_clinical``. For the DCI study at the paper's
    n of about 400, without generating any CT."""
    if int(n) < 1:
        raise DataError("synthetic_emr_cohort", f"n must be a positive integer, got {n!r}")
    rng = np.random.default_rng([int(seed), 0xF1D, CLINICAL_VERSION])
    findings = sample_image_findings(int(n), rng)
    findings.insert(0, "patient_id", [f"emr-{i:04d}" for i in range(int(n))])
    return generate_clinical(findings, seed)


def clinical_for_manifest(manifest_path: str | Path, seed: int = 0) -> Path:
    """Write ``clinical.csv`` beside a synthetic cohort's manifest (which holds the findings) and
    return its path. An existing file made from the same manifest, seed and version is reused;
    writes go to a temporary file first, so readers never see half a table."""
    manifest = Path(manifest_path)
    if not manifest.is_file():
        raise DataError(manifest, "manifest not found", "generate the cohort first")
    findings = pd.read_csv(manifest)
    stamp = {
        "seed": int(seed),
        "version": CLINICAL_VERSION,
        "manifest_sha256": hashlib.sha256(manifest.read_bytes()).hexdigest(),
    }
    target = manifest.parent / "clinical.csv"
    meta = manifest.parent / "clinical.json"
    if target.is_file() and meta.is_file():
        try:
            if json.loads(meta.read_text()) == stamp:
                return target
        except ValueError:
            pass  # unreadable stamp: regenerate
    try:
        table = generate_clinical(findings, seed)
    except DataError as err:
        raise DataError(manifest, str(err).split(": ", 1)[-1]) from err
    tmp = atomic_file(target)
    try:
        table.to_csv(tmp, index=False)
        commit_file(tmp, target)
    finally:
        if tmp.exists():
            os.unlink(tmp)
    tmp_meta = atomic_file(meta)
    tmp_meta.write_text(json.dumps(stamp, sort_keys=True))
    commit_file(tmp_meta, meta)
    return target
