"""Criteria, block ranking and the selection strategies (synthetic gradient records)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from learngene_hf.errors import ConfigError
from learngene_hf.selection.config import parse_layers
from learngene_hf.selection.criterion import (
    Selection,
    candidate_blocks,
    layer_scores,
    rank_blocks,
    select_layers,
    validated_selection,
)
from learngene_hf.training.record import GradientRecord

NAMES = [f"conv{i}" for i in range(6)]
THRESHOLDS = [5e-10, 1e-4]


def make_record(frac, mean_abs, rms, change, names=NAMES) -> GradientRecord:
    """frac/mean_abs/rms: [layers x tasks] arrays (one epoch per task); change: [layers x tasks]."""
    frac, mean_abs, rms, change = (np.asarray(a, dtype=float) for a in (frac, mean_abs, rms, change))
    epochs, weight_change = [], {}
    for t in range(frac.shape[1]):
        layers = {}
        for i, name in enumerate(names):
            if np.isnan(rms[i, t]):
                continue
            layers[name] = {
                "frac_above": [1.0, float(frac[i, t])],
                "mean_abs": float(mean_abs[i, t]),
                "rms": float(rms[i, t]),
            }
        epochs.append({"task": t, "epoch": 0, "batches": 3, "layers": layers})
        weight_change[str(t)] = {
            name: float(change[i, t]) for i, name in enumerate(names) if not np.isnan(change[i, t])
        }
    return GradientRecord(THRESHOLDS, names, epochs, weight_change)


def simple_record(tasks: int = 4) -> GradientRecord:
    n = len(NAMES)
    frac = np.tile(np.linspace(0.9, 0.4, n)[:, None], (1, tasks))  # deeper = lower activity
    rms = np.tile(np.logspace(-2, -4, n)[:, None], (1, tasks))
    mean_abs = 0.7 * rms
    change = np.tile(np.linspace(0.5, 0.1, n)[:, None], (1, tasks))
    return make_record(frac, mean_abs, rms, change)


def test_paper_criterion_is_the_mean_fraction_above_the_threshold():
    record = simple_record()
    scores = layer_scores(record, "paper", threshold=1e-4)
    assert list(scores) == NAMES
    assert np.allclose([scores[n] for n in NAMES], np.linspace(0.9, 0.4, 6))


def test_paper_criterion_rejects_a_threshold_that_was_not_recorded():
    with pytest.raises(ConfigError, match="not recorded"):
        layer_scores(simple_record(), "paper", threshold=1e-3)


def test_relative_activity_does_not_change_when_one_layer_gradients_are_scaled():
    record = simple_record()
    before = layer_scores(record, "relative_activity")
    for entry in record.epochs:
        entry["layers"]["conv2"]["mean_abs"] *= 1000
        entry["layers"]["conv2"]["rms"] *= 1000
    after = layer_scores(record, "relative_activity")
    assert after == pytest.approx(before)
    assert before["conv0"] == pytest.approx(0.49)  # (0.7)^2


def test_stability_ignores_a_whole_network_scale_change_but_sees_one_layer_fluctuate():
    n, tasks = len(NAMES), 5
    rms = np.tile(np.logspace(-2, -4, n)[:, None], (1, tasks)) * np.logspace(0, 2, tasks)[None, :]
    rms[5] *= np.array([1.0, 3.0, 0.3, 2.0, 0.5])  # the last layer fluctuates from task to task
    record = make_record(np.ones((n, tasks)), 0.7 * rms, rms, np.ones((n, tasks)))
    scores = layer_scores(record, "stability")
    assert scores["conv5"] > 0.5
    assert max(scores[name] for name in NAMES[:5]) < scores["conv5"] / 2


def test_weight_change_averages_tasks_and_from_task_drops_early_ones():
    n = len(NAMES)
    change = np.ones((n, 4))
    change[:, 0] = 9.0
    record = make_record(np.ones((n, 4)), np.ones((n, 4)), np.ones((n, 4)), change)
    assert layer_scores(record, "weight_change")["conv0"] == pytest.approx(3.0)
    assert layer_scores(record, "weight_change", from_task=1)["conv0"] == pytest.approx(1.0)
    with pytest.raises(ConfigError, match="from_task"):
        layer_scores(record, "weight_change", from_task=10)


def test_a_layer_added_late_is_scored_on_the_tasks_where_it_existed():
    n = len(NAMES)
    rms = np.full((n, 3), 1e-3)
    rms[2, :2] = np.nan
    frac = np.full((n, 3), 0.5)
    frac[2, 2] = 0.2
    record = make_record(frac, rms, rms, np.ones((n, 3)))
    assert layer_scores(record, "paper", threshold=1e-4)["conv2"] == pytest.approx(0.2)


def test_unknown_criterion_is_rejected_with_the_valid_names():
    with pytest.raises(ConfigError, match="relative_activity"):
        layer_scores(simple_record(), "entropy")


def test_rank_blocks_orders_by_mean_score_and_puts_nan_blocks_last():
    ranking = rank_blocks([0.5, 0.1, 0.2, 0.3, float("nan")], k=2)
    assert [row["layers"] for row in ranking] == [[1, 2], [2, 3], [0, 1], [3, 4]]
    assert ranking[0]["score"] == pytest.approx(0.15)
    assert math.isnan(ranking[-1]["score"])
    assert [row["rank"] for row in ranking] == [1, 2, 3, 4]
    with pytest.raises(ConfigError, match="block size"):
        rank_blocks([0.1, 0.2], k=3)


def test_select_paper_takes_the_last_k_layers_and_criterion_the_best_block():
    record = simple_record()
    paper = select_layers(NAMES, record, "paper", criterion="paper", k=3)
    assert paper.layers == [3, 4, 5]
    assert paper.threshold == 5e-10
    best = select_layers(NAMES, record, "criterion", criterion="weight_change", k=2)
    assert best.layers == [4, 5]
    assert "weight_change" in best.reason
    assert best.ranking[0]["layers"] == [4, 5]


def test_explicit_layers_are_checked():
    sel = select_layers(NAMES, None, "layers", layers=[1, 2])
    assert sel.layers == [1, 2] and sel.k == 2 and sel.criterion is None
    with pytest.raises(ConfigError, match="contiguous"):
        select_layers(NAMES, None, "layers", layers=[1, 3])
    with pytest.raises(ConfigError, match="out of range"):
        select_layers(NAMES, None, "layers", layers=[5, 6])
    with pytest.raises(ConfigError, match="strategy='layers'"):
        select_layers(NAMES, None, "paper", layers=[1, 2])


def test_criterion_strategy_without_a_record_says_what_to_pass():
    with pytest.raises(ConfigError, match="gradient record"):
        select_layers(NAMES, None, "criterion")


def test_candidates_are_top_blocks_paper_and_first_block_without_duplicates():
    ranking = rank_blocks([0.0, 0.1, 0.2, 0.9, 0.9, 0.9], k=3)
    candidates = candidate_blocks(6, ranking, k=3, top=2)
    assert [c["layers"] for c in candidates] == [[0, 1, 2], [1, 2, 3], [3, 4, 5]]
    assert candidates[0]["origin"] == ["criterion #1", "first"]


def test_validated_selection_keeps_the_best_probe_and_records_every_candidate():
    record = simple_record()
    calls = []

    def probe(layers):
        calls.append(layers)
        return [0.8, 0.9, 0.85] if layers == [0, 1, 2] else [0.3, 0.4, 0.35]

    sel = validated_selection(
        NAMES, probe, record, criterion="paper", k=3, threshold=1e-4, probe_settings={"episodes": 3}
    )
    assert sel.strategy == "validated"
    assert sel.layers == [0, 1, 2]
    assert sorted(map(tuple, calls)) == sorted({tuple(c["layers"]) for c in sel.candidates})
    assert len(calls) == len(sel.candidates)  # each candidate probed once
    winner = next(c for c in sel.candidates if c["layers"] == [0, 1, 2])
    assert winner["mean"] == pytest.approx(0.85) and winner["ci95"] > 0
    assert "0-2" in sel.reason and "first" in sel.reason
    assert sel.probe == {"episodes": 3}


def test_validated_selection_without_open_world_data_falls_back_and_says_so():
    sel = validated_selection(
        NAMES,
        None,
        simple_record(),
        criterion="weight_change",
        k=3,
        no_probe_reason="the run has no open-world classes",
    )
    assert sel.strategy == "criterion"
    assert sel.layers == [3, 4, 5]
    assert "no open-world classes" in sel.reason and "fell back" in sel.reason


def test_selection_round_trips_through_strict_json():
    sel = select_layers(NAMES, simple_record(), "criterion", criterion="stability")
    sel.scores["conv0"] = float("nan")
    sel.candidates = [
        {"layers": [0, 1, 2], "origin": ["first"], "accuracies": [0.5], "mean": 0.5, "ci95": float("nan")}
    ]
    text = json.dumps(sel.to_dict(), allow_nan=False)
    back = Selection.from_dict(json.loads(text))
    assert back.layers == sel.layers and back.reason == sel.reason
    assert math.isnan(back.scores["conv0"])
    assert back.chosen_names == [NAMES[i] for i in sel.layers]
    assert "conv3" in back.table()


def test_parse_layers_reads_ranges_and_lists():
    assert parse_layers("10-12") == [10, 11, 12]
    assert parse_layers("0,1, 2") == [0, 1, 2]
    with pytest.raises(ConfigError, match="10-12"):
        parse_layers("a-b")
