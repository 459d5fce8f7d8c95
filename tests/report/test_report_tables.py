"""sah-report on a fabricated study: the table, volume bins, Wilcoxon, files and MLflow logging."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from mlflow.tracking import MlflowClient
from report_fixtures import EXPERIMENT, Study
from scipy import stats

from sah.cli.report import main as sah_report
from sah.errors import ConfigError
from sah.report import build_report
from sah.report.collect import Source, per_patient_table, study_runs
from sah.report.plots import pareto_front
from sah.report.stats import baseline_config, holm, parse_selector, wilcoxon_vs_baseline
from sah.report.tables import bin_table, config_table


def long_table(study: Study):
    client = MlflowClient(study.uri)
    return per_patient_table(client, study_runs(client, Source(study.uri, EXPERIMENT)))


def test_leaves_out_parents_failed_and_pruned_runs(study: Study) -> None:
    client = MlflowClient(study.uri)
    runs = study_runs(client, Source(study.uri, EXPERIMENT))
    assert len(runs) == 12  # 4 configurations x 3 folds
    assert {r.data.tags["method"] for r in runs} == {"none", "full", "lora_c"}


def test_config_table_pools_patients_over_folds(study: Study) -> None:
    table = config_table(long_table(study))
    assert list(zip(table["method"], table["rank"], strict=True)) == [
        ("none", "-"),
        ("full", "-"),
        ("lora_c", "4"),
        ("lora_c", "8"),
    ]
    assert table.loc[0, "target"] == "-"  # no fine-tuning has no target
    row = table[(table["method"] == "lora_c") & (table["rank"] == "8")].iloc[0]
    values = np.array(list(study.dice[("lora_c", "8")].values()))
    assert row["dice_mean"] == pytest.approx(values.mean())
    assert row["dice_sd"] == pytest.approx(values.std(ddof=1))
    fold_means = [values[3 * f : 3 * f + 3].mean() for f in range(3)]
    assert row["dice_fold_sd"] == pytest.approx(np.std(fold_means, ddof=1))
    assert (row["n_folds"], row["n_patients"], row["trainable_params"]) == (3, 9, 4000)


def test_volume_bins(study: Study) -> None:
    bins = bin_table(long_table(study))
    assert list(dict.fromkeys(bins["volume_bin"])) == ["0-25", "25-50", "50-100", "100-225"]
    none = bins[bins["method"] == "none"].set_index("volume_bin")
    assert none["n_patients"].to_dict() == {"0-25": 3, "25-50": 2, "50-100": 2, "100-225": 2}
    expected = np.mean([study.dice[("none", "4")][p] for p in ("p0", "p4", "p8")])
    assert none.loc["0-25", "dice_mean"] == pytest.approx(expected)


def test_wilcoxon_against_the_baseline(study: Study) -> None:
    table = long_table(study)
    baseline = baseline_config(table, parse_selector("method=none"))
    tests = wilcoxon_vs_baseline(table, baseline)
    assert len(tests) == 3 and set(tests["n_pairs"]) == {9}
    row = tests[(tests["method"] == "lora_c") & (tests["rank"] == "4")].iloc[0]
    patients = sorted(study.dice[("none", "4")])
    ours = [study.dice[("lora_c", "4")][p] for p in patients]
    base = [study.dice[("none", "4")][p] for p in patients]
    assert row["p_value"] == pytest.approx(stats.wilcoxon(ours, base).pvalue)
    assert row["dice_mean_diff"] == pytest.approx(np.mean(ours) - np.mean(base))
    assert all(tests["p_holm"] >= tests["p_value"])


def test_ambiguous_or_unknown_baseline_is_a_clear_error(study: Study) -> None:
    table = long_table(study)
    with pytest.raises(ConfigError, match="matches several"):
        baseline_config(table, parse_selector("lora_c"))
    with pytest.raises(ConfigError, match="matches no configuration"):
        baseline_config(table, parse_selector("method=cp_dora"))


def test_holm_and_pareto_helpers() -> None:
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert math.isnan(holm([math.nan])[0])
    front = pareto_front(np.array([10.0, 1.0, 5.0, 20.0]), np.array([0.6, 0.4, 0.7, 0.65]))
    assert list(front) == [1, 2]


def test_report_files_and_a_report_run(study: Study, tmp_path: Path) -> None:
    files = build_report(Source(study.uri, EXPERIMENT), tmp_path / "out", baseline="method=none")
    names = {p.name for p in files.all()}
    assert {
        "report.md",
        "study_table.csv",
        "volume_bins.csv",
        "wilcoxon.csv",
        "dice_vs_trainable_params.png",
        "dice_by_volume_bin.png",
        "volume_pred_vs_true.png",
    } <= names
    markdown = files.markdown.read_text()
    assert "| lora_c | all | 8 | 4,000 | 3 | 9 |" in markdown
    run = MlflowClient(study.uri).get_run(files.mlflow_run_id)
    assert run.data.tags["sah.kind"] == "report" and run.info.status == "FINISHED"
    logged = {a.path for a in MlflowClient(study.uri).list_artifacts(run.info.run_id, "report")}
    assert "report/report.md" in logged and "report/volume_pred_vs_true.png" in logged
    # A second report leaves the first out of the study's runs.
    assert len(study_runs(MlflowClient(study.uri), Source(study.uri, EXPERIMENT))) == 12


def test_cli_on_a_sweep_logs_to_its_parent(study: Study, tmp_path: Path, capsys) -> None:
    sah_report(
        ["--tracking-uri", study.uri, "--parent-run", study.parent_run_id, "--out", str(tmp_path)]
    )
    assert "report:" in capsys.readouterr().out
    logged = {a.path for a in MlflowClient(study.uri).list_artifacts(study.parent_run_id, "report")}
    assert "report/study_table.csv" in logged


@pytest.mark.parametrize(
    ("args", "key"),
    [
        (["--experiment", "no-such-study"], "--experiment"),
        (["--parent-run", "0123456789abcdef"], "--parent-run"),
        (["--experiment", EXPERIMENT, "--metric", "no_such_metric"], "--metric"),
    ],
)
def test_cli_errors_are_one_line(study: Study, tmp_path: Path, capsys, args, key) -> None:
    with pytest.raises(SystemExit) as exit_info:
        sah_report(["--tracking-uri", study.uri, "--out", str(tmp_path), "--no-log", *args])
    assert exit_info.value.code == 2
    message = capsys.readouterr().err.strip()
    assert message.startswith(f"sah-report: config key '{key}'") and "\n" not in message
