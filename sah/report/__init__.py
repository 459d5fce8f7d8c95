"""The study's tables and plots, built from the runs in MLflow (``sah-report``).

``collect`` reads the runs and their per-patient metrics, ``tables`` summarises them per
method x target x rank (overall and per hemorrhage-volume bin), ``stats`` compares each
configuration with a baseline (paired Wilcoxon over patients), ``plots`` draws the figures and
``build`` writes everything (Markdown, CSV, PNG) and logs it back to MLflow.
"""

from sah.report.build import ReportFiles, build_report

__all__ = ["ReportFiles", "build_report"]
