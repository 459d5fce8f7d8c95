"""The benchmark script runs and writes its JSON and Markdown results (no timing checks)."""

from __future__ import annotations

import json

import pytest


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


def test_conv_cost_benchmark_writes_results(quick_benchmark):
    out = quick_benchmark("bench_conv_costs")
    rows = json.loads(out.read_text())["rows"]
    assert [r["rank"] for r in rows] == [1, 4, 8]
    for row in rows:
        ms = row["ms"]
        extra = ms["thin_forward"] + ms["thin_weight_grad"] + ms["mixes"]
        assert row["lowrank_extra_ms"] == pytest.approx(extra)
        if row["weight_grad_extra_ms"] > 0:  # tiny smoke layers: may drown in timer noise
            assert row["lowrank_vs_weight"] == pytest.approx(extra / row["weight_grad_extra_ms"])
    assert out.with_suffix(".md").read_text().startswith("# Conv LoRA factor gradients")
