"""sah-report on a fabricated study: test rows only, one row per configuration, fold checks,
select-then-report, volume bins, Wilcoxon, files, MLflow logging and one-line errors."""

from __future__ import annotations

import math
from pathlib import Path
from statistics import mean

import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient
from report_fixtures import BY_NAME, CONFIGS, EXPERIMENT, N_RUNS, VAL_DICE, Config, Study
from scipy import stats

from sah.cli.report import main as sah_report
from sah.errors import ConfigError
from sah.report import build_report
from sah.report.collect import Collected, Source, study_runs
from sah.report.configs import (
    config_frame,
    config_params,
    expected_folds,
    fallback_config_id,
    fold_check,
)
from sah.report.plots import pareto_front
from sah.report.select import direction, select
from sah.report.stats import baseline_config, holm, parse_selector, wilcoxon_vs_baseline
from sah.report.tables import bin_table, config_table


def by_config(frame: pd.DataFrame) -> dict[str, pd.Series]:
    names = {c.config_id: c.name for c in CONFIGS}
    return {names[row["config"]]: row for _, row in frame.iterrows()}


def test_leaves_out_parents_failed_pruned_and_unlabelled_runs(
    read_only_study: Study, found: Collected
) -> None:
    client = MlflowClient(read_only_study.uri)
    runs = study_runs(client, Source(read_only_study.uri, EXPERIMENT))
    assert len(runs) == N_RUNS + 1  # the legacy run finished too ...
    assert len(found.runs) == N_RUNS  # ... but its CSV does not say which set a row holds
    (warning,) = found.warnings
    assert "legacy-lora_c-r8-fold0" in warning and "'set' column" in warning


def test_runs_that_differ_only_in_lr_are_two_rows(read_only_study: Study, found: Collected) -> None:
    configs = config_frame(found.runs)
    table = config_table(found.patients, configs)
    assert len(table) == len(CONFIGS)
    # lr is the only param that differs between configurations; fold, seed and n_folds do not
    # name a row, and alpha has one value where it exists.
    assert configs.columns == ["method", "target", "rank", "lr"]
    rows = by_config(table)
    assert float(rows["lora_r8"]["lr"]) == 1e-3 and float(rows["lora_r8_lr"]["lr"]) == 1e-2
    for name, row in rows.items():
        values = list(read_only_study.dice[name].values())
        assert row["dice_mean"] == pytest.approx(mean(values)), name
        assert row["n_patients"] == len(values) and row["n_runs"] == len(BY_NAME[name].folds)
    r8 = rows["lora_r8"]
    fold_means = [
        np.mean([read_only_study.dice["lora_r8"][f"p{3 * f + k}"] for k in range(3)])
        for f in (0, 1, 2)
    ]
    assert r8["dice_fold_sd"] == pytest.approx(np.std(fold_means, ddof=1))
    assert r8["trainable_params"] == 4000 and r8["label"] == "lora_c all 8 lr=0.001"


def test_missing_and_duplicated_folds_are_flagged(
    read_only_study: Study, found: Collected, tmp_path: Path
) -> None:
    rows = by_config(config_frame(found.runs).frame)
    assert rows["cp_r4_gap"]["check"] == "missing fold 1"
    assert rows["cp_r8_twice"]["check"] == "fold 1 ×2"
    assert {rows[c.name]["check"] for c in CONFIGS if c.folds == (0, 1, 2)} == {""}

    files = build_report(Source(read_only_study.uri, EXPERIMENT), tmp_path, log_to_mlflow=False)
    markdown = files.markdown.read_text()
    assert "| cp_lora | all | 4 | 0.001 | 500 | 2 | 2/3 ⚠ | 6 |" in markdown
    assert "| cp_lora | all | 8 | 0.001 | 900 | 4 | 3/3 ⚠ | 9 |" in markdown
    assert "| cp_lora | all | 16 | 0.001 | 1,700 | 3 | 3/3 | 9 |" in markdown
    under = next(line for line in markdown.splitlines() if line.startswith("**⚠"))
    assert "2 of 8 rows" in under
    assert "cp_lora all 4 lr=0.001: missing fold 1" in under
    assert "cp_lora all 8 lr=0.001: fold 1 ×2" in under


