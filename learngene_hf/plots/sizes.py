"""Descendant-size figure: accuracy against parameters at inference and against inherited bytes."""

from __future__ import annotations

import math
import os
from typing import Any, Sequence

from . import save_figure

_STYLE = {
    "learngene": ("tab:blue", "o"),
    "scratch": ("tab:gray", "s"),
    "weight_selection": ("tab:orange", "^"),
    "logreg_random": ("tab:cyan", "v"),
    "centroid_random": ("tab:olive", "<"),
    "logreg_learngene": ("tab:green", "D"),
    "logreg_collective": ("tab:red", "P"),
    "whole": ("tab:purple", "X"),
}


def _human(n: float) -> str:
    """``0``, ``1 KB``, ``10 KB``, ``1 MB``... (powers of ten: the axis ticks)."""
    if n <= 0:
        return "0"
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if n >= size:
            return f"{n / size:g} {unit}"
    return f"{n:g} B"


def _count(n: float) -> str:
    return f"{n / 1e6:.2g}M" if n >= 1e6 else f"{n / 1e3:.3g}k" if n >= 1e3 else f"{n:g}"


def plot_descendant_sizes(
    rows: Sequence[dict[str, Any]], path: str | os.PathLike, title: str = "", ways: int | None = None
) -> str:
    """:func:`descendant_sizes_figure` written to ``path`` (PNG); returns the path."""
    return save_figure(descendant_sizes_figure(rows, title, ways), path)


def descendant_sizes_figure(rows: Sequence[dict[str, Any]], title: str = "", ways: int | None = None) -> Any:
    """Two panels (a matplotlib ``Figure``) from plain rows (``method``, ``size``, ``parameters``,
    ``inherited_bytes``, ``mean``, ``ci95``; accuracies 0..1).

    Left: query accuracy (%) against the descendant's parameters (log axis), one line per method,
    the sizes named under the axis (methods of one size are drawn side by side). Right: the same
    accuracies against the bytes the descendant inherited (symmetric log axis, so scratch sits at
    0). Error bars are 95% CIs; both axes run from 0 to 100%, with the chance level (100 / ways)
    when ``ways`` is given.
    """
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 4.5))
    ax_params, ax_bytes = fig.subplots(1, 2)
    methods = list(dict.fromkeys(r["method"] for r in rows))
    for k, method in enumerate(methods):
        mine = sorted((r for r in rows if r["method"] == method), key=lambda r: r["parameters"])
        colour, marker = _STYLE.get(method, (None, "D"))
        accuracy = [100 * r["mean"] for r in mine]
        errors = [100 * (r["ci95"] or 0.0) for r in mine]
        dodge = 1.06 ** (k - (len(methods) - 1) / 2)  # side by side on the log axis
        ax_params.errorbar(
            [r["parameters"] * dodge for r in mine],
            accuracy,
            yerr=errors,
            marker=marker,
            color=colour,
            capsize=3,
            label=method,
        )
        ax_bytes.errorbar(
            [r["inherited_bytes"] for r in mine],
            accuracy,
            yerr=errors,
            marker=marker,
            color=colour,
            capsize=3,
            linestyle="none",
            label=method,
        )
    sizes = {}
    for r in rows:
        if r["size"] != "reference":  # the reference lines sit at their own size, unnamed
            sizes.setdefault(r["size"], r["parameters"])
    ax_params.set_xscale("log")
    ax_params.set_xticks(list(sizes.values()), [f"{s}\n{_count(p)}" for s, p in sizes.items()], fontsize=8)
    ax_params.minorticks_off()
    ax_params.set_xlabel("descendant size (parameters at inference)")
    ax_bytes.set_xscale("symlog", linthresh=1e3)
    top = max([r["inherited_bytes"] for r in rows] + [1e3])
    ticks = [0.0] + [10.0**e for e in range(3, int(math.ceil(math.log10(top))) + 1)]
    ax_bytes.set_xticks(ticks, [_human(t) for t in ticks], fontsize=8)
    ax_bytes.minorticks_off()
    ax_bytes.set_xlim(-300, ticks[-1] * 1.5)
    ax_bytes.set_xlabel("inherited bytes")
    for ax in (ax_params, ax_bytes):
        ax.set_ylim(0, 100)
        ax.set_ylabel("query accuracy (%)")
        if ways:
            ax.axhline(100 / ways, color="tab:red", linestyle="--", linewidth=1, label=f"chance ({100 / ways:.0f}%)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="upper left", ncol=2)  # two columns stay above the points
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig
