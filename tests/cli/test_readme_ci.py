"""CI must run exactly the README's command lines (the tests, then the scale-out check),
nothing weaker."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def quick_start_lines() -> list[str]:
    text = (ROOT / "README.md").read_text()
    block = text.split("## Quick start", 1)[1].split("```bash", 1)[1].split("```", 1)[0]
    return [line.strip() for line in block.strip().splitlines() if line.strip()]


def readme_block_lines() -> set[str]:
    """Every line of every fenced block of the README."""
    blocks = re.findall(r"```[a-z]*\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    return {line.strip() for block in blocks for line in block.splitlines() if line.strip()}


def ci_lines() -> list[str]:
    return [
        line.strip()
        for line in (ROOT / ".ci" / "run").read_text().splitlines()
        if line.strip() and not line.startswith(("#", "set ", "cd "))
    ]


def test_quick_start_has_exactly_two_lines() -> None:
    lines = quick_start_lines()
    assert len(lines) == 2, lines
    assert "demo" in lines[0]
    assert "tests" in lines[1]


def test_ci_runs_the_readme_lines_verbatim() -> None:
    ci = ci_lines()
    assert ci[0] == quick_start_lines()[1]  # the tests first
    assert ci[1:] == ["pip install nox && nox -s scaleout"]
    missing = [line for line in ci if line not in readme_block_lines()]
    assert not missing, f".ci/run lines not shown in a README code block: {missing}"
