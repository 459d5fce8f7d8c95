"""The benchmark script runs and writes its JSON and Markdown results (no timing checks)."""

from __future__ import annotations

import json


def test_quick_run_writes_results(quick_benchmark):
    out = quick_benchmark("bench_adapters")
    payload = json.loads(out.read_text())
    keys = {row["key"] for row in payload["summary"]["rows"]}
    assert "full" in keys
    assert {
        f"{m}:r2" for m in ("lora_c", "conv_lora", "cp_lora", "dora_c", "conv_dora", "cp_dora")
    } <= keys
    assert payload["summary"]["targets"]
    assert out.with_suffix(".md").read_text().startswith("# Adapter training-step benchmark")
