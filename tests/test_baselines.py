"""Frozen-feature baselines, weight selection and descendants of several sizes (tiny models)."""

from __future__ import annotations

import pytest
import torch
from helpers import EMBEDDED, SPLIT, tiny_learngene

from learngene_hf.data import load_tensors, sample_episodes
from learngene_hf.errors import ConfigError, IncompatibleLearngeneError
from learngene_hf.fewshot.baselines import (
    DEFAULT_L2_GRID,
    FrozenFeatureClassifier,
    FrozenFeatureConfig,
    fit_frozen_features,
    frozen_features,
    inheritance,
    select_evenly,
    weight_selection,
)
from learngene_hf.fewshot.compare import compare_methods, compare_sizes, format_sizes_table, format_table
from learngene_hf.fewshot.config import SIZE_RECIPES, FewShotConfig
from learngene_hf.fewshot.methods import baseline_methods, descendant_sizes, size_methods
from learngene_hf.fewshot.train import evaluate
from learngene_hf.models.collective import CollectiveConfig, CollectiveModel
from learngene_hf.models.individual import IndividualConfig, IndividualModel
from learngene_hf.models.layers import conv_block

FAST = FewShotConfig(epochs=1, batch_size=8, device="cpu")


@pytest.fixture(scope="module")
def data():
    train, _ = load_tensors(None, **EMBEDDED)
    return train


def tiny_collective() -> CollectiveModel:
    torch.manual_seed(0)
    model = CollectiveModel(CollectiveConfig(preset="tiny", task_num_labels=[3]))
    for block in model.blocks:
        block.bn.running_mean.uniform_(-1, 1)
        block.bn.running_var.uniform_(0.5, 2)
    return model


def test_select_evenly_takes_linspace_indices_in_every_dimension():
    source = torch.arange(6 * 5, dtype=torch.float32).view(6, 5)
    picked = select_evenly(source, (3, 5))
    assert torch.equal(picked, source[[0, 2, 5]])  # round(linspace(0, 5, 3)) = 0, 2.5 -> 2, 5
    assert torch.equal(select_evenly(source, (6, 2)), source[:, [0, 4]])
    assert torch.equal(select_evenly(source, (6, 5)), source)
    with pytest.raises(IncompatibleLearngeneError, match="only shrinks"):
        select_evenly(source, (7, 5))


def test_weight_selection_copies_equal_layers_and_shrinks_smaller_ones():
    collective = tiny_collective()
    # widths 8, 8, 16, 16 in the collective; the descendant keeps 8, 4 (narrower second block), no tail
    descendant = IndividualModel(IndividualConfig(widths=[8, 4], pool=[False, True], head_hidden=[32], num_labels=2))
    classifier_before = descendant.classifier.weight.clone()
    weight_selection(collective, descendant)
    first, second = descendant.blocks[0].state_dict(), descendant.blocks[1].state_dict()
    for name, tensor in collective.blocks[0].state_dict().items():
        assert torch.equal(first[name], tensor)  # a layer of equal size is copied exactly
    rows = torch.linspace(0, 7, 4).round().long()  # 4 of 8 output channels: 0, 2, 5, 7
    assert rows.tolist() == [0, 2, 5, 7]
    assert torch.equal(second["conv.weight"], collective.blocks[1].conv.weight[rows])
    assert torch.equal(second["bn.running_var"], collective.blocks[1].bn.running_var[rows])
    cols = torch.linspace(0, 15, 4).round().long()  # neck input: 4 of the collective's 16 features
    assert torch.equal(descendant.neck[0].weight, collective.neck[0].weight[:, cols])
    assert torch.equal(descendant.classifier.weight, classifier_before)  # the head stays fresh
    record = inheritance(descendant)
    expected = (8 * 3 * 9 + 16) + (4 * 8 * 9 + 8) + (32 * 4 + 32)
    assert record["parameters"] == expected and record["bytes"] > 4 * expected
    assert descendant.config.inherited == [0, 2] and descendant.has_learngene
    with pytest.raises(IncompatibleLearngeneError, match="only"):
        weight_selection(collective, IndividualModel(IndividualConfig(widths=[8] * 5, pool=[False] * 5, num_labels=2)))


