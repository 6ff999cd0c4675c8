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


def gradient_heatmap_figure(
    record, statistic: str = "frac_above", threshold: float | None = 5e-10, title: str | None = None
) -> Figure:
    """The figure of :func:`plot_gradient_heatmap` (not saved)."""
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
    bar = fig.colorbar(image, ax=ax, label=label)
    _readable_ticks(bar, shown, percent=statistic == "frac_above")
    return fig


def _readable_ticks(bar, values: np.ma.MaskedArray, percent: bool) -> None:
    """Tick labels a person can read: no offset ("1e-6+9.9999e-1"), with as many digits as the
    spread of the values needs (fractions as percentages, e.g. 99.9991%)."""
    from matplotlib.ticker import FuncFormatter, MaxNLocator

    finite = values.compressed()
    span = float(finite.max() - finite.min()) if finite.size else 0.0
    scale = 100.0 if percent else 1.0
    magnitude = float(np.abs(finite).max()) * scale if finite.size else 1.0
    if span > 0:
        decimals = max(0, int(np.ceil(-np.log10(span * scale / 4))) + 1)
    else:
        decimals = 2
    bar.locator = MaxNLocator(nbins=5)
    if not percent and (magnitude >= 1e4 or (0 < magnitude < 1e-3)):
        bar.formatter = FuncFormatter(lambda v, _: f"{v:.3g}")  # scientific values keep their own digits
    elif percent:
        bar.formatter = FuncFormatter(lambda v, _: f"{100 * v:.{min(decimals, 10)}f}%")
    else:
        bar.formatter = FuncFormatter(lambda v, _: f"{v:.{min(decimals, 10)}f}")
    bar.update_ticks()


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
    ``frac_above``; fractions are labelled as percentages with the digits their spread needs.
    Returns the path written (atomically).
    """
    return save_figure(gradient_heatmap_figure(record, statistic, threshold, title), path)
