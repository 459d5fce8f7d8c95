"""`sah-report`: the study's tables and plots from an MLflow experiment or one sweep.

    sah-report --experiment sah-segmentation --baseline method=none
    sah-report --parent-run <sweep's parent run id> --baseline method=full,target=all
    sah-report --tracking-uri sqlite:///path/mlflow.db --experiment lora-transfer --out reports/

Writes report.md, study_table.csv, volume_bins.csv, per_patient.csv, wilcoxon.csv (with
--baseline) and three PNG figures to --out, and logs them under `report/` to the sweep's parent
run, or to a new run tagged sah.kind=report in the experiment (--no-log to skip).
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
        help="configuration to test against, e.g. method=none or method=full,target=all",
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
        files = build_report(source, args.out, args.baseline, args.metric, not args.no_log)
    except SahError as err:
        print(f"sah-report: {err}", file=sys.stderr)
        sys.exit(2)
    print(f"report: {files.markdown}")
    for path in [*files.tables, *files.plots]:
        print(f"        {path}")
    if files.mlflow_run_id:
        print(f"logged to MLflow run {files.mlflow_run_id} (artifacts under report/)")


if __name__ == "__main__":
    main()
