"""The report figures read at a glance: accuracy on a 0-100 axis with the chance level, size labels
that do not sit on top of each other, no offset colour bar."""

from __future__ import annotations

from matplotlib.backends.backend_agg import FigureCanvasAgg

from learngene_hf.plots.accuracy import method_accuracy_figure, plot_method_accuracy
from learngene_hf.plots.sizes import descendant_sizes_figure


def _results(ways: int = 4) -> dict:
    def method(mean: float, diff: float | None) -> dict:
        entry = {"mean": mean, "ci95": 0.05, "accuracies": [mean - 0.1, mean + 0.1]}
        if diff is not None:
            entry["diff_vs_scratch"] = {"mean": diff, "ci95": 0.02}
        return entry

    return {
        "setting": {"ways": ways, "shots": 1, "episodes": 2},
        "methods": {"learngene": method(0.6, 0.3), "scratch": method(0.3, None)},
    }


def test_accuracy_axis_runs_from_0_to_100_with_the_chance_level(tmp_path):
    fig = method_accuracy_figure(_results(ways=4))
    accuracy = fig.axes[0]
    assert accuracy.get_ylim() == (0.0, 100.0)
    chance = [line for line in accuracy.get_lines() if line.get_label().startswith("chance")]
    assert len(chance) == 1 and list(chance[0].get_ydata()) == [25.0, 25.0]
    assert plot_method_accuracy(_results(), tmp_path / "accuracy.png").endswith("accuracy.png")


def _rows() -> list[dict]:
    rows = []
    for size, parameters in (("learngene+head", 46_693), ("learngene+1", 137_061), ("full", 1_055_589)):
        for method, inherited in (("learngene", 116_120), ("scratch", 0), ("weight_selection", 4 * parameters)):
            rows.append(
                {
                    "size": size,
                    "method": method,
                    "parameters": parameters,
                    "inherited_bytes": inherited,
                    "mean": 0.3,
                    "ci95": 0.05,
                }
            )
    return rows


def test_sizes_are_named_once_on_the_axis_and_their_labels_do_not_overlap():
    fig = descendant_sizes_figure(_rows(), title="tiny", ways=5)
    FigureCanvasAgg(fig).draw()
    params, inherited = fig.axes
    names = [label.get_text().split("\n")[0] for label in params.get_xticklabels()]
    assert names == ["learngene+head", "learngene+1", "full"]
    assert not [child for child in params.get_children() if type(child).__name__ == "Annotation"]
    renderer = fig.canvas.get_renderer()
    for ax in (params, inherited):
        boxes = [label.get_window_extent(renderer) for label in ax.get_xticklabels() if label.get_text()]
        assert not any(a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1 :])
        assert ax.get_ylim() == (0.0, 100.0)
        assert any(line.get_label() == "chance (20%)" for line in ax.get_lines())
    assert [label.get_text() for label in inherited.get_xticklabels()][:2] == ["0", "1 KB"]
