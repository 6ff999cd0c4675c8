"""Replay memory: exemplar selection, sampling, checkpoint round trip, and less forgetting in training."""

from __future__ import annotations

import math

import pytest
import torch
from helpers import striped_data

from learngene_hf.errors import ConfigError, DataError
from learngene_hf.models.collective import CollectiveConfig, CollectiveModel
from learngene_hf.training.config import CollectiveTrainingConfig
from learngene_hf.training.loading import model_inputs
from learngene_hf.training.replay import ReplayMemory, herding
from learngene_hf.training.trainer import train_collective


def test_herding_picks_distinct_rows_whose_mean_tracks_the_class_mean():
    gen = torch.Generator().manual_seed(0)
    features = torch.randn(60, 8, generator=gen) + 2.0
    picked = herding(features, 10)
    assert len(picked) == 10 and len(set(picked.tolist())) == 10
    unit = torch.nn.functional.normalize(features, dim=1)
    herd_gap = (unit[picked].mean(0) - unit.mean(0)).norm()
    random_gaps = [(unit[torch.randperm(60, generator=gen)[:10]].mean(0) - unit.mean(0)).norm() for _ in range(20)]
    assert herd_gap < min(random_gaps)
    assert len(herding(features[:4], 10)) == 4  # a class with fewer images keeps them all


