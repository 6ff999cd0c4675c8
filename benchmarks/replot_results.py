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
    sizes = json.loads((RESULTS / "descendant_sizes.json").read_text())["sizes"]
    s = sizes["setting"]
    title = f"embedded data, {s['ways']}-way {s['shots']}-shot, {s['episodes']} episodes"
    print(plot_descendant_sizes(sizes["sizes"], RESULTS / "descendant_sizes.png", title=title, ways=s["ways"]))


if __name__ == "__main__":
    main()
