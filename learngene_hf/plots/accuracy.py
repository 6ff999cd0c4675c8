"""Few-shot accuracy figure: mean accuracy with 95% CI per method, and paired differences to scratch."""

from __future__ import annotations

import os
from typing import Any

from . import save_figure


def plot_method_accuracy(results: dict[str, Any], path: str | os.PathLike, labels: dict[str, str] | None = None) -> str:
    """:func:`method_accuracy_figure` written to ``path`` (PNG); returns the path."""
    return save_figure(method_accuracy_figure(results, labels), path)


def method_accuracy_figure(results: dict[str, Any], labels: dict[str, str] | None = None) -> Any:
    """Two panels from a :func:`learngene_hf.fewshot.compare_methods` results dict (a matplotlib ``Figure``).

    ``labels`` names the methods on the axes (default: their keys in ``results["methods"]``).

    Left: mean query accuracy (%) per method with its 95% CI and the per-episode accuracies as
    dots, on a 0-100 axis with the chance level of ``results["setting"]["ways"]`` (100 / ways)
    drawn. Right: paired difference to scratch (points) with its 95% CI (zero line drawn).
    """
    from matplotlib.figure import Figure

    methods = results["methods"]
    names = list(methods)
    labels = {n: (labels or {}).get(n, n) for n in names}
    fig = Figure(figsize=(4 + 1.2 * len(names), 4.5))
    ax_acc, ax_diff = fig.subplots(1, 2, gridspec_kw={"width_ratios": [1, 1]})
    for i, name in enumerate(names):
        m = methods[name]
        ci = 100 * (m["ci95"] or 0.0)
        ax_acc.bar(
            i, 100 * m["mean"], yerr=ci, capsize=4, color="tab:gray" if name == "scratch" else "tab:blue", alpha=0.8
        )
        accs = [100 * a for a in m["accuracies"]]
        ax_acc.scatter([i] * len(accs), accs, s=8, color="black", alpha=0.4, zorder=3)
    ax_acc.set_xticks(range(len(names)), [labels[n] for n in names], rotation=30, ha="right")
    ax_acc.set_ylim(0, 100)
    ways = (results.get("setting") or {}).get("ways")
    if ways:
        ax_acc.axhline(100 / ways, color="tab:red", linestyle="--", linewidth=1, label=f"chance ({100 / ways:.0f}%)")
        ax_acc.legend(loc="upper right", fontsize=8)
    ax_acc.set_ylabel("query accuracy (%)")
    ax_acc.set_title("mean +/- 95% CI")
    diffs = [(n, methods[n]["diff_vs_scratch"]) for n in names if methods[n].get("diff_vs_scratch")]
    for i, (_, d) in enumerate(diffs):
        colour = "tab:green" if d["mean"] >= 0 else "tab:red"
        ax_diff.errorbar(i, 100 * d["mean"], yerr=100 * (d["ci95"] or 0.0), fmt="o", capsize=4, color=colour)
    ax_diff.axhline(0.0, color="black", linewidth=0.8)
    ax_diff.set_xticks(range(len(diffs)), [labels[n] for n, _ in diffs], rotation=30, ha="right")
    ax_diff.set_xlim(-0.5, max(len(diffs), 1) - 0.5)
    ax_diff.set_ylabel("paired difference to scratch (points)")
    ax_diff.set_title("vs scratch, same episodes")
    s = results.get("setting", {})
    fig.suptitle(f"{s.get('ways', '?')}-way {s.get('shots', '?')}-shot, {s.get('episodes', '?')} episodes")
    fig.tight_layout()
    return fig
