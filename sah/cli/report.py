"""`sah-report`: the study's tables and plots on test patients, from an MLflow experiment or one
sweep.

    sah-report --experiment sah-segmentation --baseline method=none
    sah-report --experiment sah-lora-transfer --select val/dice --baseline method=none
    sah-report --parent-run <sweep's parent run id> --baseline method=full,target=all
    sah-report --tracking-uri sqlite:///path/mlflow.db --experiment lora-transfer --out reports/

Only each run's test patients (the `set == test` rows of per_patient_metrics.csv) are read; a
row is one configuration (tag sah.config_id), pooled over folds and seeds, and a row missing a
fold or with a fold run twice is flagged. With --select val/<metric>, each method's (or
--select-by tag's) configuration is picked by its mean selection-set metric over its runs, and
only the picked ones are reported.

Writes report.md, study_table.csv, volume_bins.csv, per_patient.csv, selection.csv (with
--select), wilcoxon.csv (with --baseline) and three PNG figures to --out, and logs them under
`report/` to the sweep's parent run, or to a new run tagged sah.kind=report in the experiment
(--no-log to skip).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from sah.cli.quiet import quiet
from sah.errors import SahError


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="sah-report", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--tracking-uri",
        default=os.environ.get("MLFLOW_TRACKING_URI", "sqlite:///mlflow.db"),
        help="MLflow store (default: $MLFLOW_TRACKING_URI or sqlite:///mlflow.db, as sah-train)",
    )
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--experiment", help="experiment name (default: sah-segmentation)")
    which.add_argument("--parent-run", help="a sweep's parent run id: report on its jobs only")
    parser.add_argument(
        "--baseline",
        help="configuration to test against, e.g. method=none, method=full,target=all or "
        "method=cp_lora,lr=0.001 (any tag column or logged param; config=<id>)",
    )
    parser.add_argument(
        "--select",
        metavar="VAL_METRIC",
        help="pick each group's configuration by its mean selection-set metric over its runs, "
        "e.g. val/dice, and report only the picked ones",
    )
    parser.add_argument(
        "--select-by",
        default="method",
        metavar="TAG",
        help="the groups --select picks within (default: method; any tag, e.g. model, target)",
    )
    parser.add_argument(
        "--select-mode",
        choices=("min", "max"),
        help="min or max the --select metric (default: min for loss/error/distance names, "
        "max otherwise)",
    )
    parser.add_argument("--metric", default="dice", help="per-patient metric (default: dice)")
    parser.add_argument("--out", type=Path, default=Path("reports"), help="output folder")
    parser.add_argument("--no-log", action="store_true", help="do not log the report to MLflow")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    with quiet():
        report(argv)


def report(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    from sah.report import build_report
    from sah.report.collect import Source

    source = Source(
        tracking_uri=args.tracking_uri,
        experiment=None if args.parent_run else (args.experiment or "sah-segmentation"),
        parent_run_id=args.parent_run,
    )
    try:
        files = build_report(
            source,
            args.out,
            args.baseline,
            args.metric,
            not args.no_log,
            select_metric=args.select,
            select_by=args.select_by,
            select_mode=args.select_mode,
        )
    except SahError as err:
        print(f"sah-report: {err}", file=sys.stderr)
        sys.exit(2)
    for warning in files.warnings:
        print(f"sah-report: warning: {warning}", file=sys.stderr)
    for line in files.selection:
        print(f"selected {line}")
    print(f"report: {files.markdown}")
    for path in [*files.tables, *files.plots]:
        print(f"        {path}")
    if files.mlflow_run_id:
        print(f"logged to MLflow run {files.mlflow_run_id} (artifacts under report/)")


if __name__ == "__main__":
    main()