def test_the_report_never_reads_selection_set_rows(read_only_study: Study, tmp_path: Path) -> None:
    files = build_report(Source(read_only_study.uri, EXPERIMENT), tmp_path, log_to_mlflow=False)
    rows = pd.read_csv(tmp_path / "per_patient.csv", dtype={"patient_id": str})
    assert set(rows["patient_id"]) == {f"p{k}" for k in range(9)}  # no selection-set patient
    assert len(rows) == sum(3 * len(c.folds) for c in CONFIGS)
    assert "set" not in rows.columns and not np.isclose(rows["dice"], VAL_DICE).any()
    assert files.warnings and "legacy" in files.warnings[0]
    assert "legacy" in files.markdown.read_text().split("## Runs left out")[1]


def hand_pick(key: str, mode: str) -> dict[str, Config]:
    """Per value of ``key``, the configuration with the best mean val/dice over its runs; only
    configurations with folds 0, 1, 2 once compete while their group has one."""

    def value(config: Config) -> str:
        if key == "rank":
            return "-" if config.method in ("none", "full") else config.rank
        return getattr(config, key)

    picks = {}
    for group in {value(c) for c in CONFIGS}:
        members = [c for c in CONFIGS if value(c) == group]
        complete = [c for c in members if sorted(c.folds) == [0, 1, 2]] or members
        best = (max if mode == "max" else min)(complete, key=lambda c: mean(c.val))
        picks[group] = best
    return picks


@pytest.mark.parametrize(("by", "mode"), [("method", None), ("method", "min"), ("rank", None)])
def test_select_reports_the_configuration_each_group_picks_by_val(
    read_only_study: Study, tmp_path: Path, by: str, mode: str | None
) -> None:
    files = build_report(
        Source(read_only_study.uri, EXPERIMENT),
        tmp_path,
        log_to_mlflow=False,
        select_metric="val/dice",
        select_by=by,
        select_mode=mode,
    )
    expected = hand_pick(by, mode or "max")
    picked = pd.read_csv(tmp_path / "selection.csv", dtype=str)
    assert dict(zip(picked[by], picked["config"], strict=True)) == {
        group: config.config_id for group, config in expected.items()
    }
    means = dict(zip(picked[by], picked["mean val/dice"].astype(float), strict=True))
    assert means == pytest.approx({g: mean(c.val) for g, c in expected.items()})
    # The table holds exactly the picked configurations, with their own test Dice.
    table = pd.read_csv(tmp_path / "study_table.csv", dtype={"config": str})
    assert set(table["config"]) == {c.config_id for c in expected.values()}
    for config in expected.values():
        row = table[table["config"] == config.config_id].iloc[0]
        assert row["dice_mean"] == pytest.approx(mean(read_only_study.dice[config.name].values()))
    for group, config in expected.items():
        assert any(
            line.startswith(f"{by}={group}: picked") and config.config_id in line
            for line in files.selection
        )


def test_select_per_method_does_not_peek_at_test_patients(
    read_only_study: Study, found: Collected
) -> None:
    """lora_c: lr 0.01 has the best val/dice and the worst test Dice; cp_lora: the rank with
    a missing fold and the one with a fold twice have higher val/dice than the complete one."""
    picked = select(found.runs, config_frame(found.runs), "val/dice").table.set_index("method")
    assert picked.loc["lora_c", "config"] == BY_NAME["lora_r8_lr"].config_id
    assert picked.loc["cp_lora", "config"] == BY_NAME["cp_r16"].config_id
    assert picked.loc["cp_lora", "incomplete (not competing)"] == 2
    assert direction("val/loss") == "min" and direction("val/hd95_mm") == "min"
    assert direction("val/dice") == "max" and direction("val/loss", "max") == "max"


def test_select_says_which_configurations_had_no_val_metric(found: Collected) -> None:
    """A group whose only configuration logged no val/dice (no fine-tuning need not validate)
    is reported as it is; a configuration without it does not compete; both are said."""
    unscored = {BY_NAME["none"].config_id, BY_NAME["lora_r8_lr"].config_id}
    runs = found.runs.assign(
        metrics=[
            {} if config in unscored else metrics
            for config, metrics in zip(found.runs["config"], found.runs["metrics"], strict=True)
        ]
    )
    selection = select(runs, config_frame(runs), "val/dice")
    picked = selection.table.set_index("method")
    assert picked.loc["none", "config"] == BY_NAME["none"].config_id
    assert math.isnan(picked.loc["none", "mean val/dice"])
    assert picked.loc["lora_c", "config"] == BY_NAME["lora_r8"].config_id  # next best val
    assert sorted(selection.warnings) == [
        "method=lora_c: without val/dice, these did not compete: lora_c all 8 lr=0.01",
        "method=none: its only configuration logged no val/dice; reported as is",
    ]


