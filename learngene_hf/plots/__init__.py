"""Figures for reports: gradient heat maps, layer rankings, few-shot accuracies.

All figures are drawn with matplotlib's non-interactive Agg backend and written atomically.
"""

from __future__ import annotations

import os

import matplotlib

matplotlib.use("Agg")

from matplotlib.figure import Figure  # noqa: E402

from ..io import atomic_path  # noqa: E402


def save_figure(fig: Figure, path: str | os.PathLike, dpi: int = 150) -> str:
    """Save ``fig`` as PNG to ``path`` (temp file + rename) and close it; returns the path."""
    import matplotlib.pyplot as plt

    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return str(path)
