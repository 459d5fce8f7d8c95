"""task=outcome: features, leakage-free CV, comparison with the standard model, MLflow logging,
and one clear error per bad input."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from sah.cli.schema import register_schema
from sah.cli.train import CONFIG_DIR
from sah.data.synthetic.clinical import LAB_UNITS, synthetic_emr_cohort
from sah.errors import ConfigError, DataError
from sah.tasks.outcome.cross_validation import (
    CVSettings,
    Fold,
    ImportanceSettings,
    OutcomeSettings,
    check_events,
    cross_validate_outcome,
)
from sah.tasks.outcome.estimators import TabularModelSpec, make_pipeline
from sah.tasks.outcome.features import (
    FeatureSpec,
    binary_target,
    build_features,
    merge_image_features,
    static_features,
    summarise_days,
)

STATIC = ("age", "sex", "wfns", "modified_fisher", "blood_volume_ml", "ivh_volume_ml")
SMALL = [
    "task=outcome",
    "task.cv.n_splits=3",
    "task.cv.n_repeats=1",
    "task.importance.n_permutations=1",
]
FAST_PARAMS = {
    "gbm": ["task.estimator.params.n_estimators=20"],
    "rf": ["task.estimator.params.n_estimators=20"],
    "mlp": ["task.estimator.params.max_epochs=15"],
}
ESTIMATORS = ["gbm", "rf", "svm", "mlp", "logistic", "logistic_grades"]


@pytest.fixture(scope="module")
def cohort() -> pd.DataFrame:
    return synthetic_emr_cohort(120, seed=1)


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    """One SQLite tracking store for the module (creating one costs seconds)."""
    return tmp_path_factory.mktemp("mlflow")


def compose_outcome(root: Path, overrides: list[str]):
    register_schema()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose(
            "train",
            overrides=[
                *SMALL,
                f"paths.root_dir={root}",
                f"paths.output_dir={root}/out",
                f"tracking.uri=sqlite:///{root}/mlflow.db",
                *overrides,
            ],
        )


def run(root: Path, overrides: list[str], estimator: str = "gbm", data: str = "emr_synthetic"):
    from sah.tasks.driver import run as run_task

    size = ["data.n_patients=90"] if data == "emr_synthetic" else []
    cfg = compose_outcome(root, [f"estimator={estimator}", *size, *overrides])
    return run_task(cfg, {"estimator": estimator, "data": data}), cfg


# --- features -------------------------------------------------------------------------------


def test_day_summaries_skip_missing_days() -> None:
    values = np.array([[1.0, 2.0, 3.0, 4.0], [10.0, np.nan, 14.0, 16.0], [5.0] + [np.nan] * 3])
    out = summarise_days(values, [0, 1, 2, 3])
    assert out["slope"][0] == pytest.approx(1.0)
    # Least squares over days 0, 2, 3: slope 1.857..., not the slope of an interpolated series.
    assert out["slope"][1] == pytest.approx(np.polyfit([0, 2, 3], [10, 14, 16], 1)[0])
    assert out["mean"][1] == pytest.approx(40 / 3) and out["max"][1] == 16.0
    assert np.isnan(out["slope"][2]) and np.isnan(out["sd"][2]) and out["min"][2] == 5.0


def test_features_are_named_per_variable_and_summary(cohort: pd.DataFrame) -> None:
    spec = FeatureSpec(STATIC, ("wbc", "sodium"))
    features = build_features(cohort, spec, "t.csv")
    assert list(features.columns) == [*STATIC, *spec.feature_names()[len(STATIC) :]]
    assert "wbc_slope" in features.columns and "sodium_sd" in features.columns
    assert set(features["sex"]) == {0.0, 1.0}
    assert features.index.name == "patient_id" and features.index.is_unique
    assert spec.groups()["wbc"] == [f"wbc_{s}" for s in spec.summaries]


def test_missing_column_is_named(cohort: pd.DataFrame) -> None:
    spec = FeatureSpec(STATIC, tuple(LAB_UNITS))
    with pytest.raises(DataError, match=r"t\.csv: lacks column\(s\) 'wbc_d2'"):
        build_features(cohort.drop(columns="wbc_d2"), spec, "t.csv")
    with pytest.raises(DataError, match="'wfns'"):
        static_features(cohort.drop(columns="wfns"), ["wfns", "age"], "t.csv")


def test_non_numeric_value_names_column_and_patient(cohort: pd.DataFrame) -> None:
    bad = cohort.astype({"sodium_d1": object})
    bad.loc[4, "sodium_d1"] = "12O"
    with pytest.raises(DataError, match=r"'sodium_d1' has non-numeric values \('12O' for patient"):
        build_features(bad, FeatureSpec(STATIC, ("sodium",)), "t.csv")
    bad = cohort.copy()
    bad.loc[0, "sex"] = "unknown"
    with pytest.raises(DataError, match=r"'sex'.*not F/M"):
        static_features(bad, ["sex"], "t.csv")


def test_blank_cells_are_missing_not_errors(cohort: pd.DataFrame) -> None:
    blank = cohort.astype({"wbc_d0": object})
    blank.loc[3, "wbc_d0"] = ""
    blank.loc[5, "wbc_d0"] = None
    features = build_features(blank, FeatureSpec(STATIC, ("wbc",)), "t.csv")
    assert np.isfinite(features["wbc_mean"]).all()


def test_targets_binarise_and_drop_unknown_outcomes(cohort: pd.DataFrame) -> None:
    table = cohort.astype({"mrs_3m": float})
    table.loc[:9, "mrs_3m"] = np.nan
    y = binary_target(table, "mrs_3m", "t.csv")
    assert len(y) == len(table) - 10
    assert (y == (table["mrs_3m"].dropna() >= 4).astype(int).to_numpy()).all()
    table.loc[20, "mrs_3m"] = 7
    with pytest.raises(DataError, match="'mrs_3m' must hold"):
        binary_target(table, "mrs_3m", "t.csv")
    with pytest.raises(ConfigError, match=r"task.target"):
        binary_target(cohort, "gos", "t.csv")


def test_image_features_replace_and_extend_the_table(cohort: pd.DataFrame) -> None:
    image = pd.DataFrame(
        {
            "patient_id": cohort["patient_id"][:100],
            "blood_volume_ml": 1.0,
            "seg_sah_ml": np.arange(100.0),
        }
    )
    merged, columns = merge_image_features(cohort, image, "img.csv")
    assert columns == ["blood_volume_ml", "seg_sah_ml"]
    assert (merged["blood_volume_ml"][:100] == 1.0).all()
    assert merged["seg_sah_ml"][100:].isna().all() and len(merged) == len(cohort)
    with pytest.raises(DataError, match="no patient_id in common"):
        merge_image_features(cohort, image.assign(patient_id="x" + image["patient_id"]), "img.csv")


# --- cross-validation -----------------------------------------------------------------------


def test_preprocessing_is_fitted_on_training_folds_only(cohort: pd.DataFrame) -> None:
    """Imputer medians and scaler means must come from the training patients alone. The test
    fold's values of one feature are shifted by 1e6 and some are missing, so statistics that saw
    held-out patients would be visibly different."""
    spec = FeatureSpec(STATIC, ("wbc",))
    features = build_features(cohort, spec, "t")
    y = binary_target(cohort, "dci", "t")
    positions = np.arange(len(y))
    folds = [
        Fold(0, k, positions[positions % 3 != k], positions[positions % 3 == k]) for k in range(3)
    ]
    fitted: list = []

    def make_model():
        fitted.append(make_pipeline(TabularModelSpec("logistic"), "median", 0))
        return fitted[-1]

    settings = OutcomeSettings("dci", CVSettings(3, 1), importance=ImportanceSettings(False))
    for fold in folds:
        fitted.clear()
        shifted = features.copy()
        shifted.iloc[fold.test, shifted.columns.get_loc("wbc_mean")] += 1e6
        shifted.iloc[fold.train[:10], shifted.columns.get_loc("age")] = np.nan
        cross_validate_outcome(
            shifted, shifted[["wfns"]], y, make_model, make_model, settings, folds=[fold]
        )
        model = fitted[0]  # the first pipeline made per fold is the model, then the standard
        train = shifted.iloc[fold.train]
        imputer, scaler = model.named_steps["impute"], model.named_steps["scale"]
        assert imputer.statistics_[list(train.columns).index("age")] == train["age"].median()
        assert scaler.mean_[list(train.columns).index("wbc_mean")] == pytest.approx(
            train["wbc_mean"].mean()
        )
        assert scaler.mean_[list(train.columns).index("wbc_mean")] < 1e3  # no held-out patient


def test_cv_reports_fold_aucs_and_difference_with_ci(cohort: pd.DataFrame) -> None:
    spec = FeatureSpec(STATIC, ("wbc", "sodium", "glucose"))
    features = build_features(cohort, spec, "t")
    standard = static_features(cohort, ["wfns", "modified_fisher", "age"], "t")
    y = binary_target(cohort, "dci", "t")
    settings = OutcomeSettings(
        "dci", CVSettings(3, 2), importance=ImportanceSettings(True, "variable", 2)
    )
    make = lambda name: lambda: make_pipeline(TabularModelSpec(name), "median", 0)  # noqa: E731
    result = cross_validate_outcome(
        features, standard, y, make("logistic"), make("logistic"), settings, spec.groups()
    )
    assert len(result.folds) == 6 and set(result.folds["repeat"]) == {0, 1}
    assert len(result.predictions) == 2 * len(y)  # every patient held out once per repeat
    assert result.predictions.groupby("repeat")["patient_id"].nunique().eq(len(y)).all()
    s = result.summary
    assert s["test/auc"] == pytest.approx(result.folds["auc"].mean())
    assert s["test/auc_diff_ci_low"] < s["test/auc_diff"] < s["test/auc_diff_ci_high"]
    assert 0 <= s["test/auc_diff_p"] <= 1
    # The sweeper's value comes from inner CVs inside the training folds only.
    assert s["val/auc"] == pytest.approx(result.folds["inner_auc"].mean())
    assert set(result.importance["feature"]) == set(spec.groups())
    assert (result.importance["n"] == 3 * 2).all()  # folds of the first repeat x permutations


def test_single_class_and_too_few_events_name_the_problem(cohort: pd.DataFrame) -> None:
    y = binary_target(cohort, "dci", "t")
    with pytest.raises(DataError, match=r"all 120 patients .* dci=0"):
        check_events(y * 0, 5, "dci", "t")
    few = y * 0
    few.iloc[:3] = 1
    with pytest.raises(
        DataError, match=r"3 events .* 5-fold CV needs at least 5.*task\.cv\.n_splits"
    ):
        check_events(few, 5, "dci", "t")
    features = static_features(cohort, ["age"], "t")
    positions = np.arange(len(y))
    only_negatives = positions[y.to_numpy() == 0]
    fold = Fold(0, 1, positions[~np.isin(positions, only_negatives[:10])], only_negatives[:10])
    make = lambda: make_pipeline(TabularModelSpec("logistic"), "median", 0)  # noqa: E731
    settings = OutcomeSettings("dci", importance=ImportanceSettings(False))
    with pytest.raises(DataError, match=r"repeat 0 fold 1: the held-out patients .* dci=0"):
        cross_validate_outcome(features, features, y, make, make, settings, folds=[fold])


def test_a_model_that_cannot_fit_a_small_fold_names_the_fold(cohort: pd.DataFrame) -> None:
    small = cohort.iloc[:24].assign(dci=[1] * 7 + [0] * 17)
    y = binary_target(small, "dci", "t")
    features = static_features(small, ["age", "wfns"], "t")
    settings = OutcomeSettings("dci", CVSettings(3, 1), importance=ImportanceSettings(False))
    svm = lambda: make_pipeline(TabularModelSpec("svm"), "median", 0)  # noqa: E731
    logistic = lambda: make_pipeline(TabularModelSpec("logistic"), "median", 0)  # noqa: E731
    with pytest.raises(
        DataError,
        match=r"repeat 0 fold 0: the model could not be fitted on 16 patients with 4 events",
    ):
        cross_validate_outcome(features, features, y, svm, logistic, settings)


# --- sah-train task=outcome -----------------------------------------------------------------


@pytest.mark.parametrize("estimator", ESTIMATORS)
def test_each_estimator_trains_and_logs_to_mlflow(estimator: str, store: Path) -> None:
    from mlflow.tracking import MlflowClient

    value, cfg = run(store, FAST_PARAMS.get(estimator, []), estimator=estimator)
    # The names outcome runs had when the estimators were options tab_* of the model group.
    model = f"tab_{estimator}"
    client = MlflowClient(cfg.tracking.uri)
    experiment = client.get_experiment_by_name("sah-outcome")
    runs = client.search_runs(
        [experiment.experiment_id], f"attributes.run_name = '{model}-dci'", max_results=1
    )
    logged = runs[0]
    metrics = logged.data.metrics
    assert metrics["val/auc"] == pytest.approx(value) and 0 <= value <= 1
    for key in [
        "test/standard_auc",
        "test/auc_diff",
        "test/auc_diff_ci_low",
        "test/auc_diff_ci_high",
    ]:
        assert key in metrics
    assert logged.data.params["target"] == "dci"
    assert logged.data.params["estimator"] == cfg.task.estimator.name
    assert logged.data.params["model"] == model and logged.data.tags["model"] == model
    assert logged.info.status == "FINISHED"
    artifacts = {a.path for a in client.list_artifacts(logged.info.run_id)}
    assert {"folds.csv", "oof_predictions.csv", "comparison.csv", "roc.png"} <= artifacts
    if estimator != "logistic_grades":
        assert {"importance.csv", "importance.png"} <= artifacts
    else:
        assert metrics["test/auc_diff"] == pytest.approx(0.0, abs=1e-9)


def test_user_table_with_image_features_and_other_target(store: Path, cohort) -> None:
    table = store / "clinical.csv"
    cohort.to_csv(table, index=False)
    image = store / "image_features.csv"
    cohort[["patient_id"]].assign(seg_ivh_ml=cohort["ivh_volume_ml"] * 1.1).to_csv(
        image, index=False
    )
    value, _ = run(
        store,
        [
            "data=emr_table",
            f"data.table={table}",
            f"data.image_features={image}",
            "task.target=mrs_3m",
            "task.standard.features=[hunt_hess,modified_fisher,age]",
            "task.imputation=iterative",
            "task.features.daily=[wbc,sodium]",
            "task.estimator.params.n_estimators=20",
        ],
        data="emr_table",
    )
    assert 0.5 < value <= 1.0
    importance = pd.read_csv(store / "out" / "importance.csv")
    assert "seg_ivh_ml" in set(importance["feature"])


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda t: t.drop(columns="glucose_d3"), r"lacks column\(s\) 'glucose_d3'"),
        (lambda t: t.astype({"crp_d2": object}).assign(crp_d2="high"), "'crp_d2' has non-numeric"),
        (lambda t: t.assign(dci=0), "all 120 patients .* dci=0"),
        (lambda t: t.assign(dci=(t.index < 2).astype(int)), "2 events .* 3-fold CV needs"),
    ],
    ids=["missing-column", "non-numeric", "single-class", "too-few-events"],
)
def test_bad_tables_fail_with_one_clear_error(store: Path, cohort, edit, message) -> None:
    table = store / "bad.csv"
    edit(cohort).to_csv(table, index=False)
    with pytest.raises(DataError, match=message):
        run(store, ["data=emr_table", f"data.table={table}"], data="emr_table")


def test_image_network_and_image_data_are_refused(store: Path) -> None:
    with pytest.raises(ConfigError, match=r"'model'.*takes no network.*gbm.*estimator=gbm"):
        run(store, ["model=unet2d"])
    with pytest.raises(ConfigError, match=r"'data'.*data=emr_synthetic or data=emr_table"):
        run(store, ["data=synthetic_sah"], data="synthetic_sah")


def test_cli_prints_one_line_for_an_image_model(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "sah.cli.train", "task=outcome", "model=mv_unet"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "config key 'model'" in lines[0] and "estimator=" in lines[0]


def test_an_estimator_composes_with_task_outcome_only(store: Path) -> None:
    """Only conf/task/outcome.yaml composes the estimator group: no other task can take one."""
    from hydra.errors import ConfigCompositionException

    register_schema()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        for task in ("segmentation", "mortality"):
            with pytest.raises(ConfigCompositionException, match=r"'estimator'.*defaults list"):
                compose("train", overrides=[f"task={task}", "estimator=gbm"])
            assert "estimator" not in compose("train", overrides=[f"task={task}"]).task
        cfg = compose("train", overrides=["task=outcome", "estimator=rf"])
    assert cfg.model is None and cfg.task.estimator.name == "rf"
    assert "kind" not in cfg.task.estimator


@pytest.mark.slow
def test_sweep_over_every_estimator(tmp_path: Path) -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "sah.cli.train",
            "-m",
            "task=outcome",
            "estimator=glob(*)",
            "data.n_patients=60",
            "task.cv.n_splits=3",
            "task.cv.n_repeats=1",
            "task.importance.enabled=false",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=900,
    )
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    experiment = client.get_experiment_by_name("sah-outcome")
    runs = client.search_runs([experiment.experiment_id])
    assert done.returncode == 0, done.stderr
    # One job per estimator under the sweep's parent run, named as when they were model options.
    jobs = {r.info.run_name for r in runs if "mlflow.parentRunId" in r.data.tags}
    assert jobs == {f"tab_{e}-dci" for e in ESTIMATORS}