def test_select_refuses_test_metrics_and_unknown_tags(
    read_only_study: Study, found: Collected
) -> None:
    configs = config_frame(found.runs)
    with pytest.raises(ConfigError, match="'--select': 'test/dice' is not a selection-set"):
        select(found.runs, configs, "test/dice")
    with pytest.raises(ConfigError, match="'--select': no run logged 'val/auc'"):
        select(found.runs, configs, "val/auc")
    with pytest.raises(ConfigError, match=r"'--select-by': runs .* have no tag 'site'"):
        select(found.runs, configs, "val/dice", by="site")
    with pytest.raises(ConfigError, match="'--select-by': tag 'fold' differs between runs"):
        select(found.runs, configs, "val/dice", by="fold")


def test_volume_bins(read_only_study: Study, found: Collected) -> None:
    bins = bin_table(found.patients, config_frame(found.runs))
    assert list(dict.fromkeys(bins["volume_bin"])) == ["0-25", "25-50", "50-100", "100-225"]
    none = bins[bins["method"] == "none"].set_index("volume_bin")
    assert none["n_patients"].to_dict() == {"0-25": 3, "25-50": 2, "50-100": 2, "100-225": 2}
    expected = np.mean([read_only_study.dice["none"][p] for p in ("p0", "p4", "p8")])
    assert none.loc["0-25", "dice_mean"] == pytest.approx(expected)


def test_wilcoxon_against_the_baseline(read_only_study: Study, found: Collected) -> None:
    configs = config_frame(found.runs)
    table = config_table(found.patients, configs)
    baseline = baseline_config(found.runs, parse_selector("method=none"))
    assert baseline == BY_NAME["none"].config_id
    tests = wilcoxon_vs_baseline(found.patients, table, baseline)
    assert len(tests) == len(CONFIGS) - 1
    assert set(tests["n_pairs"]) == {9, 6}  # the row lacking fold 1 pairs 6 patients
    lora = tests[(tests["method"] == "lora_c") & (tests["rank"] == "4")].iloc[0]
    patients = sorted(read_only_study.dice["none"])
    ours = [read_only_study.dice["lora_r4"][p] for p in patients]
    base = [read_only_study.dice["none"][p] for p in patients]
    assert lora["p_value"] == pytest.approx(stats.wilcoxon(ours, base).pvalue)
    assert lora["dice_mean_diff"] == pytest.approx(np.mean(ours) - np.mean(base))
    assert all(tests["p_holm"] >= tests["p_value"])


def test_baseline_errors_name_what_exists(read_only_study: Study, found: Collected) -> None:
    runs = found.runs
    with pytest.raises(ConfigError) as missing:
        baseline_config(runs, parse_selector("method=dora_c"))
    assert str(missing.value) == (
        "config key '--baseline': no run has method=dora_c; "
        "methods present: cp_lora, full, lora_c, none"
    )
    with pytest.raises(ConfigError, match="ranks present among runs with method=cp_lora: 4, 8, 16"):
        baseline_config(runs, parse_selector("method=cp_lora,rank=2"))
    with pytest.raises(ConfigError, match=r"matches 2 configurations .* add one of lr"):
        baseline_config(runs, parse_selector("method=lora_c,rank=8"))
    assert baseline_config(runs, parse_selector("lora_c,rank=8,lr=1e-2")) == (
        BY_NAME["lora_r8_lr"].config_id
    )


