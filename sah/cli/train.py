"""`sah-train`: the Hydra app. Config objects stop here; below, everything takes plain values."""

from __future__ import annotations

import difflib
import logging
import os
import re
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from sah.cli.quiet import quiet
from sah.cli.resolvers import register_resolvers
from sah.cli.schema import register_schema
from sah.errors import SahError

log = logging.getLogger("sah.train")

CONFIG_DIR = str(Path(__file__).resolve().parents[2] / "conf")
# At import: a SLURM or loky job unpickles the task function (importing this module) and then
# resolves the config it was sent, without going through main().
register_resolvers()


def user_error_types() -> tuple[type[BaseException], ...]:
    """Exceptions that mean 'fix your data or config', printed as one line, not a traceback."""
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    types: list[type[BaseException]] = [SahError, HydraException, OmegaConfBaseException]
    try:
        from sah.adapters import AdapterError

        types.append(AdapterError)
    except ImportError:
        pass
    return tuple(types)


def one_line(err: BaseException) -> str:
    """One line naming the config key (or file) and the problem, whatever layer raised it."""
    from omegaconf.errors import OmegaConfBaseException

    while err.__cause__ is not None and isinstance(err.__cause__, user_error_types()):
        err = err.__cause__
    text = str(err)
    missing = re.search(r"Could not find '([^']+)/([^']+)'", text)
    if missing:
        group, option = missing.groups()
        listed = re.search(r"Available options in '[^']+':\s*(.*?)(?:\n\S|\Z)", text, re.S)
        options = listed.group(1).split() if listed else []
        available = ", ".join(options) if options else "see conf/" + group
        hint = did_you_mean(option, options)
        return f"config group '{group}' has no option '{option}'{hint}; available: {available}"
    not_composed = re.search(r"Could not override '([^']+)'\. No match in the defaults list", text)
    if not_composed:
        return group_not_composed(not_composed.group(1))
    if isinstance(err, OmegaConfBaseException) and getattr(err, "full_key", None):
        unknown = re.search(r"Key '[^']+' (is )?not in", text)
        if unknown and getattr(err, "parent_node", None) is not None:
            return unknown_key(str(err.full_key), [str(k) for k in err.parent_node])
        message = str(getattr(err, "msg", "") or text).splitlines()[0]
        return f"config key '{err.full_key}': {message}"
    text = re.sub(r",? ?set env var HYDRA_FULL_ERROR=1 to see chained exception\.?", "", text)
    return " ".join(line.strip() for line in text.splitlines() if line.strip())


def group_not_composed(group: str) -> str:
    """A group this config does not compose: the tasks whose YAML does (``estimator`` is
    task=outcome's alone), rather than Hydra's hint to force it in with ``+``."""
    tasks = sorted(
        path.stem
        for path in (Path(CONFIG_DIR) / "task").glob("*.yaml")
        if re.search(rf"^\s*-\s*/{re.escape(group)}(@\S+)?\s*:", path.read_text(), re.M)
    )
    if not tasks:
        return f"config group '{group}' is not part of this config; drop {group}=..."
    takers = " or ".join(f"task={t}" for t in tasks)
    return f"config group '{group}' belongs to {takers}: add task={tasks[0]}, or drop {group}=..."


def did_you_mean(typed: str, known: list[str]) -> str:
    """`` (did you mean 'x'?)`` for the known name nearest to what the user typed, else ''."""
    close = difflib.get_close_matches(typed, known, n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def unknown_key(full_key: str, siblings: list[str]) -> str:
    """A key the config does not have, with the nearest existing key and the others."""
    parent, _, typed = full_key.rpartition(".")
    prefix = f"{parent}." if parent else ""
    close = difflib.get_close_matches(typed, siblings, n=1, cutoff=0.6)
    hint = f"; did you mean '{prefix}{close[0]}'?" if close else ""
    where = f"keys of {parent}" if parent else "top-level keys"
    return f"config key '{full_key}' does not exist{hint} ({where}: {', '.join(siblings)})"


def choices() -> dict[str, str]:
    """Which option of each config group this run uses (model, adapter, data, ...)."""
    try:
        return {k: str(v) for k, v in HydraConfig.get().runtime.choices.items()}
    except ValueError:
        return {}


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="train")
def train(cfg: DictConfig) -> float | list[float] | None:
    """Compose, run the task, return ``optimized_metric`` (or ``optimized_metrics``) for a
    sweeper."""
    multirun = HydraConfig.get().mode == RunMode.MULTIRUN
    try:
        from sah.tasks.driver import run

        # Also here, not only in main(): launchers that start jobs in fresh processes (loky,
        # submitit) call this function directly.
        with quiet():
            return run(cfg, choices())
    except user_error_types() as err:
        message = f"sah-train: {one_line(err)}"
        if multirun:
            # In a sweep the sweeper records this trial as failed and goes on with the others.
            log.error(message)
            raise
        print(message, file=sys.stderr)
        sys.exit(2)


def main() -> None:
    # Let Hydra raise instead of printing its multi-line report, so user errors become one line.
    os.environ.setdefault("HYDRA_FULL_ERROR", "1")
    register_schema()
    with quiet():
        try:
            train()
        except user_error_types() as err:
            print(f"sah-train: {one_line(err)}", file=sys.stderr)
            sys.exit(2)
        except KeyboardInterrupt:  # Ctrl-C, or SIGTERM a sweeper, launcher or run turned into one
            print("sah-train: interrupted", file=sys.stderr)
            sys.exit(130)


if __name__ == "__main__":
    main()
