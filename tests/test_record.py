"""The gradient record: on-device accumulation, growth by stable name, matrices, JSON round trip."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from learngene_hf import CollectiveConfig, CollectiveModel
from learngene_hf.errors import ArtifactError, ConfigError
from learngene_hf.plots.heatmap import plot_gradient_heatmap
from learngene_hf.training.record import GradientRecord, GradientRecorder


def _tiny_model() -> CollectiveModel:
    torch.manual_seed(0)
    model = CollectiveModel(CollectiveConfig(preset="tiny"))
    model.add_task(3)
    return model


def _set_grads(model: CollectiveModel, value_fn) -> None:
    for i, block in enumerate(model.blocks):
        block.conv.weight.grad = value_fn(i, block.conv.weight)


def test_recorder_statistics_match_a_direct_computation_averaged_over_batches():
    model = _tiny_model()
    thresholds = [1e-3, 0.5]
    recorder = GradientRecorder(model, thresholds)
    recorder.begin_task(0)
    grads = []
    for batch in range(3):
        gen = torch.Generator().manual_seed(batch)
        g = {i: torch.randn(w.shape, generator=gen) for i, w in enumerate(b.conv.weight for b in model.blocks)}
        grads.append(g)
        _set_grads(model, lambda i, w, g=g: g[i])
        recorder.step()
    entry = recorder.end_epoch(task=0, epoch=0)
    assert entry["batches"] == 3
    for i, name in enumerate(model.config.layer_names):
        expected_frac = [np.mean([float((grads[b][i].abs() > t).float().mean()) for b in range(3)]) for t in thresholds]
        expected_mean = np.mean([float(grads[b][i].abs().mean()) for b in range(3)])
        expected_rms = np.mean([float(grads[b][i].square().mean().sqrt()) for b in range(3)])
        stats = entry["layers"][name]
        assert stats["frac_above"] == pytest.approx(expected_frac, rel=1e-5)
        assert stats["mean_abs"] == pytest.approx(expected_mean, rel=1e-5)
        assert stats["rms"] == pytest.approx(expected_rms, rel=1e-5)


def test_relative_weight_change_is_recorded_per_task():
    model = _tiny_model()
    recorder = GradientRecorder(model, [1e-3])
    recorder.begin_task(0)
    with torch.no_grad():
        model.blocks[0].conv.weight.mul_(1.5)  # changes by 50 percent
    changes = recorder.end_task(0)
    assert changes["conv0"] == pytest.approx(0.5, rel=1e-5)
    assert changes["conv1"] == pytest.approx(0.0, abs=1e-7)


def _record_with_growth() -> GradientRecord:
    model = _tiny_model()
    recorder = GradientRecorder(model, [1e-3, 1e-1])
    for task in range(3):
        if task == 1:
            model.widen(1, 12, generator=torch.Generator().manual_seed(0))
        if task == 2:
            model.deepen(1)
        recorder.begin_task(task)
        for epoch in range(2):
            _set_grads(model, lambda i, w: torch.full(w.shape, 0.01 * (i + 1)))
            recorder.step()
            recorder.end_epoch(task, epoch)
        recorder.end_task(task)
    return recorder.record


def test_grown_layers_keep_their_name_and_a_deepened_layer_starts_at_its_task():
    record = _record_with_growth()
    assert record.layer_names == ["conv0", "conv1", "conv4", "conv2", "conv3"]
    names, tasks, array = record.matrix("frac_above", threshold=1e-3)
    assert tasks == [0, 1, 2] and array.shape == (5, 3)
    new_row = names.index("conv4")
    assert math.isnan(array[new_row, 0]) and math.isnan(array[new_row, 1]) and array[new_row, 2] == 1.0
    # conv1 was widened at task 1 and is still one row with values for every task
    assert not np.isnan(array[names.index("conv1")]).any()
    _, column_tasks, per_epoch = record.epoch_matrix("mean_abs")
    assert column_tasks == [0, 0, 1, 1, 2, 2] and per_epoch.shape == (5, 6)
    _, _, change = record.matrix("rel_weight_change")
    assert change.shape == (5, 3)


def test_record_json_round_trip(tmp_path):
    record = _record_with_growth()
    path = record.save(tmp_path / "record.json")
    again = GradientRecord.load(path)
    assert again.to_dict() == record.to_dict()
    for stat, thr in [("frac_above", 1e-1), ("rms", None), ("rel_weight_change", None)]:
        np.testing.assert_array_equal(again.matrix(stat, thr)[2], record.matrix(stat, thr)[2])


def test_record_errors_name_the_problem(tmp_path):
    record = _record_with_growth()
    with pytest.raises(ConfigError, match="needs a threshold"):
        record.matrix("frac_above")
    with pytest.raises(ConfigError, match="not recorded"):
        record.matrix("frac_above", threshold=0.123)
    with pytest.raises(ConfigError, match="Unknown statistic"):
        record.matrix("variance")
    (tmp_path / "bad.json").write_text('{"format": "something else"}')
    with pytest.raises(ArtifactError, match="Not a gradient record"):
        GradientRecord.load(tmp_path / "bad.json")
    (tmp_path / "cut.json").write_text('{"format": "learngene-hf/gradient-rec')
    with pytest.raises(ArtifactError, match="not valid JSON"):
        GradientRecord.load(tmp_path / "cut.json")


def test_heatmap_is_a_valid_png(tmp_path):
    record = _record_with_growth()
    path = plot_gradient_heatmap(record, tmp_path / "heat.png", "frac_above", threshold=1e-3)
    data = open(path, "rb").read()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    import matplotlib.image

    image = matplotlib.image.imread(path)
    assert image.ndim == 3 and image.shape[0] > 50 and image.shape[1] > 50
