"""Build the study report: read the runs' test metrics, write tables (Markdown + CSV) and plots,
log them back to MLflow (to the sweep's parent run, or to a new ``report`` run in the
experiment). With ``select``, each group's configuration is first picked by its selection-set
metric, and only the picked configurations are reported."""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from mlflow.tracking import MlflowClient

from sah.report import markdown, plots
from sah.report.collect import CONFIG_TAG, PER_PATIENT, Source, collect, study_runs
from sah.report.configs import Configs, config_frame
from sah.report.select import Selection, describe, select
from sah.report.stats import baseline_config, parse_selector, wilcoxon_vs_baseline
from sah.report.tables import bin_table, check_metric, config_table

REPORT_DIR = "report"


@dataclass
class ReportFiles:
    out_dir: Path
    markdown: Path
    tables: list[Path] = field(default_factory=list)
    plots: list[Path] = field(default_factory=list)
    mlflow_run_id: str | None = None
    warnings: list[str] = field(default_factory=list)  # runs left out, and why
    selection: list[str] = field(default_factory=list)  # what --select picked, one line a group

    def all(self) -> list[Path]:
        return [self.markdown, *self.tables, *self.plots]


def _wide_bins(bins: pd.DataFrame, columns: list[str], metric: str) -> pd.DataFrame:
    """One row per configuration, one column per volume bin: ``mean ± SD (n=...)``."""
    order = list(dict.fromkeys(bins["volume_bin"]))
    rows = []
    for _, group in bins.groupby("config", sort=False):
        row = {k: group[k].iloc[0] for k in columns}
        for b in group.itertuples(index=False):
            cell = markdown.mean_sd(getattr(b, f"{metric}_mean"), getattr(b, f"{metric}_sd"))
            row[b.volume_bin] = f"{cell} (n={b.n_patients})"
        rows.append(row)
    return pd.DataFrame(rows, columns=[*columns, *order])


def _shown_configs(table: pd.DataFrame, columns: list[str], metric: str) -> pd.DataFrame:
    shown = table[columns].copy()
    shown["trainable params"] = [markdown.count(v) for v in table["trainable_params"]]
    shown["runs"] = table["n_runs"]
    shown["folds"] = [
        f"{len(folds.split(','))}/{n}" + (" ⚠" if check else "")
        for folds, n, check in zip(
            table["folds"], table["n_folds_expected"], table["check"], strict=True
        )
    ]
    shown["patients"] = table["n_patients"]
    shown[f"test {metric} (mean ± SD, patients)"] = [
        markdown.mean_sd(m, s)
        for m, s in zip(table[f"{metric}_mean"], table[f"{metric}_sd"], strict=True)
    ]
    shown["SD of fold means"] = table[f"{metric}_fold_sd"]
    shown["check"] = table["check"]
    return shown


def _fold_notes(table: pd.DataFrame) -> list[str]:
    """Lines under the table: rows with missing or duplicated folds, and where the expected
    folds came from."""
    notes = []
    flagged = table[table["check"] != ""]
    if not flagged.empty:
        listed = "; ".join(f"{r.label}: {r.check}" for r in flagged.itertuples(index=False))
        expected = " or ".join(f"{{{f}}}" for f in dict.fromkeys(table["expected_folds"]))
        notes.append(
            f"**⚠ {len(flagged)} of {len(table)} rows lack a fold or ran one twice** (every "
            f"row should have folds {expected} once per seed): {listed}. Their means are over "
            "other patients than the complete rows' (or count a fold twice); run the missing "
            "folds, or delete the duplicate run.\n"
        )
    unlogged = table[~table["n_folds_logged"]]
    if not unlogged.empty:
        notes.append(
            f"{len(unlogged)} rows have runs that do not log `data.n_folds`: they should have "
            f"every fold present in the study ({unlogged['expected_folds'].iloc[0]}).\n"
        )
    untagged = table[table["config_from"] == "params"]
    if not untagged.empty:
        notes.append(
            f"{len(untagged)} rows are runs without a `{CONFIG_TAG}` tag: their configuration "
            "is a digest of their params without fold, seed and path/tracking keys.\n"
        )
    return notes


def _selection_table(selection: Selection) -> pd.DataFrame:
    table = selection.table
    mean = f"mean {selection.metric}"
    return pd.DataFrame(
        {
            selection.by: table[selection.by],
            "picked configuration": table["label"],
            "config": table["config"],
            f"{mean} over its runs": table[mean],
            "runs": table["runs"],
            "candidates": table["candidates"],
            "incomplete (not competing)": table["incomplete (not competing)"],
        }
    )


