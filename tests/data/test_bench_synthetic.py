"""The synthetic-cohort benchmark runs and writes its JSON and Markdown results (no timing
checks: the numbers are measured, not asserted)."""

from __future__ import annotations

import json


def test_quick_run_writes_results(quick_benchmark) -> None:
    out = quick_benchmark("bench_synthetic")
    result = json.loads(out.read_text())
    assert set(result["seconds"]) == {"anatomy", "workers_1", "workers_2", "reuse"}
    assert result["config"]["n_patients"] == 3
    seconds = result["seconds"]
    # First use is what a new user waits for: the anatomy, then the 2-process render.
    assert abs(result["first_use_s"] - seconds["anatomy"] - seconds["workers_2"]) < 1e-5
    assert out.with_suffix(".md").read_text().startswith("# Synthetic cohort benchmark")
