"""sah.metrics must stay numpy/scipy only so users can take it into other projects."""

from __future__ import annotations

import subprocess
import sys


def test_importing_sah_metrics_pulls_in_no_framework() -> None:
    forbidden = ("torch", "lightning", "hydra", "mlflow", "monai", "sklearn", "pandas")
    code = (
        "import sys, sah.metrics\n"
        f"loaded = [name for name in {forbidden!r} if name in sys.modules]\n"
        "print(','.join(loaded))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == ""