def test_frozen_feature_classifiers_fit_a_separable_support_set():
    torch.manual_seed(0)
    blocks = [conv_block(3, 8)]
    # two classes of images that differ in brightness: separable on any features
    images = torch.cat(
        [torch.full((4, 3, 8, 8), 40, dtype=torch.uint8), torch.full((4, 3, 8, 8), 220, dtype=torch.uint8)]
    )
    images[:, :, :2] = torch.randint(0, 255, (8, 3, 2, 8), dtype=torch.uint8)
    labels = torch.tensor([0] * 4 + [1] * 4)
    for classifier in ("logistic", "centroid"):
        model = FrozenFeatureClassifier(blocks, [True], FrozenFeatureConfig(num_labels=2, classifier=classifier))
        with pytest.raises(ConfigError, match="not fitted"):
            model(torch.zeros(1, 3, 8, 8))
        before = blocks[0].conv.weight.clone()
        fit_frozen_features(model, images, labels, FAST, seed=0)
        assert evaluate(model, images, labels, FAST) == 1.0
        assert torch.equal(model.blocks[0].conv.weight, before)  # frozen: nothing else moves
        assert model.num_features == 8 * 4 and inheritance(model) == {"parameters": 0, "bytes": 0}
    strong = FrozenFeatureClassifier(blocks, [True], FrozenFeatureConfig(num_labels=2))
    weak = FrozenFeatureClassifier(blocks, [True], FrozenFeatureConfig(num_labels=2))
    fit_frozen_features(strong, images, labels, FAST, seed=0, l2=10.0)
    fit_frozen_features(weak, images, labels, FAST, seed=0, l2=1e-4)
    assert strong.weight.norm() < weak.weight.norm()  # the L2 penalty shrinks the weights


def test_frozen_features_count_what_the_blocks_inherit():
    collective = tiny_collective()
    lg = tiny_learngene((0, 1), model=collective)
    from_lg = frozen_features(IndividualModel.from_learngene(lg, 3), 3, "centroid", end=2, source="learngene")
    assert len(from_lg.blocks) == 2 and inheritance(from_lg)["parameters"] == lg.num_parameters()
    whole = frozen_features(collective, 3, source="collective")
    conv = sum(p.numel() for b in collective.blocks for p in b.parameters())
    assert inheritance(whole)["parameters"] == conv and whole.num_features == 16 * 4
    random = frozen_features(IndividualModel(IndividualConfig.for_learngene(lg, 3)), 3, source="random")
    assert inheritance(random)["parameters"] == 0 and len(random.blocks) == 4


def test_compare_runs_baselines_on_the_same_episodes_and_tunes_l2_on_open_world(data):
    collective = tiny_collective()
    lg = tiny_learngene((0, 1), model=collective)
    episodes = sample_episodes(data, SPLIT["novel"], 2, ways=3, shots=2, queries=2)
    tune = sample_episodes(data, SPLIT["open_world"], 1, ways=2, shots=2, queries=2, seed=3)
    from learngene_hf.fewshot.methods import comparison_methods

    methods = comparison_methods(lg)[:2] + baseline_methods(lg, collective)
    results = compare_methods(
        lg, episodes, FAST, methods=methods, tune_lr_episodes=tune, lr_grid=(0.01,), progress=False
    )
    m = results["methods"]
    assert list(m) == [
        "learngene",
        "scratch",
        "logreg_random",
        "centroid_random",
        "logreg_learngene",
        "centroid_learngene",
        "logreg_collective",
        "centroid_collective",
        "weight_selection",
    ]
    logreg = m["logreg_random"]
    assert logreg["lr"] is None and logreg["kind"] == "frozen features" and "diff_vs_scratch" in logreg
    tried = logreg["settings_search"]  # the grid, plus one value if the best sat at an edge
    assert (
        len(DEFAULT_L2_GRID) <= len(tried) <= len(DEFAULT_L2_GRID) + 1 and f"l2={logreg['settings']['l2']:g}" in tried
    )
    assert bool(logreg["edge_of_grid"]) == (
        logreg["settings"]["l2"] in (min(map(float, [k[3:] for k in tried])), max(map(float, [k[3:] for k in tried])))
    )
    assert m["centroid_random"]["settings"] is None and m["centroid_random"]["settings_search"] is None
    assert m["weight_selection"]["lr"] == 0.01 and m["weight_selection"]["kind"] == "fine-tuned"
    assert m["learngene"]["tuning"] is None  # a one-value lr grid: applied, no tuning runs
    assert (
        m["logreg_learngene"]["inherited_parameters"] == lg.num_parameters() == m["learngene"]["inherited_parameters"]
    )
    assert m["logreg_random"]["inherited_bytes"] == 0 < m["centroid_collective"]["inherited_bytes"]
    assert all(len(e["accuracy"]) == len(m) for e in results["episodes"])
    assert "| logreg_random | l2=" in format_table(results) and "| centroid_random | - |" in format_table(results)


