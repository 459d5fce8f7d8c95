"""Errors a user can cause and fix. Each message names the file or config key and what to do."""

from __future__ import annotations

from pathlib import Path


class SahError(Exception):
    """Base class for problems in the user's data or config; the CLI prints them as one line."""


class ConfigError(SahError):
    """A config key has a value the framework cannot use."""

    def __init__(self, key: str, problem: str, fix: str = "") -> None:
        self.key = key
        super().__init__(f"config key '{key}': {problem}" + (f" — {fix}" if fix else ""))


class DataError(SahError):
    """An input file or folder cannot be used as it is."""

    def __init__(self, path: str | Path, problem: str, fix: str = "") -> None:
        self.path = Path(path)
        super().__init__(f"{path}: {problem}" + (f" — {fix}" if fix else ""))
