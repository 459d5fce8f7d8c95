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


def unit_square(ax: Any, xlabel: str, ylabel: str, title: str, legend: str | None) -> None:
    """Finish an ROC or calibration panel: the grey diagonal (chance, or perfect calibration),
    labels, both axes over [0, 1] with a small margin, the legend at ``legend`` if given."""
    ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls=":")
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title, xlim=(-0.02, 1.02), ylim=(-0.02, 1.02))
    if legend is not None:
        ax.legend(loc=legend, fontsize=8)