def test_descendants_of_every_named_size_against_what_inherits_nothing_at_that_size(data, tmp_path):
    collective = tiny_collective()
    lg = tiny_learngene((0, 1), model=collective)  # the first two blocks: two fresh blocks can follow
    sizes = descendant_sizes()
    assert [s.name for s in sizes] == ["tiny", "small", "medium", "full"]
    assert sizes[0].recipe == SIZE_RECIPES["tiny"] and sizes[0].overrides == {"size": "tiny"}
    with pytest.raises(ConfigError, match="Unknown descendant sizes"):
        descendant_sizes(["huge"])
    episodes = sample_episodes(data, SPLIT["novel"], 2, ways=2, shots=2, queries=2)
    results = compare_sizes(lg, collective, episodes, FAST, progress=False)
    rows = results["sizes"]
    methods = ("learngene", "scratch", "weight_selection", "logreg_random", "centroid_random")
    assert [(r["size"], r["method"]) for r in rows[:5]] == [("tiny", m) for m in methods]
    assert results["methods"]["learngene@tiny"]["recipe"]["steps"] == 0  # the tiny size's recipe: the linear probe
    params = {r["size"]: r["parameters"] for r in rows if r["method"] == "scratch"}
    assert params["tiny"] < params["small"] < params["medium"] < params["full"]
    full_model = IndividualModel(IndividualConfig.for_learngene(lg, 2))
    assert params["full"] == sum(p.numel() for p in full_model.parameters())
    flops = {r["size"]: r["flops_per_image"] for r in rows if r["method"] == "scratch"}
    assert 0 < flops["tiny"] < flops["small"] < flops["full"]
    by = {(r["size"], r["method"]): r for r in rows}
    assert (
        by[("full", "scratch")]["diff_vs_scratch"] is None and by[("full", "learngene")]["diff_vs_scratch"] is not None
    )
    assert by[("tiny", "learngene")]["inherited_bytes"] == inheritance(IndividualModel.from_learngene(lg, 2))["bytes"]
    assert by[("small", "logreg_random")]["inherited_bytes"] == 0
    assert (
        by[("full", "weight_selection")]["inherited_parameters"]
        > by[("tiny", "weight_selection")]["inherited_parameters"]
    )
    assert "| small | weight_selection |" in format_sizes_table(rows)
    from learngene_hf.plots.sizes import plot_descendant_sizes

    path = plot_descendant_sizes(rows, tmp_path / "sizes.png", title="tiny")
    assert (tmp_path / "sizes.png").stat().st_size > 1000 and path.endswith("sizes.png")


def test_learngene_plus_head_with_its_recipe_does_not_end_below_a_linear_probe_on_the_learngene(data):
    """The sanity property of the smallest size: fine-tuned with its own recipe (a linear probe
    as the head's start), it ends no lower than logistic regression on the same frozen features."""
    torch.manual_seed(0)
    collective = CollectiveModel(CollectiveConfig(preset="tiny", task_num_labels=[3]))
    lg = tiny_learngene((0, 1), model=collective)
    tiny = [m for m in size_methods(lg, collective, descendant_sizes(["tiny"])) if m.name == "learngene@tiny"]
    probe = baseline_methods(lg, sources=("learngene",), classifiers=("logreg",), weight_selection_method=False)
    episodes = sample_episodes(data, SPLIT["novel"], 8, ways=3, shots=5, queries=5, seed=1)
    results = compare_methods(lg, episodes, FewShotConfig(device="cpu"), methods=tiny + probe, progress=False)
    fine_tuned, linear = results["methods"]["learngene@tiny"], results["methods"]["logreg_learngene"]
    assert fine_tuned["recipe"]["steps"] == SIZE_RECIPES["tiny"]["steps"]
    assert fine_tuned["mean"] >= linear["mean"] - 0.05, (fine_tuned["mean"], linear["mean"])