def test_fallback_configuration_ignores_fold_seed_and_paths() -> None:
    """Runs without the sah.config_id tag: one configuration whatever their fold, seed and
    paths; another as soon as lr differs."""
    tags = {"model": "unet2d", "method": "lora_c", "target": "all", "rank": "8", "init": "p"}

    def run_params(fold: int, seed: int, lr: float) -> dict[str, str]:
        out = f"/runs/outputs/2026-12-0{fold}/{seed}"
        return {
            "fold": str(fold),
            "seed": str(seed),
            "data.fold": str(fold),
            "data.split_seed": str(seed),
            "paths.output_dir": out,
            "callbacks.checkpoint.dirpath": f"{out}/checkpoints",
            "data.cache_root": "/cache",
            "tracking.uri": f"sqlite:///{out}/mlflow.db",
            "optuna.trial_number": str(fold),
            "task.module.lr": str(lr),
            "trainer.max_epochs": "5",
        }

    first = fallback_config_id(config_params(run_params(0, 1, 1e-3)), tags)
    assert first == fallback_config_id(config_params(run_params(2, 7, 1e-3)), tags)
    assert first != fallback_config_id(config_params(run_params(0, 1, 1e-2)), tags)
    assert first != fallback_config_id(config_params(run_params(0, 1, 1e-3)), {**tags, "rank": "4"})
    assert set(config_params(run_params(0, 1, 1e-3))) == {"task.module.lr", "trainer.max_epochs"}


def test_fold_check_per_seed_and_without_n_folds() -> None:
    """Each seed needs every fold once; runs that do not log n_folds need the study's folds."""
    runs = pd.DataFrame(
        {
            "seed": ["1", "1", "1", "2", "2", "2"],
            "fold": ["0", "1", "2", "0", "1", "1"],
            "n_folds": [math.nan] * 6,
        }
    )
    expected = expected_folds(runs, runs)
    assert expected == ["0", "1", "2"]
    assert fold_check(runs, expected) == "seed 2: missing fold 2; fold 1 ×2"
    assert fold_check(runs[runs["seed"] == "1"], ["0", "1", "2", "3", "4"]) == "missing folds 3, 4"
    five = runs.assign(n_folds=5.0)
    assert expected_folds(five, runs) == ["0", "1", "2", "3", "4"]


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
    assert "| lora_c | all | 8 | 0.01 | 4,000 | 3 | 3/3 | 9 |" in markdown
    run = MlflowClient(study.uri).get_run(files.mlflow_run_id)
    assert run.data.tags["sah.kind"] == "report" and run.info.status == "FINISHED"
    logged = {a.path for a in MlflowClient(study.uri).list_artifacts(run.info.run_id, "report")}
    assert "report/report.md" in logged and "report/volume_pred_vs_true.png" in logged
    # A second report leaves the first out of the study's runs.
    assert len(study_runs(MlflowClient(study.uri), Source(study.uri, EXPERIMENT))) == N_RUNS + 1


def test_cli_on_a_sweep_logs_to_its_parent(study: Study, tmp_path: Path, capsys) -> None:
    sah_report(
        [
            *("--tracking-uri", study.uri, "--parent-run", study.parent_run_id),
            *("--select", "val/dice", "--baseline", "method=none", "--out", str(tmp_path)),
        ]
    )
    out = capsys.readouterr().out
    assert "report:" in out
    lora = BY_NAME["lora_r8_lr"]
    assert f"selected method=lora_c: picked lora_c all 8 lr=0.01 [config {lora.config_id}]" in out
    assert "mean val/dice 0.7900 over 3 runs, best (max) of 3 configurations" in out
    logged = {a.path for a in MlflowClient(study.uri).list_artifacts(study.parent_run_id, "report")}
    assert {"report/study_table.csv", "report/selection.csv"} <= logged


@pytest.mark.parametrize(
    ("args", "key"),
    [
        (["--experiment", "no-such-study"], "--experiment"),
        (["--parent-run", "0123456789abcdef"], "--parent-run"),
        (["--experiment", EXPERIMENT, "--metric", "no_such_metric"], "--metric"),
        (["--experiment", EXPERIMENT, "--baseline", "method=dora_c"], "--baseline"),
        (["--experiment", EXPERIMENT, "--select", "test/dice"], "--select"),
    ],
)
def test_cli_errors_are_one_line(read_only_study: Study, tmp_path: Path, capsys, args, key) -> None:
    with pytest.raises(SystemExit) as exit_info:
        sah_report(
            ["--tracking-uri", read_only_study.uri, "--out", str(tmp_path), "--no-log", *args]
        )
    assert exit_info.value.code == 2
    message = capsys.readouterr().err.strip()
    assert message.startswith(f"sah-report: config key '{key}'") and "\n" not in message
