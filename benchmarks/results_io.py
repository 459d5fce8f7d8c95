"""Where every benchmark puts its results: a JSON file and the same table as Markdown."""

from __future__ import annotations

import json
from pathlib import Path


def write_results(out: Path, result: dict, table: str) -> None:
    """Write ``out`` (JSON) and ``table`` next to it (same name, ``.md``); print the table."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    out.with_suffix(".md").write_text(table)
    print(table)
