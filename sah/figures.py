"""Figures written to files: matplotlib without a display, and one way to save a figure.

Plots are made on machines with no screen (CI, SLURM nodes), so every figure uses the Agg
backend; matplotlib is imported on first use so that commands that draw nothing never load it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def pyplot() -> Any:
    """``matplotlib.pyplot`` on the Agg backend (files only, no window)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig: Any, path: str | Path, dpi: int = 110, tight: bool = True) -> Path:
    """Lay out ``fig`` (``tight``), write it to ``path`` (its folder created) and close it, so
    a long run drawing a figure per epoch does not keep them all in memory."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    if tight:
        fig.tight_layout()
    fig.savefig(out, dpi=dpi)
    pyplot().close(fig)
    return out
