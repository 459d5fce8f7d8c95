"""The training progress callback: Lightning's rich bar in a terminal, epoch lines otherwise."""

from __future__ import annotations

import io
import sys

import pytest
from lightning.pytorch.callbacks import RichProgressBar

from sah.data.progress import Progress
from sah.tasks.training.progress import EpochLines, progress_bar


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_terminal_gets_the_rich_bar_and_a_file_gets_epoch_lines(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(sys, "stdout", Terminal())
    assert isinstance(progress_bar(), RichProgressBar)
    monkeypatch.setattr(sys, "stdout", io.StringIO())
    assert isinstance(progress_bar(), EpochLines)


def test_loop_progress_in_a_terminal_is_a_bar_not_lines() -> None:
    terminal = Terminal()
    with Progress("synthetic cohort sah n=3", total=3, unit="patient", stream=terminal) as bar:
        for _ in range(3):
            bar.advance()
    text = terminal.getvalue()
    assert "synthetic cohort sah n=3" in text
    assert "patient 1/3" not in text  # rich draws a bar, not the plain lines
