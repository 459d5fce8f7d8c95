"""Print the study-4 table (ML models against the standard model) from an MLflow store.

    python experiments/dci/make_table.py --tracking-uri sqlite:///mlflow.db

Takes the latest finished run of each (model, target) in the experiment (default sah-outcome).
"""

from __future__ import annotations

import argparse

from mlflow.tracking import MlflowClient

TARGETS = ("dci", "mrs_3m", "mortality_3m")


def latest_runs(client: MlflowClient, experiment: str) -> dict[tuple[str, str], object]:
    found = client.get_experiment_by_name(experiment)
    if found is None:
        raise SystemExit(f"no experiment {experiment!r} in this tracking store")
    runs = client.search_runs(
        [found.experiment_id],
        "attributes.status = 'FINISHED' and tags.task = 'outcome'",
        order_by=["attributes.start_time DESC"],
        max_results=5000,
    )
    latest: dict[tuple[str, str], object] = {}
    for run in runs:
        key = (run.data.tags.get("target", "?"), run.data.tags.get("model", "?"))
        latest.setdefault(key, run)
    return latest


def table(latest: dict[tuple[str, str], object]) -> str:
    lines = [
        "| target | model | AUC (mean ± SD over folds) | standard model AUC | "
        "difference (95% CI) | p |",
        "|---|---|---|---|---|---|",
    ]
    order = {t: i for i, t in enumerate(TARGETS)}
    for (target, model), run in sorted(
        latest.items(), key=lambda k: (order.get(k[0][0], 9), k[0][1])
    ):
        m = run.data.metrics
        p = m.get("test/auc_diff_p")
        lines.append(
            f"| {target} | {model} | {m['test/auc']:.3f} ± {m['test/auc_sd']:.3f} | "
            f"{m['test/standard_auc']:.3f} ± {m['test/standard_auc_sd']:.3f} | "
            f"{m['test/auc_diff']:+.3f} ({m['test/auc_diff_ci_low']:+.3f} to "
            f"{m['test/auc_diff_ci_high']:+.3f}) | {'' if p is None else f'{p:.2g}'} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tracking-uri", default="sqlite:///mlflow.db")
    parser.add_argument("--experiment", default="sah-outcome")
    args = parser.parse_args()
    print(table(latest_runs(MlflowClient(args.tracking_uri), args.experiment)))


if __name__ == "__main__":
    main()
