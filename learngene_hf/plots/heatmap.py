"""Heat map of a gradient record: conv layers (rows, input at the top) x tasks (columns)."""

from __future__ import annotations

import os

import numpy as np
from matplotlib.figure import Figure

from . import save_figure

_LABELS = {
    "frac_above": "fraction of |grad| > {threshold:g}",
    "mean_abs": "mean |grad|",
    "rms": "gradient RMS",
    "rel_weight_change": "relative weight change per task",
}


def plot_gradient_heatmap(
    record,
    path: str | os.PathLike,
    statistic: str = "frac_above",
    threshold: float | None = 5e-10,
    title: str | None = None,
) -> str:
    """Draw ``record.matrix(statistic, threshold)`` as a layers x tasks heat map PNG at ``path``.

    Like the paper's figure: one row per conv layer (stable names, input at the top), one column
    per task. Cells where a layer did not exist yet are left blank. ``threshold`` is used only by
    ``frac_above``. Returns the path written (atomically).
    """
    names, tasks, array = record.matrix(statistic, threshold if statistic == "frac_above" else None)
    fig = Figure(figsize=(max(4.0, 0.35 * len(tasks) + 2.5), max(2.5, 0.35 * len(names) + 1.5)))
    ax = fig.add_subplot(1, 1, 1)
    shown = np.ma.masked_invalid(array) if array.size else np.ma.masked_invalid(np.full((1, 1), np.nan))
    image = ax.imshow(shown, aspect="auto", cmap="viridis", interpolation="nearest")
    ax.set_yticks(range(len(names)), labels=names)
    step = max(1, len(tasks) // 20)
    ax.set_xticks(range(0, len(tasks), step), labels=[str(t) for t in tasks[::step]])
    ax.set_xlabel("task")
    ax.set_ylabel("conv layer")
    label = _LABELS.get(statistic, statistic).format(threshold=threshold if threshold is not None else 0)
    ax.set_title(title or label)
    fig.colorbar(image, ax=ax, label=label)
    return save_figure(fig, path)
