"""The sweeper plugin stands on sah.errors and sah.tracking only (issue 16): nothing in
hydra_plugins imports sah.cli, so the CLI can change without breaking the plugin."""

from __future__ import annotations

import ast
from pathlib import Path

from sweep_helpers import REPO

ALLOWED = ("sah.errors", "sah.tracking")


def sah_imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {name for name in found if name == "sah" or name.startswith("sah.")}


def test_the_plugin_imports_only_sah_errors_and_sah_tracking() -> None:
    files = sorted((REPO / "hydra_plugins").rglob("*.py"))
    assert files
    wrong = {
        str(f.relative_to(REPO)): sorted(m for m in sah_imports(f) if not m.startswith(ALLOWED))
        for f in files
    }
    assert {f: m for f, m in wrong.items() if m} == {}


def test_sah_tracking_imports_no_hydra_and_no_cli() -> None:
    """The parent-run code is shared by the plugin and the CLI's callback; Hydra stays above."""
    for path in sorted((REPO / "sah" / "tracking").glob("*.py")):
        text = path.read_text()
        assert "import hydra" not in text and "from hydra" not in text, path
        assert not [m for m in sah_imports(path) if m.startswith("sah.cli")], path
