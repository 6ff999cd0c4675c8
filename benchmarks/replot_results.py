"""Redraw the shipped figures of benchmarks/results/ from the JSON beside them (no training).

    python benchmarks/replot_results.py

* ``accuracy_{5,10}shot.png`` from ``pipeline.json`` (``learngene_hf.plots.accuracy``);
* ``descendant_sizes.png`` from ``descendant_sizes.json`` (``learngene_hf.plots.sizes``).

``gradient_heatmap.png`` and ``layer_ranking.png`` come from a pipeline run's gradient record and
selection, which no JSON here holds: they are redrawn only by running the pipeline again.
"""

from __future__ import annotations

import json
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def main() -> None:
    from learngene_hf.fewshot.compare import method_label
    from learngene_hf.plots.accuracy import plot_method_accuracy
    from learngene_hf.plots.sizes import plot_descendant_sizes

    pipeline = json.loads((RESULTS / "pipeline.json").read_text())
    for shots, results in pipeline["few_shot"].items():
        labels = {name: method_label(name, entry) for name, entry in results["methods"].items()}
        print(plot_method_accuracy(results, RESULTS / f"accuracy_{shots}shot.png", labels=labels))
    setting = json.loads((RESULTS / "descendant_sizes.json").read_text())["settings"][0]
    title = f"embedded data, {setting['ways']}-way {setting['shots']}-shot, {setting['episodes']} episodes"
    rows = size_plot_rows(setting)
    print(plot_descendant_sizes(rows, RESULTS / "descendant_sizes.png", title=title, ways=setting["ways"]))


def size_plot_rows(setting: dict) -> list[dict]:
    """The figure's rows from one setting of ``descendant_sizes.json``: every (size, method), then
    the size-free methods (the learngene's and the collective's features, the whole backbone)."""
    rows = []
    for size in setting["sizes"]:
        for method, m in size["methods"].items():
            if method != "logreg_learngene":  # size-free: drawn once, below
                rows.append({"method": method, "size": size["name"], "parameters": m["parameters"],
                             "inherited_bytes": m["inherited_bytes"], "mean": m["mean"], "ci95": m["ci"]})  # fmt: skip
    refs = {"logreg_learngene": setting["sizes"][0]["methods"]["logreg_learngene"], **setting["references"]}
    for method, m in refs.items():
        rows.append({"method": method, "size": "reference", "parameters": m["parameters"],
                     "inherited_bytes": m["inherited_bytes"], "mean": m["mean"], "ci95": m["ci"]})  # fmt: skip
    return rows


if __name__ == "__main__":
    main()
