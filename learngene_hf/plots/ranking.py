"""Figure of a learngene selection: per-layer criterion scores and the candidates' probe accuracies."""

from __future__ import annotations

import math
import os
from typing import Any

from . import save_figure


def plot_layer_ranking(selection: Any, path: str | os.PathLike) -> str:
    """Draw ``selection`` (a :class:`~learngene_hf.selection.criterion.Selection` or its ``to_dict()``) to
    ``path`` (PNG).

    Left: every conv layer's criterion score as a bar (lower = more stable), the chosen block
    highlighted. Right (validated selections only): each candidate block's mean open-world probe
    accuracy with its 95% confidence interval, the winner highlighted. Returns the path.
    """
    from matplotlib.figure import Figure

    data = selection.to_dict() if hasattr(selection, "to_dict") else dict(selection)
    names = list(data.get("layer_names") or [])
    chosen = set(data.get("layers") or [])
    scores = data.get("scores") or {}
    candidates = data.get("candidates") or []
    fig = Figure(figsize=(11 if candidates else 7, 4))
    axes = fig.subplots(1, 2 if candidates else 1, squeeze=False)[0]

    ax = axes[0]
    values = [scores.get(n) for n in names]
    heights = [v if v is not None and math.isfinite(v) else 0.0 for v in values]
    colors = ["tab:orange" if i in chosen else "tab:blue" for i in range(len(names))]
    ax.bar(range(len(names)), heights, color=colors)
    for i, v in enumerate(values):
        if v is None or not math.isfinite(v):
            ax.text(i, 0, "n/a", ha="center", va="bottom", fontsize=8)
    ax.set_xticks(range(len(names)), names, rotation=45, ha="right")
    criterion = data.get("criterion") or "no criterion"
    ax.set_ylabel(f"{criterion} score (lower = more stable)")
    ax.set_title(f"Layers by {criterion}; chosen ({data.get('strategy')}) in orange")

    if candidates:
        ax = axes[1]
        best = list(data.get("layers") or [])
        labels, means, errors, colors = [], [], [], []
        for cand in candidates:
            layers = cand["layers"]
            origin = "/".join(cand.get("origin", [])) + ("\n(too large)" if "skipped" in cand else "")
            labels.append(f"{layers[0]}-{layers[-1]}\n{origin}")
            mean = cand.get("mean")
            means.append(100 * mean if mean is not None else 0.0)
            ci = cand.get("ci95")
            errors.append(100 * ci if ci is not None and math.isfinite(ci) else 0.0)
            colors.append("tab:orange" if layers == best else "tab:gray")
        ax.bar(range(len(labels)), means, yerr=errors, capsize=4, color=colors)
        ax.set_xticks(range(len(labels)), labels, fontsize=8)
        ax.set_ylabel("open-world probe accuracy (%), 95% CI")
        ax.set_title("Candidates probed on open-world classes")
    fig.tight_layout()
    return save_figure(fig, path)
