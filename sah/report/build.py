"""Build the study report: read the runs, write tables (Markdown + CSV) and plots, log them
back to MLflow (to the sweep's parent run, or to a new ``report`` run in the experiment)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from mlflow.tracking import MlflowClient

from sah.report import markdown, plots
from sah.report.collect import Source, group_key, per_patient_table, study_runs
from sah.report.stats import baseline_config, parse_selector, wilcoxon_vs_baseline
from sah.report.tables import bin_table, config_table

REPORT_DIR = "report"


@dataclass
class ReportFiles:
    out_dir: Path
    markdown: Path
    tables: list[Path] = field(default_factory=list)
    plots: list[Path] = field(default_factory=list)
    mlflow_run_id: str | None = None

    def all(self) -> list[Path]:
        return [self.markdown, *self.tables, *self.plots]


def _wide_bins(bins: pd.DataFrame, key: list[str], metric: str) -> pd.DataFrame:
    bins = bins.assign(
        cell=[
            f"{markdown.mean_sd(m, s)} (n={n})"
            for m, s, n in zip(
                bins[f"{metric}_mean"], bins[f"{metric}_sd"], bins["n_patients"], strict=True
            )
        ]
    )
    wide = bins.pivot_table(
        index=key, columns="volume_bin", values="cell", aggfunc="first", sort=False
    )
    order = list(dict.fromkeys(bins["volume_bin"]))
    return wide[order].reset_index()


def _markdown(
    source: Source,
    configs: pd.DataFrame,
    bins: pd.DataFrame,
    tests: pd.DataFrame | None,
    key: list[str],
    metric: str,
    plot_files: list[Path],
) -> str:
    where = (
        f"sweep (parent run {source.parent_run_id})"
        if source.parent_run_id
        else (f"experiment '{source.experiment}'")
    )
    shown = configs[key].copy()
    shown["trainable params"] = [markdown.count(v) for v in configs["trainable_params"]]
    shown["folds"] = configs["n_folds"]
    shown["patients"] = configs["n_patients"]
    shown[f"{metric} (mean ± SD, patients)"] = [
        markdown.mean_sd(m, s)
        for m, s in zip(configs[f"{metric}_mean"], configs[f"{metric}_sd"], strict=True)
    ]
    shown["SD of fold means"] = configs[f"{metric}_fold_sd"]
    parts = [
        f"# Study report: {where}\n",
        f"Tracking store: `{source.tracking_uri}`. Built {time.strftime('%Y-%m-%d %H:%M')}.\n",
        f"## {metric} by configuration\n",
        markdown.table(shown),
        f"\n## {metric} by true hemorrhage volume\n",
        markdown.table(_wide_bins(bins, key, metric)),
    ]
    if tests is not None:
        baseline = tests["baseline"].iloc[0] if not tests.empty else "-"
        parts += [
            f"\n## Paired Wilcoxon signed-rank test against {baseline}\n",
            "Two-sided, over patients scored by both; p_holm adjusts for the comparisons.\n\n",
            markdown.table(tests.drop(columns="baseline")),
        ]
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
) -> ReportFiles:
    client = MlflowClient(tracking_uri=source.tracking_uri)
    runs = study_runs(client, source)
    table = per_patient_table(client, runs)
    key = group_key(table)
    configs = config_table(table, metric)
    bins = bin_table(table, metric)
    tests = None
    if baseline:
        tests = wilcoxon_vs_baseline(
            table, baseline_config(table, parse_selector(baseline)), metric
        )

    out_dir.mkdir(parents=True, exist_ok=True)
    tables = [out_dir / "study_table.csv", out_dir / "volume_bins.csv", out_dir / "per_patient.csv"]
    configs.to_csv(tables[0], index=False)
    bins.to_csv(tables[1], index=False)
    table.to_csv(tables[2], index=False)
    if tests is not None:
        tables.append(out_dir / "wilcoxon.csv")
        tests.to_csv(tables[-1], index=False)
    figures = [
        plots.dice_vs_params(configs, out_dir / f"{metric}_vs_trainable_params.png", metric),
        plots.dice_by_volume_bin(bins, out_dir / f"{metric}_by_volume_bin.png", metric),
        plots.volume_agreement(table, configs, out_dir / "volume_pred_vs_true.png", metric),
    ]
    report = out_dir / "report.md"
    report.write_text(_markdown(source, configs, bins, tests, key, metric, figures))
    files = ReportFiles(out_dir, report, tables, figures)
    if log_to_mlflow:
        files.mlflow_run_id = _log(client, source, files)
    return files
