"""Progress of a long loop (cohort generation, preprocessing): a rich bar in a terminal, plain
timestamped lines when output goes to a file (nohup, SLURM), where a redrawn bar would print once
at the end or fill the log with carriage returns.

    with Progress("synthetic cohort sah n=30", total=30, unit="patient") as progress:
        for ...:
            progress.advance()

prints ``[12:00:01] synthetic cohort sah n=30: patient 7/30 (14 s)`` at most every
``every_s`` seconds, plus the first and the last item, so a log shows the loop started, moves and
ended without one line per item.
"""

from __future__ import annotations

import sys
import time
from types import TracebackType
from typing import Any, TextIO

PLAIN_EVERY_S = 10.0


def is_terminal(stream: TextIO) -> bool:
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty and isatty())
    except ValueError:  # a closed stream
        return False


def stamp() -> str:
    return time.strftime("[%H:%M:%S]")


class Progress:
    """Count items of a loop of ``total`` items (``None``: unknown) and show it on ``stream``
    (default stderr)."""

    def __init__(
        self,
        label: str,
        total: int | None,
        unit: str = "item",
        *,
        stream: TextIO | None = None,
        every_s: float = PLAIN_EVERY_S,
    ) -> None:
        self.label, self.total, self.unit = label, total, unit
        self.stream = stream if stream is not None else sys.stderr
        self.every_s = every_s
        self.done = 0
        self.started = time.perf_counter()
        self._last_line = -float("inf")
        self._rich: Any = None
        self._task: Any = None
        if is_terminal(self.stream):
            from rich.console import Console
            from rich.progress import Progress as RichProgress

            self._rich = RichProgress(console=Console(file=self.stream), transient=False)
            self._task = self._rich.add_task(label, total=total)
            self._rich.start()

    def advance(self, n: int = 1, note: str = "") -> None:
        self.done += n
        if self._rich is not None:
            self._rich.update(self._task, advance=n)
            return
        now = time.perf_counter()
        last = self.total is not None and self.done >= self.total
        if last or now - self._last_line >= self.every_s:  # the first item too
            self._last_line = now
            self._print(note)

    def _print(self, note: str) -> None:
        count = f"{self.done}/{self.total}" if self.total is not None else str(self.done)
        extra = f", {note}" if note else ""
        seconds = time.perf_counter() - self.started
        line = f"{stamp()} {self.label}: {self.unit} {count} ({seconds:.0f} s{extra})"
        print(line, file=self.stream, flush=True)

    def close(self) -> None:
        if self._rich is not None:
            self._rich.stop()
            self._rich = None

    def __enter__(self) -> Progress:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()
