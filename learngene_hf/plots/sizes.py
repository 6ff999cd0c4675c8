"""Descendant-size figure: accuracy against parameters at inference and against inherited bytes."""

from __future__ import annotations

import os
from typing import Any, Sequence

from . import save_figure

_STYLE = {"learngene": ("tab:blue", "o"), "scratch": ("tab:gray", "s"), "weight_selection": ("tab:orange", "^")}


def plot_descendant_sizes(rows: Sequence[dict[str, Any]], path: str | os.PathLike, title: str = "") -> str:
    """Two panels from plain rows (``method``, ``size``, ``parameters``, ``inherited_bytes``,
    ``mean``, ``ci95``; accuracies 0..1), written to ``path`` (PNG).

    Left: query accuracy (%) against the descendant's parameters (log axis), one line per method.
    Right: the same accuracies against the bytes the descendant inherited (symmetric log axis, so
    scratch sits at 0). Error bars are 95% CIs. Returns the path.
    """
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 4))
    ax_params, ax_bytes = fig.subplots(1, 2)
    methods = list(dict.fromkeys(r["method"] for r in rows))
    for method in methods:
        mine = sorted((r for r in rows if r["method"] == method), key=lambda r: r["parameters"])
        colour, marker = _STYLE.get(method, (None, "D"))
        accuracy = [100 * r["mean"] for r in mine]
        errors = [100 * (r["ci95"] or 0.0) for r in mine]
        ax_params.errorbar(
            [r["parameters"] for r in mine], accuracy, yerr=errors, marker=marker, color=colour, capsize=3, label=method
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
        for r, a in zip(mine, accuracy):
            ax_params.annotate(r["size"], (r["parameters"], a), textcoords="offset points", xytext=(4, 4), fontsize=7)
    ax_params.set_xscale("log")
    ax_params.set_xlabel("descendant parameters (at inference)")
    ax_params.set_ylabel("query accuracy (%)")
    ax_params.legend(fontsize=8)
    ax_bytes.set_xscale("symlog", linthresh=1e3)
    ax_bytes.set_xlabel("inherited bytes")
    ax_bytes.set_ylabel("query accuracy (%)")
    ax_bytes.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return save_figure(fig, path)