def _markdown(
    source: Source,
    table: pd.DataFrame,
    configs: Configs,
    bins: pd.DataFrame,
    tests: pd.DataFrame | None,
    selection: Selection | None,
    warnings: list[str],
    metric: str,
    plot_files: list[Path],
) -> str:
    where = (
        f"sweep (parent run {source.parent_run_id})"
        if source.parent_run_id
        else (f"experiment '{source.experiment}'")
    )
    columns = configs.columns
    parts = [
        f"# Study report: {where}\n",
        f"Tracking store: `{source.tracking_uri}`. Built {time.strftime('%Y-%m-%d %H:%M')}.\n",
        f"Every number is on each run's **test** patients (its outer fold: the `set == test` "
        f"rows of `{PER_PATIENT}`, scored once after training); the selection-set rows, which "
        "chose the epoch, are never read. A row is one configuration (every resolved "
        "hyperparameter but fold, seed and paths), pooled over its folds and seeds; the columns "
        "after `rank` are the params that differ between configurations.\n",
    ]
    if selection is not None:
        better = "lower" if selection.mode == "min" else "higher"
        parts += [
            f"## Selected: per {selection.by}, the best mean {selection.metric}\n",
            f"Each {selection.by}'s configuration is the one with the best mean "
            f"{selection.metric} ({better} is better) over its runs, measured on the selection "
            "sets (patients carved out of the training folds): the test patients chose nothing. "
            "Configurations lacking a fold or with a fold run twice compete only when their "
            f"group has no complete one. The tables below report the picked ones.\n\n",
            markdown.table(_selection_table(selection)),
            *(f"- {w}" for w in selection.warnings),
        ]
    parts += [
        f"\n## test {metric} by configuration\n",
        markdown.table(_shown_configs(table, columns, metric)),
        *_fold_notes(table),
        f"\n## test {metric} by true hemorrhage volume\n",
        markdown.table(_wide_bins(bins, columns, metric)),
    ]
    if tests is not None:
        baseline = tests["baseline"].iloc[0] if not tests.empty else "-"
        parts += [
            f"\n## Paired Wilcoxon signed-rank test against {baseline}\n",
            "Two-sided, over test patients scored by both; p_holm adjusts for the comparisons.\n\n",
            markdown.table(tests.drop(columns=["baseline", "label", "config"], errors="ignore")),
        ]
    if warnings:
        parts += ["\n## Runs left out\n", *(f"- {w}" for w in warnings), ""]
    parts.append("\n## Figures\n")
    parts += [f"![{p.stem}]({p.name})\n" for p in plot_files]
    return "\n".join(parts)


def _log(client: MlflowClient, source: Source, files: ReportFiles) -> str:
    """Log the files to the parent run (a sweep report) or to a new report run."""
    if source.parent_run_id:
        run_id = source.parent_run_id
    else:
        experiment = client.get_experiment_by_name(source.experiment or "")
        assert experiment is not None  # study_runs found it
        run = client.create_run(
            experiment.experiment_id,
            run_name=f"report-{time.strftime('%Y%m%d-%H%M%S')}",
            tags={"sah.kind": "report"},
        )
        run_id = run.info.run_id
    for path in files.all():
        client.log_artifact(run_id, str(path), artifact_path=REPORT_DIR)
    if not source.parent_run_id:
        client.set_terminated(run_id)
    return run_id


def build_report(
    source: Source,
    out_dir: Path,
    baseline: str | None = None,
    metric: str = "dice",
    log_to_mlflow: bool = True,
    select_metric: str | None = None,
    select_by: str = "method",
    select_mode: str | None = None,
) -> ReportFiles:
    """The report on the study's test metrics; with ``select_metric`` (a ``val/*`` name), on
    the configuration each ``select_by`` group picks by it."""
    client = MlflowClient(tracking_uri=source.tracking_uri)
    collected = collect(client, study_runs(client, source))
    patients = collected.patients
    check_metric(patients, metric)
    configs = config_frame(collected.runs)
    full = config_table(patients, configs, metric)
    selection = None
    reported = list(full["config"])
    if select_metric:
        selection = select(collected.runs, configs, select_metric, select_by, select_mode)
        order = {config: i for i, config in enumerate(full["config"])}
        selection.table = selection.table.sort_values(
            "config", key=lambda c: c.map(order), ignore_index=True
        )
        reported = selection.configs
    table = full[full["config"].isin(reported)].reset_index(drop=True)
    shown = dataclasses.replace(
        configs, frame=configs.frame[configs.frame["config"].isin(reported)]
    )
    bins = bin_table(patients, shown, metric)
    tests = None
    if baseline:
        base = baseline_config(collected.runs, parse_selector(baseline), reported)
        compared = full[full["config"].isin([*reported, base])]
        tests = wilcoxon_vs_baseline(patients, compared, base, metric)

    out_dir.mkdir(parents=True, exist_ok=True)
    tables = [out_dir / "study_table.csv", out_dir / "volume_bins.csv", out_dir / "per_patient.csv"]
    table.to_csv(tables[0], index=False)
    bins.to_csv(tables[1], index=False)
    patients[patients["config"].isin(reported)].to_csv(tables[2], index=False)
    if selection is not None:
        tables.append(out_dir / "selection.csv")
        selection.table.to_csv(tables[-1], index=False)
    if tests is not None:
        tables.append(out_dir / "wilcoxon.csv")
        tests.to_csv(tables[-1], index=False)
    figures = [
        plots.dice_vs_params(table, out_dir / f"{metric}_vs_trainable_params.png", metric),
        plots.dice_by_volume_bin(bins, out_dir / f"{metric}_by_volume_bin.png", metric),
        plots.volume_agreement(patients, table, out_dir / "volume_pred_vs_true.png"),
    ]
    report = out_dir / "report.md"
    report.write_text(
        _markdown(
            source, table, configs, bins, tests, selection, collected.warnings, metric, figures
        )
    )
    files = ReportFiles(out_dir, report, tables, figures, warnings=list(collected.warnings))
    if selection is not None:
        files.selection = describe(selection)
        files.warnings += selection.warnings
    if log_to_mlflow:
        files.mlflow_run_id = _log(client, source, files)
    return files
