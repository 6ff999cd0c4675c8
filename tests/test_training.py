"""Collective training end to end: outputs, growth, resume, load_run, and a real 2-process launch."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import free_port
from helpers import color_data

from learngene_hf.errors import ArtifactError, ConfigError
from learngene_hf.training.config import CollectiveTrainingConfig
from learngene_hf.training.growth import plan_growth
from learngene_hf.training.record import GradientRecord
from learngene_hf.training.run import load_run
from learngene_hf.training.trainer import train_collective

REPO = Path(__file__).resolve().parents[1]


def _config(**overrides) -> CollectiveTrainingConfig:
    values = dict(
        num_tasks=3,
        epochs_per_task=2,
        train_per_class=20,
        test_per_class=10,
        base=list(range(10)),
        open_world=[10, 11],
        novel=[],
    )
    values.update(overrides)
    return CollectiveTrainingConfig.for_preset("tiny", **values)


def test_three_task_run_writes_every_output_and_reloads(tmp_path):
    run = train_collective(_config(), tmp_path / "run", data=color_data(), progress=False)
    folder = tmp_path / "run"
    for name in (
        "model/config.json",
        "model/model.safetensors",
        "gradient_record.json",
        "report.json",
        "report.md",
        "heatmap.png",
        "run_config.json",
        "checkpoint/state.json",
    ):
        assert (folder / name).is_file(), name
    assert (folder / "heatmap.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    report = json.loads((folder / "report.json").read_text())
    assert report["complete"] and report["finished_tasks"] == 3
    assert [len(c) for c in report["task_stream"]] == [5, 5, 5]
    assert report["class_split"]["open_world"] == [10, 11]
    assert report["tasks"][0]["open_world_auroc"] is None
    assert all(0.0 <= t["open_world_auroc"] <= 1.0 for t in report["tasks"][1:])
    assert all(0.0 <= t["accuracy_after"] <= 1.0 and 0.0 <= t["accuracy_end"] <= 1.0 for t in report["tasks"])
    assert report["images_per_second"] > 0
    assert report["dataset"]["num_classes"] == 12
    names, tasks, array = run.record.matrix("frac_above", threshold=5e-10)
    assert tasks == [0, 1, 2] and array.shape == (4, 3)
    assert len(run.record.epochs) == 3 * 2

    again = load_run(folder)
    assert not again.model.training
    assert again.config == run.config
    assert again.split.open_world == [10, 11]
    assert again.record.to_dict() == run.record.to_dict()
    for a, b in zip(again.model.state_dict().values(), run.model.state_dict().values()):
        torch.testing.assert_close(a, b)


def test_paper_growth_plan_doubles_the_last_three_layers_round_robin():
    config = CollectiveTrainingConfig.for_preset("paper", num_tasks=50)
    widths = [64, 64, 64, 64, 128, 128, 128, 256, 256, 256, 256, 256, 256]
    names = [f"conv{i}" for i in range(13)]
    events = plan_growth(config, names, widths)
    assert [e["task"] for e in events] == list(range(1, 21))
    assert [e["layer"] for e in events[:4]] == ["conv10", "conv11", "conv12", "conv10"]
    final = {e["layer"]: e["width"] for e in events}
    assert final == {"conv10": 512, "conv11": 512, "conv12": 512}
    short = plan_growth(CollectiveTrainingConfig.for_preset("paper", num_tasks=4), names, widths)
    assert [e["task"] for e in short] == [1, 2, 3]
    assert {e["layer"]: e["width"] for e in short} == {"conv10": 512, "conv11": 512, "conv12": 512}


def test_growth_happens_during_training_and_is_logged(tmp_path):
    growth = [{"task": 1, "op": "widen", "layer": "conv3", "width": 24}, {"task": 2, "op": "deepen", "layer": "conv1"}]
    run = train_collective(_config(growth=growth), tmp_path / "run", data=color_data(), progress=False)
    log = run.model.config.growth_log
    assert [(e["op"], e["name"], e["old_width"], e["new_width"], e["task"]) for e in log] == [
        ("widen", "conv3", 16, 24, 1),
        ("deepen", "conv4", None, 8, 2),
    ]
    assert run.model.config.widths == [8, 8, 8, 16, 24]
    assert run.record.layer_names == ["conv0", "conv1", "conv4", "conv2", "conv3"]
    _, _, array = run.record.matrix("mean_abs")
    assert torch.isnan(torch.tensor(array[2, :2])).all() and not torch.isnan(torch.tensor(array[2, 2]))
    assert run.report["tasks"][1]["growth"][0]["new_width"] == 24
    assert load_run(tmp_path / "run").model.config.widths == [8, 8, 8, 16, 24]


def test_interrupted_then_resumed_run_equals_uninterrupted(tmp_path):
    data = color_data()
    config = _config(ewc_weight=5.0, growth=[{"task": 2, "op": "widen", "layer": "conv2", "width": 12}])
    full = train_collective(config, tmp_path / "full", data=data, progress=False)

    stopped = train_collective(
        _config(ewc_weight=5.0, stop_after_task=2, growth=[{"task": 2, "op": "widen", "layer": "conv2", "width": 12}]),
        tmp_path / "cut",
        data=data,
        progress=False,
    )
    assert stopped.report["finished_tasks"] == 2 and not stopped.report["complete"]
    state = json.loads((tmp_path / "cut" / "checkpoint" / "state.json").read_text())
    assert state["next_task"] == 2
    resumed = train_collective(config, tmp_path / "cut", data=data, progress=False)
    assert resumed.report["complete"]
    for (name, a), b in zip(full.model.state_dict().items(), resumed.model.state_dict().values()):
        torch.testing.assert_close(a, b, msg=name)
    assert resumed.record.to_dict() == full.record.to_dict()
    keep = ("accuracy_after", "accuracy_end", "open_world_auroc", "open_world_aurocs", "epoch_losses")
    assert [{k: t[k] for k in keep} for t in resumed.report["tasks"]] == [
        {k: t[k] for k in keep} for t in full.report["tasks"]
    ]
    assert not list((tmp_path / "cut").glob(".*tmp*"))
    # the knn bank is in the checkpoint and the run folder: the resumed run kept the first two tasks' rows
    from safetensors.torch import load_file

    assert all("knn" in t["open_world_aurocs"] for t in full.report["tasks"][1:])
    banks = {run: load_file(str(tmp_path / run / "open_world.safetensors")) for run in ("full", "cut")}
    assert banks["full"]["knn/bank"].shape == (3 * 5 * 20, full.model.neck_width)  # 3 tasks x 5 classes x all 20 images
    assert banks["full"]["knn/components"].unique().tolist() == list(range(15))
    for key in ("knn/bank", "knn/components", "gaussians/means"):
        torch.testing.assert_close(banks["cut"][key], banks["full"][key], msg=key)


def test_resume_with_a_different_config_is_refused(tmp_path):
    data = color_data()
    train_collective(_config(stop_after_task=1), tmp_path / "run", data=data, progress=False)
    with pytest.raises(ConfigError, match="different config"):
        train_collective(_config(lr=0.5), tmp_path / "run", data=data, progress=False)


def test_a_checkpoint_from_before_a_new_config_field_resumes_with_its_default(tmp_path):
    data = color_data()
    train_collective(_config(stop_after_task=1), tmp_path / "run", data=data, progress=False)
    state_file = tmp_path / "run" / "checkpoint" / "state.json"
    state = json.loads(state_file.read_text())
    del state["config"]["open_world_knn_k"]  # as written by a version without the field
    state_file.write_text(json.dumps(state))
    run = train_collective(_config(), tmp_path / "run", data=data, progress=False)
    assert run.report["finished_tasks"] == run.report["num_tasks"]
    state["config"]["lr"] = 0.5  # a field that differs is still refused
    state_file.write_text(json.dumps(state))
    (tmp_path / "run" / "report.json").unlink()
    with pytest.raises(ConfigError, match="lr: checkpoint 0.5"):
        train_collective(_config(), tmp_path / "run", data=data, progress=False)


def test_load_run_reports_missing_and_corrupt_files(tmp_path):
    with pytest.raises(ArtifactError, match="does not exist"):
        load_run(tmp_path / "nowhere")
    train_collective(_config(num_tasks=2, epochs_per_task=1), tmp_path / "run", data=color_data(), progress=False)
    (tmp_path / "run" / "report.json").write_text("{truncated")
    with pytest.raises(ArtifactError, match="report.json.*train_collective"):
        load_run(tmp_path / "run")
    os.remove(tmp_path / "run" / "gradient_record.json")
    with pytest.raises(ArtifactError, match="gradient_record.json is missing"):
        load_run(tmp_path / "run")


def test_config_round_trip_and_clear_errors():
    config = _config(growth=[{"task": 1, "op": "deepen", "layer": "conv0"}])
    assert CollectiveTrainingConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    with pytest.raises(ConfigError, match="ways must be at least 2"):
        _config(ways=1)
    with pytest.raises(ConfigError, match="mixed_precision"):
        _config(mixed_precision="fp8")
    with pytest.raises(ConfigError, match="Unknown training config keys"):
        CollectiveTrainingConfig.from_dict({"num_taks": 3})
    with pytest.raises(ConfigError, match="task must be in"):
        plan_growth(_config(growth=[{"task": 9, "op": "widen", "layer": "conv0", "width": 9}]), ["conv0"], [8])


@pytest.mark.skipif(
    shutil.which("accelerate") is None and not (Path(sys.executable).parent / "accelerate").exists(),
    reason="the accelerate launcher is not installed",
)
def test_two_cpu_processes_match_a_one_process_run(tmp_path):
    """2 processes x batch 15 see the same global batches as 1 process x batch 30: the record's
    values and the trained weights agree within what per-process BatchNorm statistics explain."""
    import numpy as np
    from safetensors.torch import load_file

    launcher = str(Path(sys.executable).parent / "accelerate")
    common = [
        "--preset",
        "tiny",
        "--num-tasks",
        "3",
        "--epochs-per-task",
        "1",
        "--images-per-class",
        "12",
        "--test-per-class",
        "6",
        "--no-progress",
        "--seed",
        "3",
    ]
    env = dict(
        os.environ,
        ACCELERATE_USE_CPU="1",
        LEARNGENE_HF_CACHE=str(tmp_path / "cache"),
        PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""),
    )
    script = str(REPO / "examples" / "train_collective.py")
    two = subprocess.run(
        [
            launcher,
            "launch",
            "--multi_gpu",
            "--num_processes",
            "2",
            "--num_machines",
            "1",
            "--main_process_port",
            str(free_port()),
            "--mixed_precision",
            "no",
            "--dynamo_backend",
            "no",
            script,
            "--output-dir",
            str(tmp_path / "two"),
            "--batch-size",
            "15",
            *common,
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert two.returncode == 0, two.stderr[-3000:]
    one = subprocess.run(
        [sys.executable, script, "--output-dir", str(tmp_path / "one"), "--batch-size", "30", *common],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert one.returncode == 0, one.stderr[-3000:]
    # the same run with a vanishing learning rate: the starting weights (growth included), to size the updates
    start = subprocess.run(
        [
            sys.executable,
            script,
            "--output-dir",
            str(tmp_path / "start"),
            "--batch-size",
            "30",
            "--lr",
            "1e-12",
            *common,
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert start.returncode == 0, start.stderr[-3000:]
    report_two = json.loads((tmp_path / "two" / "report.json").read_text())
    report_one = json.loads((tmp_path / "one" / "report.json").read_text())
    assert report_two["num_processes"] == 2 and report_one["num_processes"] == 1
    assert report_two["task_stream"] == report_one["task_stream"]
    assert (
        [t["train_images_seen"] for t in report_two["tasks"]]
        == [t["train_images_seen"] for t in report_one["tasks"]]
        == [60] * 3
    )
    rec_two = GradientRecord.load(tmp_path / "two" / "gradient_record.json")
    rec_one = GradientRecord.load(tmp_path / "one" / "gradient_record.json")
    names2, tasks2, above2 = rec_two.matrix("frac_above", 5e-10)
    names1, tasks1, above1 = rec_one.matrix("frac_above", 5e-10)
    assert (names2, tasks2) == (names1, tasks1) and np.array_equal(above2, above1)
    for stat in ("rms", "rel_weight_change"):  # measured: at most 10% apart (per-process BatchNorm)
        _, _, a2 = rec_two.matrix(stat, None)
        _, _, a1 = rec_one.matrix(stat, None)
        assert (a1 > 0).all(), stat
        np.testing.assert_allclose(a2, a1, rtol=0.25, err_msg=stat)
    weights = {run: load_file(tmp_path / run / "model" / "model.safetensors") for run in ("two", "one", "start")}
    trained = [k for k in weights["one"] if not k.endswith(("running_mean", "running_var", "num_batches_tracked"))]
    assert set(weights["two"]) == set(weights["one"])

    def flat(run: str, minus: str) -> torch.Tensor:
        return torch.cat([(weights[run][k] - weights[minus][k]).flatten() for k in trained])

    update = flat("one", "start").norm()
    assert update > 0
    # measured: the runs differ by 15% of the update a run makes (a 2-process run that did not
    # train would differ by the whole update)
    assert flat("two", "one").norm() < 0.35 * update


def test_resume_with_replay_and_frozen_batchnorm_equals_uninterrupted(tmp_path):
    data = color_data()
    options = dict(
        replay_per_class=3,
        replay_batch_size=8,
        bn_freeze_after=1,
        ewc_weight=5.0,
        growth=[{"task": 2, "op": "widen", "layer": "conv2", "width": 12}],
    )
    full = train_collective(_config(**options), tmp_path / "full", data=data, progress=False)
    train_collective(_config(stop_after_task=2, **options), tmp_path / "cut", data=data, progress=False)
    assert (tmp_path / "cut" / "checkpoint" / "replay.safetensors").is_file()
    assert (tmp_path / "cut" / "checkpoint" / "open_world.safetensors").is_file()
    resumed = train_collective(_config(**options), tmp_path / "cut", data=data, progress=False)
    for (name, a), b in zip(full.model.state_dict().items(), resumed.model.state_dict().values()):
        torch.testing.assert_close(a, b, msg=name)
    keep = ("accuracy_after", "accuracy_end", "open_world_aurocs", "epoch_losses", "epoch_replay_losses")
    assert [{k: t[k] for k in keep} for t in resumed.report["tasks"]] == [
        {k: t[k] for k in keep} for t in full.report["tasks"]
    ]
    assert (tmp_path / "cut" / "open_world.safetensors").is_file()
    assert set(full.report["mean_open_world_aurocs"]) == {"energy", "msp", "maxlogit", "mahalanobis", "knn"}


def test_frozen_batchnorm_statistics_stop_following_later_tasks(tmp_path):
    data = color_data()

    def stats(run):
        return {k: v for k, v in run.model.state_dict().items() if "running_" in k}

    first = train_collective(_config(growth="none", stop_after_task=1), tmp_path / "first", data=data, progress=False)
    frozen = train_collective(_config(growth="none", bn_freeze_after=1), tmp_path / "frozen", data=data, progress=False)
    moving = train_collective(_config(growth="none"), tmp_path / "moving", data=data, progress=False)
    for name, value in stats(first).items():
        torch.testing.assert_close(stats(frozen)[name], value, msg=name)
        assert not torch.equal(stats(moving)[name], value), name
    assert [t["batchnorm_frozen"] for t in frozen.report["tasks"]] == [False, True, True]
    assert frozen.report["tasks"][0]["epoch_losses"] == moving.report["tasks"][0]["epoch_losses"]
