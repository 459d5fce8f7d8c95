"""sah.models stays below the training stack: no Lightning, Hydra or MLflow imports."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import sah.models

FORBIDDEN = {"lightning", "pytorch_lightning", "hydra", "omegaconf", "mlflow"}


def test_no_module_of_the_package_imports_the_training_stack():
    for source in Path(sah.models.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(source.read_text())):
            if isinstance(node, ast.Import):
                roots = {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom):
                roots = {(node.module or "").split(".")[0]}
            else:
                continue
            assert not roots & FORBIDDEN, f"{source.name}: {roots & FORBIDDEN}"


def test_light_entry_points_do_not_load_monai():
    """MVUnet and the weight loader must not pay for `import monai` (which loads MLflow)."""
    code = (
        "import sys; from sah.models import MVUnet, load_weights, group_parameter_names; "
        "print(sorted({m.split('.')[0] for m in sys.modules} & "
        f"{FORBIDDEN | {'monai'}!r}))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"
