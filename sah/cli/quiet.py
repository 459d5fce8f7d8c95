"""What the entry points (sah-train, sah-predict, sah-synth, sah-report) keep out of a user's
terminal and log: third-party warnings and info lines a sah user cannot act on.

Each ``main()`` runs inside ``with quiet():``, never on import, so tests and library users see
every warning. Kept out, and why:

- Python warnings raised inside lightning, torch, mlflow, monai and their helpers: deprecations
  between those libraries, and Lightning's hints about its own settings (``log_every_n_steps``
  larger than a tiny epoch: sah logs its training metrics per epoch anyway).
- Lightning's info lines: "GPU available: False", TPU/HPU lines, the litlogger tip, "Seed set
  to 0", "`Trainer.fit` stopped: `max_epochs` reached" (the trainer config says all of these).
- MLflow's "Creating initial MLflow database tables" / alembic migration lines, and its
  "Downloading artifacts" bar.

Warnings that remain are printed on one line each; sah's own say ``warning: <message>``.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

THIRD_PARTY = (
    "lightning",
    "lightning_fabric",
    "lightning_utilities",
    "pytorch_lightning",
    "torch",
    "torchvision",
    "mlflow",
    "monai",
    "alembic",
    "sqlalchemy",
    "pydantic",
    "google",
    "pkg_resources",
    "setuptools",
)

# Loggers whose INFO lines say nothing a sah user can act on. Lightning sets the level of
# "lightning.pytorch" when it is imported; these children keep theirs.
INFO_LOGGERS = (
    "lightning.pytorch.utilities.rank_zero",
    "lightning.fabric.utilities.rank_zero",
    "lightning.fabric.utilities.seed",
    "lightning_utilities.core.rank_zero",
    "pytorch_lightning.utilities.rank_zero",
    "mlflow.store.db.utils",  # mlflow sets the level of "mlflow" itself when imported
    "alembic",
)

# MLflow's tqdm bar while it downloads a checkpoint (sah-predict --model mlflow:..., init_from).
MLFLOW_BAR = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"

SAH_ROOT = str(Path(__file__).resolve().parents[1])


def one_line_warning(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    line: str | None = None,
) -> str:
    """A warning on one line: sah's own as ``warning: ...``, others with where they come from."""
    text = " ".join(str(message).split())
    if filename.startswith(SAH_ROOT):
        return f"warning: {text}\n"
    return f"{category.__name__}: {text} ({filename}:{lineno})\n"


@contextmanager
def quiet() -> Iterator[None]:
    """Keep third-party noise out while the command runs; everything is restored on exit, so a
    test calling a ``main()`` in-process leaves the warning filters as it found them."""
    pattern = r"(" + "|".join(THIRD_PARTY) + r")(\.|$)"
    loggers = [logging.getLogger(name) for name in INFO_LOGGERS]
    levels = [logger.level for logger in loggers]
    bar = os.environ.get(MLFLOW_BAR)
    os.environ.setdefault(MLFLOW_BAR, "false")
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", module=pattern)
        formatwarning = warnings.formatwarning
        warnings.formatwarning = one_line_warning
        for logger in loggers:
            logger.setLevel(logging.WARNING)
        try:
            yield
        finally:
            warnings.formatwarning = formatwarning
            for logger, level in zip(loggers, levels, strict=True):
                logger.setLevel(level)
            if bar is None:
                os.environ.pop(MLFLOW_BAR, None)
