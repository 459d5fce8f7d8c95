"""CI must run exactly the README's test command line, nothing weaker."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def quick_start_lines() -> list[str]:
    text = (ROOT / "README.md").read_text()
    block = text.split("## Quick start", 1)[1].split("```bash", 1)[1].split("```", 1)[0]
    return [line.strip() for line in block.strip().splitlines() if line.strip()]


def test_quick_start_has_exactly_two_lines() -> None:
    lines = quick_start_lines()
    assert len(lines) == 2, lines
    assert "demo" in lines[0]
    assert "tests" in lines[1]


def test_ci_runs_the_readme_test_line_verbatim() -> None:
    ci = [
        line.strip()
        for line in (ROOT / ".ci" / "run").read_text().splitlines()
        if line.strip() and not line.startswith(("#", "set ", "cd "))
    ]
    assert ci == [quick_start_lines()[1]]
