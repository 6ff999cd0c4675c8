"""Continual-learning figure: accuracy of every task of the stream, per forgetting-control variant."""

from __future__ import annotations

import os
from typing import Mapping, Sequence

from . import save_figure


def plot_task_accuracy(curves: Mapping[str, Mapping[str, Sequence[float]]], path: str | os.PathLike) -> str:
    """Accuracy per task over the stream, one line per variant, written to ``path`` (PNG).

    Args:
        curves: ``{variant: {"end": [acc of task 0, 1, ...] at the end of the stream,
            "after": [acc of each task right after learning it] (optional)}}``, accuracies in
            [0, 1]. Solid lines show the end of the stream; dotted lines (same colour) the
            accuracy right after learning, so the gap between them is the forgetting.

    Returns the path.
    """
    from matplotlib.figure import Figure

    if not curves:
        raise ValueError("plot_task_accuracy needs at least one variant.")
    fig = Figure(figsize=(8, 4.5))
    ax = fig.subplots()
    colours = ["tab:gray", "tab:orange", "tab:purple", "tab:green", "tab:blue", "tab:red", "tab:brown"]
    for i, (name, curve) in enumerate(curves.items()):
        colour = colours[i % len(colours)]
        end = [100 * a for a in curve["end"]]
        ax.plot(
            range(len(end)),
            end,
            marker="o",
            markersize=3,
            color=colour,
            label=f"{name} (mean {sum(end) / len(end):.0f}%)",
        )
        if curve.get("after"):
            after = [100 * a for a in curve["after"]]
            ax.plot(range(len(after)), after, linestyle=":", color=colour, alpha=0.6)
    ax.set_xlabel("task (order of the stream)")
    ax.set_ylabel("test accuracy of the task's head (%)")
    ax.set_title("accuracy at the end of the stream (solid) and right after learning (dotted)")
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    return save_figure(fig, path)


def plot_open_world_aurocs(aurocs: Mapping[str, Mapping[str, float]], path: str | os.PathLike) -> str:
    """Mean open-world AUROC per score, one group of bars per variant, written to ``path`` (PNG).

    Args:
        aurocs: ``{variant: {score: mean AUROC in [0, 1]}}`` (e.g. a collective report's
            ``mean_open_world_aurocs`` per variant). A dashed line marks chance (0.5).

    Returns the path.
    """
    from matplotlib.figure import Figure

    if not aurocs:
        raise ValueError("plot_open_world_aurocs needs at least one variant.")
    scores = list(dict.fromkeys(s for v in aurocs.values() for s in v))
    fig = Figure(figsize=(8, 4.5))
    ax = fig.subplots()
    width = 0.8 / len(aurocs)
    for i, (name, values) in enumerate(aurocs.items()):
        xs = [j + (i - (len(aurocs) - 1) / 2) * width for j in range(len(scores))]
        ax.bar(xs, [values.get(s, float("nan")) for s in scores], width, label=name)
    ax.axhline(0.5, color="black", linestyle="--", linewidth=1, label="chance")
    ax.set_xticks(range(len(scores)), scores)
    ax.set_ylabel("mean open-world AUROC (unknown vs known)")
    ax.set_ylim(0.3, 1.0)
    ax.set_title("is this image any class the collective model learnt?")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, loc="upper right")
    fig.tight_layout()
    return save_figure(fig, path)
