"""The study's tables and plots, built from the runs in MLflow (``sah-report``).

``collect`` reads the runs and their per-patient test rows, ``configs`` groups runs into
configurations (every hyperparameter but fold, seed and paths) and checks their folds,
``select`` picks each group's configuration by a selection-set metric, ``tables`` summarises
the test metrics per configuration (overall and per hemorrhage-volume bin), ``stats`` compares
each with a baseline (paired Wilcoxon over test patients), ``plots`` draws the figures and
``build`` writes everything (Markdown, CSV, PNG) and logs it back to MLflow.
"""

from sah.report.build import ReportFiles, build_report

__all__ = ["ReportFiles", "build_report"]