def test_few_shot_example_prints_baselines_and_sizes_on_digits(tmp_path):
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    from learngene_hf.selection.inheritor import Inheritor
    from learngene_hf.training.config import CollectiveTrainingConfig
    from learngene_hf.training.trainer import train_collective

    repo = Path(__file__).resolve().parents[1]
    cfg = CollectiveTrainingConfig.for_preset(
        "tiny",
        num_tasks=1,
        ways=2,
        epochs_per_task=1,
        train_per_class=10,
        test_per_class=2,
        embedded={k: v for k, v in EMBEDDED.items() if k != "image_size"},
        image_size=16,
        growth="none",
        **SPLIT,
    )
    train_collective(cfg, tmp_path / "run", progress=False)
    folder = Inheritor.from_run(tmp_path / "run").extract([0, 1]).save_pretrained(tmp_path / "lg")
    out = tmp_path / "out"
    cmd = [
        sys.executable,
        str(repo / "examples" / "few_shot.py"),
        "--learngene",
        str(folder),
        "--dataset",
        "digits",
        "--ways",
        "2",
        "--shots",
        "2",
        "--queries",
        "2",
        "--episodes",
        "1",
        "--epochs",
        "1",
        "--compare",
        "--sizes",
        "--tune-lr",
        "--tune-episodes",
        "1",
        "--lr-grid",
        "0.05",
        "--output-dir",
        str(out),
        "--no-progress",
        "--no-plot",
    ]
    env = {**os.environ, "PYTHONPATH": str(repo), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, env=env, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    results = json.loads((out / "results.json").read_text())
    assert set(results["episodes"][0]["classes"]) <= {7, 8, 9}  # the digits' novel classes
    assert {"logreg_random", "centroid_collective", "weight_selection"} <= set(results["methods"])
    sizes = json.loads((out / "sizes.json").read_text())["sizes"]
    assert {r["size"] for r in sizes} == {"tiny", "small", "medium", "full"}
    assert "| logreg_learngene | l2=" in proc.stdout and "| tiny | learngene |" in proc.stdout


@pytest.mark.parametrize(
    ("grid", "peak", "widen", "tried", "chosen", "edge"),
    [
        ([0.01, 0.1], 10.0, 1, [0.01, 0.1, 1.0], 1.0, ["l2"]),  # best at the top: one step up, still at the edge
        ([0.01, 0.1], 1e-3, 2, [0.01, 0.1, 1e-3, 1e-4], 1e-3, []),  # two steps down find the peak inside
        ([0.01, 0.1, 1.0], 0.1, 1, [0.01, 0.1, 1.0], 0.1, []),  # best inside: nothing to widen
        ([0.01, 0.1], 10.0, 0, [0.01, 0.1], 0.1, ["l2"]),  # widen=0: the grid as given
    ],
)
def test_tune_settings_widens_a_grid_whose_best_value_is_at_an_edge(
    monkeypatch, grid, peak, widen, tried, chosen, edge
):
    """An L2 grid is widened geometrically where its best value sits at an edge (accuracy here
    peaks at ``peak`` in log space), as the recipe tuning widens the learning rate."""
    import math

    from learngene_hf.fewshot import tuning as fewshot
    from learngene_hf.fewshot.runner import Method
    from learngene_hf.fewshot.tuning import tune_settings

    ran: list[str] = []

    def fake_run_episodes(variants, episodes, cfg, accelerator, progress, seed, desc=None):
        ran.extend(v.name for v in variants)
        return [
            {"accuracy": {v.name: 1 / (1 + abs(math.log10(v.settings["l2"] / peak))) for v in variants}}
            for _ in episodes
        ]

    monkeypatch.setattr(fewshot, "run_episodes", fake_run_episodes)
    method = Method(
        "logreg", lambda n: None, fit=lambda *a, **k: None, settings={"l2": 0.5, "max_iter": 9}, search={"l2": grid}
    )
    settings, means, still_at_edge = tune_settings(method, [object()], widen=widen)
    assert ran == [f"l2={v:g}" for v in tried] and list(means) == ran  # each value once, in the order tried
    assert settings == {"l2": pytest.approx(chosen), "max_iter": 9} and still_at_edge == edge