def test_memory_keeps_per_class_exemplars_samples_and_round_trips():
    images = torch.arange(30, dtype=torch.uint8).view(30, 1, 1, 1).expand(30, 3, 2, 2).contiguous()
    labels = torch.arange(3).repeat_interleave(10)
    memory = ReplayMemory(4, "random")
    memory.add_task(0, images, labels, [7, 8, 9], generator=torch.Generator().manual_seed(0))
    memory.add_task(1, images[:20], labels[:20], [1, 2], generator=torch.Generator().manual_seed(1))
    assert len(memory) == 4 * 3 + 4 * 2
    assert memory.tasks.tolist() == [0] * 12 + [1] * 8
    assert memory.classes.tolist() == [7] * 4 + [8] * 4 + [9] * 4 + [1] * 4 + [2] * 4
    # every stored image belongs to its label (image value // 10 == local label)
    assert torch.equal(memory.images[:, 0, 0, 0].long() // 10, memory.labels)
    x, y, t = memory.sample(16, torch.Generator().manual_seed(3))
    assert x.shape == (16, 3, 2, 2) and y.shape == t.shape == (16,)
    again = ReplayMemory(4, "random")
    again.load_state_tensors(memory.state_tensors())
    x2, y2, t2 = again.sample(16, torch.Generator().manual_seed(3))
    assert torch.equal(x, x2) and torch.equal(y, y2) and torch.equal(t, t2)


def test_memory_rejects_bad_settings_and_missing_features():
    with pytest.raises(ConfigError, match="per_class"):
        ReplayMemory(0)
    with pytest.raises(ConfigError, match="selection"):
        ReplayMemory(5, "reservoir")
    with pytest.raises(DataError, match="Herding"):
        ReplayMemory(5).add_task(0, torch.zeros(4, 3, 2, 2), torch.zeros(4, dtype=torch.long), [0])
    with pytest.raises(DataError, match="empty"):
        ReplayMemory(5).sample(3, torch.Generator())
    with pytest.raises(ConfigError, match="replay_per_class"):
        CollectiveTrainingConfig.for_preset("tiny", replay_per_class=-1)
    with pytest.raises(ConfigError, match="bn_freeze_after"):
        CollectiveTrainingConfig.for_preset("tiny", bn_freeze_after=-2)


def test_replay_reduces_forgetting_of_the_first_task(tmp_path):
    data = striped_data()
    results = {}
    for per_class in (0, 10):
        config = CollectiveTrainingConfig.for_preset(
            "tiny",
            num_tasks=3,
            epochs_per_task=5,
            lr=0.03,
            train_per_class=40,
            test_per_class=20,
            growth="none",
            replay_per_class=per_class,
            replay_batch_size=16,
            record_gradients=False,
            base=list(range(15)),
            open_world=[],
            novel=[],
        )
        run = train_collective(config, tmp_path / f"replay{per_class}", data=data, resume=False, progress=False)
        results[per_class] = run
    off, on = results[0].report["tasks"], results[10].report["tasks"]
    assert off[0]["epoch_losses"] == on[0]["epoch_losses"]  # nothing to replay during the first task
    assert all(v == 0.0 for v in off[1]["epoch_replay_losses"]) and on[1]["epoch_replay_losses"][-1] > 0
    assert results[10].report["forgetting_control"]["replay_images"] == 3 * 5 * 10
    assert (tmp_path / "replay10" / "checkpoint" / "replay.safetensors").is_file()
    drop_off = off[0]["accuracy_after"] - off[0]["accuracy_end"]
    drop_on = on[0]["accuracy_after"] - on[0]["accuracy_end"]
    assert drop_on < drop_off


def test_replay_loss_makes_the_outlier_heads_unsure_on_the_other_tasks_images():
    from learngene_hf.training.trainer import replay_loss

    torch.manual_seed(0)
    model = CollectiveModel(CollectiveConfig(preset="tiny"))
    for _ in range(3):
        model.add_task(4)
    images = torch.randint(0, 256, (6, 3, 16, 16), dtype=torch.uint8)
    labels, tasks = torch.tensor([0, 1, 2, 3, 0, 1]), torch.tensor([0, 0, 1, 1, 2, 2])
    model.requires_grad_(False)
    ce, none = replay_loss(model, images, labels, tasks)
    assert none == 0 and ce > 0
    _, unsure = replay_loss(model, images, labels, tasks, outlier_heads=(2,))
    embedding = model.embed(model_inputs(images))
    logits = model.heads[2](embedding[tasks != 2])  # head 2 on the images of tasks 0 and 1
    uniform = torch.full_like(logits, 1 / 4)
    torch.testing.assert_close(unsure, torch.nn.functional.cross_entropy(logits, uniform))
    with torch.no_grad():  # a head whose logits are all equal is as unsure as it can be: log(4)
        model.heads[2].weight.zero_()
    assert float(replay_loss(model, images, labels, tasks, outlier_heads=(2,))[1]) == pytest.approx(math.log(4))


def test_outlier_exposure_trains_the_chosen_heads_and_needs_replay(tmp_path):
    common = dict(num_tasks=3, epochs_per_task=2, lr=0.03, train_per_class=20, test_per_class=10, growth="none")
    common.update(replay_per_class=5, record_gradients=False, base=list(range(15)), open_world=[], novel=[])
    data = striped_data()
    runs = {}
    for heads in ("current", "all"):
        config = CollectiveTrainingConfig.for_preset(
            "tiny", outlier_exposure=1.0, outlier_exposure_heads=heads, **common
        )
        runs[heads] = train_collective(config, tmp_path / heads, data=data, resume=False, progress=False)
    plain = CollectiveTrainingConfig.for_preset("tiny", **common)
    runs["off"] = train_collective(plain, tmp_path / "off", data=data, resume=False, progress=False)
    current = runs["current"].report["tasks"]
    assert "epoch_outlier_exposure_losses" not in runs["off"].report["tasks"][1]
    assert current[0]["epoch_outlier_exposure_losses"] == [0.0, 0.0]  # nothing replayed during the first task
    assert all(v > 0 for v in current[1]["epoch_outlier_exposure_losses"])
    first_head = {name: run.model.heads[0].weight for name, run in runs.items()}
    assert torch.equal(first_head["current"], first_head["off"])  # old heads stay as they were learnt...
    assert not torch.equal(first_head["all"], first_head["off"])  # ...unless every head is trained
    with pytest.raises(ConfigError, match="turn replay on"):
        CollectiveTrainingConfig.for_preset("tiny", outlier_exposure=1.0, replay_per_class=0)
    with pytest.raises(ConfigError, match="outlier_exposure_heads"):
        CollectiveTrainingConfig.for_preset("tiny", outlier_exposure=1.0, outlier_exposure_heads="some")


def test_task_accuracy_plot_is_a_png_and_needs_a_variant(tmp_path):
    from learngene_hf.plots.memory import plot_task_accuracy

    path = plot_task_accuracy(
        {"no control": {"after": [0.9, 0.8], "end": [0.3, 0.8]}, "replay": {"end": [0.7, 0.8]}}, tmp_path / "acc.png"
    )
    assert open(path, "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="at least one variant"):
        plot_task_accuracy({}, tmp_path / "none.png")


def test_open_world_statistics_from_replay_are_the_exemplar_means_under_the_final_model(tmp_path):
    from safetensors.torch import load_file

    from learngene_hf.data import normalize
    from learngene_hf.training.openworld import ClassGaussians, FeatureBank

    with pytest.raises(ConfigError, match="open_world_from_replay"):
        CollectiveTrainingConfig.for_preset("tiny", open_world_from_replay=True)
    config = CollectiveTrainingConfig.for_preset(
        "tiny",
        num_tasks=3,
        epochs_per_task=1,
        train_per_class=20,
        test_per_class=10,
        growth="none",
        replay_per_class=4,
        open_world_from_replay=True,
        record_gradients=False,
        base=list(range(15)),
        open_world=[],
        novel=[],
    )
    run = train_collective(config, tmp_path / "run", data=striped_data(), resume=False, progress=False)
    assert run.report["forgetting_control"]["open_world_from_replay"] is True
    assert set(run.report["mean_open_world_aurocs"]) == {"energy", "msp", "maxlogit", "mahalanobis", "knn"}
    memory = ReplayMemory(4)
    memory.load_state_tensors(load_file(str(tmp_path / "run" / "checkpoint" / "replay.safetensors")))
    saved = ClassGaussians()
    saved.load_state_tensors(load_file(str(tmp_path / "run" / "open_world.safetensors")))
    assert len(saved) == 3 * 5 and saved.count == len(memory) == 3 * 5 * 4  # every exemplar, no full task
    with torch.no_grad():
        features = run.model.eval().embed(normalize(memory.images))
    for row, (task, label) in enumerate([(t, c) for t in range(3) for c in range(5)]):
        rows = (memory.tasks == task) & (memory.labels == label)
        assert torch.allclose(saved.means[row], features[rows].mean(0), atol=1e-4)
    # the knn bank is the same exemplars (4 per class < 50 kept), normalised, one component per (task, class)
    bank = FeatureBank(50)
    bank.load_state_tensors(load_file(str(tmp_path / "run" / "open_world.safetensors")))
    assert len(bank) == len(memory) and bank.num_components == 3 * 5
    order = torch.argsort(memory.tasks * 5 + memory.labels, stable=True)
    torch.testing.assert_close(bank.features, torch.nn.functional.normalize(features[order], dim=1), atol=1e-4, rtol=0)


def test_a_trained_model_reads_its_open_world_score_with_the_score_its_run_reported(tmp_path):
    """The saved model's open_world_score uses the run's open_world_method by default and gives the
    same numbers as the trainer's scores of that name."""
    from learngene_hf.models.collective import CollectiveModel
    from learngene_hf.training.loading import model_inputs
    from learngene_hf.training.openworld import unknown_scores

    train, test = striped_data()
    config = CollectiveTrainingConfig.for_preset(
        "tiny", num_tasks=2, epochs_per_task=2, lr=0.03, train_per_class=20, test_per_class=10, growth="none",
        replay_per_class=5, outlier_exposure=0.5, record_gradients=False, open_world_method="maxlogit",
        base=list(range(10)), open_world=[], novel=[],
    )  # fmt: skip
    run = train_collective(config, tmp_path / "run", data=(train, test), resume=False, progress=False)
    assert run.report["open_world_method"] == "maxlogit"
    assert run.report["mean_open_world_auroc"] == run.report["mean_open_world_aurocs"]["maxlogit"]
    model = CollectiveModel.from_pretrained(tmp_path / "run" / "model").eval()
    assert model.config.open_world_score == "maxlogit"
    images = model_inputs(test.images[:12])
    with torch.no_grad():
        expected = unknown_scores(model, images)["maxlogit"]
    torch.testing.assert_close(model.open_world_score(images), expected)
    assert not torch.equal(model.open_world_score(images, method="energy"), expected)
