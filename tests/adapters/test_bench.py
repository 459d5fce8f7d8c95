"""The benchmark script runs and writes its JSON and Markdown results (no timing checks)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_adapters.py"


def test_quick_run_writes_results(tmp_path):
    out = tmp_path / "adapters.json"
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    payload = json.loads(out.read_text())
    keys = {row["key"] for row in payload["summary"]["rows"]}
    assert "full" in keys
    assert {
        f"{m}:r2" for m in ("lora_c", "conv_lora", "cp_lora", "dora_c", "conv_dora", "cp_dora")
    } <= keys
    assert payload["summary"]["targets"]
    assert out.with_suffix(".md").read_text().startswith("# Adapter training-step benchmark")
