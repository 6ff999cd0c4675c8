"""Bad input a new user meets first: each case gets one clear error (or a warning) before any work."""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import stat
import subprocess
import sys
from functools import partial
from pathlib import Path

import helpers
import pytest
import torch
from helpers import SPLIT

from learngene_hf.artifact.learngene import Learngene
from learngene_hf.cli import run_script
from learngene_hf.data import load_tensors, sample_episodes
from learngene_hf.errors import ArtifactError, ConfigError, DataError
from learngene_hf.fewshot.compare import compare_methods
from learngene_hf.fewshot.config import FewShotConfig
from learngene_hf.fewshot.loading import load_fewshot_data
from learngene_hf.fewshot.runner import learngene_probe
from learngene_hf.fewshot.tuning import tuning_episodes
from learngene_hf.training.config import CollectiveTrainingConfig
from learngene_hf.training.run import load_run
from learngene_hf.training.trainer import train_collective

REPO = Path(__file__).resolve().parents[1]
EMBEDDED = {**helpers.EMBEDDED, "test_per_class": 4}
#: The shared tiny learngene (layers 2-3), its task stream on EMBEDDED.
tiny_learngene = partial(helpers.tiny_learngene, embedded=EMBEDDED)


def example(name: str):
    spec = importlib.util.spec_from_file_location(f"example_{name}", REPO / "examples" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def tiny_config(**overrides) -> CollectiveTrainingConfig:
    values = dict(
        preset="tiny",
        num_tasks=2,
        ways=3,
        epochs_per_task=1,
        batch_size=16,
        growth="none",
        image_size=16,
        embedded={"num_classes": 10, "train_per_class": 12, "test_per_class": 4},
        base="0-5",
        open_world="6-7",
        novel="8-9",
    )
    values.update(overrides)
    return CollectiveTrainingConfig(**values)


@pytest.fixture(scope="module")
def data():
    return load_tensors(None, **EMBEDDED)[0]


@pytest.fixture(scope="module")
def learngene_dir(tmp_path_factory):
    return tiny_learngene().save_pretrained(tmp_path_factory.mktemp("lg") / "learngene")


@pytest.fixture(scope="module")
def stopped_run(tmp_path_factory):
    """A 2-task run stopped after its first task (--stop-after-task 1)."""
    run_dir = tmp_path_factory.mktemp("stopped") / "run"
    train_collective(tiny_config(stop_after_task=1), run_dir, progress=False)
    return run_dir


def run_example(name: str, argv: list[str], capsys) -> tuple[int, str]:
    with pytest.raises(SystemExit) as info:
        run_script(example(name).main, argv)
    return info.value.code, capsys.readouterr().err


# ---------------------------------------------------------------------------------------- few-shot
def test_one_way_episodes_are_refused_before_any_work(learngene_dir, tmp_path, capsys):
    code, err = run_example(
        "few_shot", ["--learngene", str(learngene_dir), "--ways", "1", "--output-dir", str(tmp_path)], capsys
    )
    assert code == 2 and err.startswith("error: ways must be at least 2") and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "results.json").exists()


def test_zero_epochs_of_few_shot_training_are_refused(learngene_dir, data, tmp_path, capsys):
    episodes = sample_episodes(data, SPLIT["novel"], 1, ways=3, shots=2, queries=2)
    with pytest.raises(ConfigError, match="trains nothing"):
        compare_methods(tiny_learngene(), episodes, FewShotConfig(epochs=0, device="cpu"), progress=False)
    code, err = run_example(
        "few_shot",
        [
            "--learngene",
            str(learngene_dir),
            "--epochs",
            "0",
            "--episodes",
            "1",
            "--ways",
            "2",
            "--shots",
            "1",
            "--queries",
            "1",
            "--no-progress",
            "--output-dir",
            str(tmp_path),
        ],
        capsys,
    )
    assert code == 2 and "epochs=0 trains nothing" in err
    assert not (tmp_path / "results.json").exists()


def test_novel_classes_the_collective_model_trained_on_are_refused_unless_allowed():
    lg = tiny_learngene()
    with pytest.raises(DataError, match=r"novel classes \[1, 2\] are base classes .*--allow-base-classes"):
        load_fewshot_data(lg, novel_classes=[1, 2, 9])
    with pytest.raises(DataError, match=r"open-world classes \[4\] are base classes"):
        load_fewshot_data(lg, open_world_classes=[4, 5])
    _, novel, _ = load_fewshot_data(lg, novel_classes=[1, 2, 9], allow_base_classes=True)
    assert novel == [1, 2, 9]
    _, novel, open_world = load_fewshot_data(lg)  # the learngene's own split is fine
    assert (novel, open_world) == (SPLIT["novel"], SPLIT["open_world"])


def test_few_shot_script_names_base_classes_in_one_line(learngene_dir, tmp_path, capsys):
    code, err = run_example(
        "few_shot",
        ["--learngene", str(learngene_dir), "--novel-classes", "0-2", "--no-progress", "--output-dir", str(tmp_path)],
        capsys,
    )
    assert code == 2 and "[0, 1, 2] are base classes" in err and len(err.strip().splitlines()) == 1


def test_lr_tuning_caps_its_ways_at_the_open_world_classes_and_names_them(data):
    episodes = tuning_episodes(data, [5, 6], 2, ways=3, shots=2, queries=2)
    assert [len(ep.classes) for ep in episodes] == [2, 2] and all(set(ep.classes) == {5, 6} for ep in episodes)
    with pytest.raises(ConfigError, match=r"at least 2 open-world classes, the split has 1 \(\[5\]\)"):
        tuning_episodes(data, [5], 2, ways=3, shots=2, queries=2)
    with pytest.raises(ConfigError, match="open-world classes are only 2") as info:
        sample_episodes(data, [5, 6], 1, ways=3, shots=2, queries=2, role="open_world")
    assert "novel" not in str(info.value)


# ---------------------------------------------------------------------------------------- training
def test_growth_naming_an_unknown_layer_is_refused_before_task_0(tmp_path):
    bad = [{"task": 1, "op": "widen", "layer": "conv9", "width": 64}]
    with pytest.raises(ConfigError, match=r"names layer 'conv9', which the model will not have at task 1"):
        train_collective(tiny_config(growth=bad), tmp_path / "run", progress=False)
    assert not (tmp_path / "run" / "checkpoint").exists()
    # a layer that an earlier deepen event creates is fine
    from learngene_hf.training.growth import plan_growth

    ok = [{"task": 0, "op": "deepen", "layer": "conv1"}, {"task": 1, "op": "widen", "layer": "conv4", "width": 64}]
    assert len(plan_growth(tiny_config(growth=ok), ["conv0", "conv1", "conv2", "conv3"], [8, 16, 32, 32])) == 2


def test_a_refused_resume_names_the_fields_that_differ(stopped_run):
    with pytest.raises(ConfigError, match=r"\(lr: checkpoint 0\.001, now 0\.1; seed: checkpoint 0, now 3\)"):
        train_collective(tiny_config(stop_after_task=1, lr=0.1, seed=3), stopped_run, progress=False)


def test_a_corrupt_checkpoint_points_at_no_resume(stopped_run, tmp_path):
    import shutil

    run_dir = tmp_path / "run"
    shutil.copytree(stopped_run, run_dir)
    (run_dir / "checkpoint" / "state.json").write_text("{ not json")
    with pytest.raises(ArtifactError, match=r"cannot be read .*--no-resume"):
        train_collective(tiny_config(), run_dir, progress=False)
    (run_dir / "checkpoint" / "state.json").write_text(json.dumps({"config": tiny_config().to_dict()}))
    with pytest.raises(ArtifactError, match=r"corrupt or incomplete .*--no-resume"):
        train_collective(tiny_config(), run_dir, progress=False)


def test_a_resumed_run_says_where_it_resumes(stopped_run, tmp_path, caplog):
    import shutil

    run_dir = tmp_path / "run"
    shutil.copytree(stopped_run, run_dir)
    with caplog.at_level(logging.INFO, logger="learngene_hf"):
        train_collective(tiny_config(), run_dir, progress=False)
    assert "resuming after task 1 of 2" in caplog.text


# ---------------------------------------------------------------------------------------- extraction
def test_extracting_from_a_learngene_folder_says_it_is_a_learngene(learngene_dir, tmp_path, capsys):
    with pytest.raises(ArtifactError, match="is a learngene .* not a collective run"):
        load_run(learngene_dir)
    code, err = run_example("extract_learngene", [str(learngene_dir), "--output-dir", str(tmp_path / "out")], capsys)
    assert code == 2 and "is a learngene" in err and len(err.strip().splitlines()) == 1


def test_extracting_from_a_stopped_run_warns_and_the_card_says_what_was_learnt(stopped_run, tmp_path, caplog):
    from learngene_hf.selection.inheritor import Inheritor

    with caplog.at_level(logging.WARNING, logger="learngene_hf"):
        inheritor = Inheritor.from_run(stopped_run, load_probe_data=False)
    assert "stopped after 1 of its 2 planned tasks" in caplog.text
    stream = inheritor.task_stream
    report = json.loads((stopped_run / "report.json").read_text())
    assert stream["num_tasks"] == 1 and stream["planned_tasks"] == 2
    assert stream["classes"] == sorted(report["task_stream"][0]) and len(stream["classes"]) == 3
    inheritor.select("paper", k=2)
    card = (inheritor.save_pretrained(tmp_path / "lg", plot=False) / "README.md").read_text()
    assert "1 tasks (stopped early: 2 were planned)" in card and "(3 classes)" in card


# ---------------------------------------------------------------------------------------- files
@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_saved_files_follow_the_umask(umask, tmp_path):
    old = os.umask(umask)
    try:
        folder = tiny_learngene().save_pretrained(tmp_path / "lg")
        run = train_collective(tiny_config(num_tasks=1, ways=2), tmp_path / "run", progress=False)
    finally:
        os.umask(old)
    expected = 0o666 & ~umask
    for path in [
        folder / "learngene.safetensors",
        folder / "learngene_config.json",
        folder / "README.md",
        run.run_dir / "model" / "model.safetensors",
        run.run_dir / "model" / "config.json",
        run.run_dir / "report.json",
        run.run_dir / "heatmap.png",
        run.run_dir / "checkpoint" / "model" / "model.safetensors",
    ]:
        assert stat.S_IMODE(path.stat().st_mode) == expected, path


# ---------------------------------------------------------------------------------------- accelerate
def test_train_collective_runs_in_the_precision_accelerate_launch_chose(tmp_path):
    common = [
        str(REPO / "examples" / "train_collective.py"),
        "--preset",
        "tiny",
        "--num-tasks",
        "1",
        "--ways",
        "2",
        "--images-per-class",
        "8",
        "--test-per-class",
        "4",
        "--growth",
        "none",
        "--image-size",
        "16",
        "--embedded",
        '{"num_classes": 6}',
        "--no-progress",
    ]
    env = {
        **os.environ,
        "ACCELERATE_MIXED_PRECISION": "bf16",
        "ACCELERATE_USE_CPU": "1",
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""),
    }
    launched = subprocess.run(
        [sys.executable, *common, "--output-dir", str(tmp_path / "bf16")],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert launched.returncode == 0, launched.stderr[-3000:]
    assert json.loads((tmp_path / "bf16" / "report.json").read_text())["mixed_precision"] == "bf16"
    flag = subprocess.run(
        [sys.executable, *common, "--output-dir", str(tmp_path / "flag"), "--mixed-precision", "no"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert flag.returncode == 0, flag.stderr[-3000:]
    assert json.loads((tmp_path / "flag" / "report.json").read_text())["mixed_precision"] == "no"  # the flag wins


# ---------------------------------------------------------------------------------------- pictures and stage lines
def test_heat_map_colour_bar_labels_read_without_an_offset():
    from learngene_hf.plots.heatmap import gradient_heatmap_figure
    from learngene_hf.training.record import GradientRecord

    names = ["conv0", "conv1", "conv2"]
    epochs = [
        {
            "task": t,
            "epoch": 0,
            "batches": 1,
            "layers": {
                n: {"frac_above": [1.0 - (i + t) * 2e-6], "mean_abs": 1e-3, "rms": 1e-3} for i, n in enumerate(names)
            },
        }
        for t in range(3)
    ]
    record = GradientRecord([5e-10], names, epochs, {str(t): {n: 0.1 for n in names} for t in range(3)})
    fig = gradient_heatmap_figure(record, "frac_above", 5e-10)
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig).draw()
    bar = fig.axes[1]
    labels = [t.get_text() for t in bar.get_yticklabels() if t.get_text()]
    assert bar.yaxis.get_offset_text().get_text() == ""
    assert len(labels) >= 2 and len(set(labels)) == len(labels), labels
    import re

    assert all(re.fullmatch(r"99\.999\d+%|100\.0+%", label) for label in labels), labels


def test_lr_tuning_and_the_episode_bar_name_the_stage_method_and_shots(data, caplog):
    from learngene_hf.fewshot.runner import run_episodes

    lg = tiny_learngene()
    episodes = sample_episodes(data, SPLIT["novel"], 1, ways=2, shots=1, queries=1)
    tune = tuning_episodes(data, SPLIT["open_world"], 1, ways=2, shots=1, queries=1)
    with caplog.at_level(logging.INFO, logger="learngene_hf"):
        compare_methods(
            lg,
            episodes,
            FewShotConfig(epochs=1, device="cpu"),
            tune_lr_episodes=tune,
            lr_grid=[0.01, 0.02],
            widen=0,
            progress=False,
        )
    assert "lr tuning 1/2: learngene, 2-way 1-shot, lr 0.01, 0.02 on 1 open-world episodes" in caplog.text
    assert "lr tuning 2/2: scratch" in caplog.text
    import learngene_hf.fewshot.runner as runner
    import learngene_hf.fewshot.train as fewshot

    seen = []
    original = runner._progress
    runner._progress = lambda iterable, enabled, total, desc: seen.append(desc) or iterable
    try:
        run_episodes(
            [("scratch", lambda n: fewshot.build_individual(None, n, architecture_of=lg), 0.01)],
            episodes,
            FewShotConfig(epochs=1, device="cpu"),
            progress=True,
        )
    finally:
        runner._progress = original
    assert seen == ["few-shot 2-way 1-shot: scratch"]


def test_selection_probes_say_which_block_they_probe(stopped_run, caplog):
    from learngene_hf.selection.inheritor import Inheritor

    inheritor = Inheritor.from_run(stopped_run, probe=learngene_probe)
    with caplog.at_level(logging.INFO, logger="learngene_hf"):
        inheritor.select(
            k=2, probe_episodes=1, probe_epochs=1, probe_shots=1, probe_queries=1, probe_lrs=[0.05], max_fraction=None
        )
    assert "selection: probing layers 0-1 on 1 open-world 2-way 1-shot episodes, 1 epochs at lr 0.05" in caplog.text


FP16_RUN = """
import json, sys, torch
from accelerate import Accelerator
from learngene_hf.training.trainer import CollectiveTrainingConfig, train_collective

embedded = {"num_classes": 6, "train_per_class": 16, "test_per_class": 4}
config = CollectiveTrainingConfig(preset="tiny", num_tasks=1, ways=2, epochs_per_task=1, batch_size=8, growth="none",
                                  image_size=16, embedded=embedded,
                                  base="0-3", open_world="4", novel="5", mixed_precision=sys.argv[1])
accelerator = Accelerator(mixed_precision=sys.argv[1], cpu=True)
if sys.argv[1] == "fp16":  # accelerate only scales on GPUs; give the CPU run the GPU's loss scaling
    accelerator.native_amp = True
    accelerator.scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 12)
run = train_collective(config, sys.argv[2], accelerator=accelerator, progress=False)
names, tasks, rms = run.record.matrix("rms")
print(json.dumps(rms.tolist()))
"""


def test_under_fp16_the_gradient_record_reads_unscaled_gradients(tmp_path):
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""),
    }
    env.pop("ACCELERATE_MIXED_PRECISION", None)
    rms = {}
    for precision in ("no", "fp16"):
        done = subprocess.run(
            [sys.executable, "-c", FP16_RUN, precision, str(tmp_path / precision)],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, done.stderr[-3000:]
        rms[precision] = torch.tensor(json.loads(done.stdout.strip().splitlines()[-1]))
    ratio = rms["fp16"] / rms["no"]
    assert torch.isfinite(ratio).all() and (ratio - 1).abs().max() < 0.2, ratio  # scaled gradients would read 4096x


# ---------------------------------------------------------------------------------------- hub
def test_a_hub_that_does_not_answer_is_named_not_silently_replaced_by_the_cache(tmp_path, caplog, _quiet_hub_clients):
    from conftest import free_port

    from learngene_hf.errors import HubError
    from learngene_hf.testing.hub import local_hub

    cache = tmp_path / "hf_cache"
    with local_hub(tmp_path / "hub_root", tokens={"hf_me": "me"}, port=free_port()) as other:
        tiny_learngene().push_to_hub("me/cached-lg", endpoint=other, token="hf_me")
        pulled = Learngene.from_pretrained("me/cached-lg", endpoint=other, cache_dir=cache)  # now in the local cache
        sha = pulled.config.source["pulled"]["commit_sha"]
    # that server is gone
    with pytest.raises(HubError, match=rf"The Hub at {other} does not answer .*local_files_only=True"):
        Learngene.from_pretrained("me/cached-lg", endpoint=other, cache_dir=cache)  # an endpoint the user chose: fail
    # the default endpoint (HF_ENDPOINT, where no server runs outside the hub fixtures): the cache, and say so
    with caplog.at_level(logging.WARNING, logger="learngene_hf"):
        pulled = Learngene.from_pretrained("me/cached-lg", cache_dir=cache)
    assert pulled.config.source["pulled"]["commit_sha"] == sha
    assert "does not answer" in caplog.text and f"from the local cache, commit {sha}" in caplog.text
    with pytest.raises(HubError, match="does not answer, and me/other@main is not in the local cache"):
        Learngene.from_pretrained("me/other", cache_dir=cache)


# ------------------------------------------------------------------------------- one writer per run folder
HOLD_LOCK = """
import sys, time
from learngene_hf.training.run import run_lock
with run_lock(sys.argv[1]):
    print("locked", flush=True)
    time.sleep(120)
"""


def _hold_lock(run_dir: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(run_dir)], env=env, stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_a_second_run_on_a_folder_in_use_is_refused_naming_the_first_and_a_killed_ones_lock_is_taken_over(
    stopped_run, tmp_path, caplog
):
    import shutil

    run_dir = tmp_path / "run"
    shutil.copytree(stopped_run, run_dir)
    before = (run_dir / "run_config.json").read_bytes()
    holder = _hold_lock(run_dir)
    try:
        with pytest.raises(ArtifactError, match=rf"being written by another training run \(pid {holder.pid} on "):
            train_collective(tiny_config(num_tasks=4, seed=1), run_dir, progress=False)
        with pytest.raises(ArtifactError, match=rf"still being trained \(pid {holder.pid} "):
            load_run(run_dir)
        assert (run_dir / "run_config.json").read_bytes() == before  # nothing of the second run was written
    finally:
        holder.kill()
        holder.wait()
        holder.stdout.close()
    assert json.loads((run_dir / ".run.lock.json").read_text())["pid"] == holder.pid  # what a killed run leaves
    with caplog.at_level(logging.INFO, logger="learngene_hf"):
        train_collective(tiny_config(), run_dir, progress=False)
    assert f"pid {holder.pid}" in caplog.text and "ended without releasing it; taken over" in caplog.text
    assert not (run_dir / ".run.lock.json").exists()
    load_run(run_dir)


def test_an_output_dir_that_is_a_file_read_only_or_full_is_refused_before_training(tmp_path, monkeypatch):
    import errno

    (tmp_path / "file").write_text("x")
    with pytest.raises(ArtifactError, match=r"is a file, not a folder"):
        train_collective(tiny_config(), tmp_path / "file", progress=False)
    read_only = tmp_path / "read_only"
    read_only.mkdir()
    read_only.chmod(0o555)
    try:
        if not os.access(read_only, os.W_OK):  # (root may write anywhere)
            with pytest.raises(ArtifactError, match=r"Cannot write to the run folder .* \(permission denied"):
                train_collective(tiny_config(), read_only / "run", progress=False)
    finally:
        read_only.chmod(0o755)

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)  # the disk fills up
    with pytest.raises(ArtifactError, match=r"Cannot write to the run folder .* \(the disk is full\)"):
        train_collective(tiny_config(), tmp_path / "full", progress=False)
    assert list((tmp_path / "full").iterdir()) == []  # nothing half-written


# ------------------------------------------------------------------------------- values checked where they enter
def _rewrite_tensors(folder: Path, change) -> None:
    """Change the tensors of a saved learngene in place, metadata and checksum kept consistent (so
    only the values are wrong)."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    from learngene_hf.artifact.save_and_load import file_sha256

    path = folder / "learngene.safetensors"
    with safe_open(str(path), framework="pt") as handle:
        metadata, tensors = handle.metadata(), {k: handle.get_tensor(k) for k in handle.keys()}
    change(tensors)
    save_file(tensors, str(path), metadata=metadata)
    config = json.loads((folder / "learngene_config.json").read_text())
    config["checksums"] = {"learngene.safetensors": file_sha256(path)}
    (folder / "learngene_config.json").write_text(json.dumps(config))


def test_a_learngene_with_nan_weights_or_a_negative_bn_variance_is_refused(tmp_path, capsys):
    folder = tiny_learngene().save_pretrained(tmp_path / "nan")
    _rewrite_tensors(folder, lambda t: t["blocks.0.conv.weight"].fill_(float("nan")))
    with pytest.raises(ArtifactError, match=r"blocks.0.conv.weight holds \d+ non-finite values"):
        Learngene.from_pretrained(folder)
    code, err = run_example("few_shot", ["--learngene", str(folder), "--output-dir", str(tmp_path / "out")], capsys)
    assert code == 2 and "non-finite values" in err and len(err.strip().splitlines()) == 1
    folder = tiny_learngene().save_pretrained(tmp_path / "var")
    _rewrite_tensors(folder, lambda t: t["blocks.1.bn.running_var"].__setitem__(0, -1.0))
    with pytest.raises(ArtifactError, match=r"blocks.1.bn.running_var holds 1 negative BatchNorm variances"):
        Learngene.from_pretrained(folder)
    broken = tiny_learngene()
    broken.tensors["blocks.0.bn.weight"] = torch.full_like(broken.tensors["blocks.0.bn.weight"], float("inf"))
    with pytest.raises(ArtifactError, match="non-finite"):  # nor saved
        broken.save_pretrained(tmp_path / "inf")
    assert not (tmp_path / "inf" / "learngene.safetensors").exists()


def test_flipped_bytes_in_the_tensor_file_fail_the_checksum_and_files_without_one_still_load(tmp_path):
    folder = tiny_learngene().save_pretrained(tmp_path / "lg")
    config = json.loads((folder / "learngene_config.json").read_text())
    assert len(config["checksums"]["learngene.safetensors"]) == 64
    weights = folder / "learngene.safetensors"
    data = bytearray(weights.read_bytes())
    data[-3] ^= 0x01  # inside the last tensor's values: shapes and metadata are untouched
    weights.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match=r"does not match the sha256 recorded in learngene_config.json"):
        Learngene.from_pretrained(folder)
    old = tiny_learngene().save_pretrained(tmp_path / "old")
    config = json.loads((old / "learngene_config.json").read_text())
    del config["checksums"]  # as written before checksums existed
    (old / "learngene_config.json").write_text(json.dumps(config))
    assert Learngene.from_pretrained(old).config.num_layers == 2


@pytest.mark.parametrize(
    "edit, problem",
    [
        (lambda c: c.update(colour="blue"), r"unknown fields \['colour'\]"),
        (lambda c: c.update(in_channels="8"), r"field 'in_channels' is a string"),
        (lambda c: c.update(input_stride=True), r"field 'input_stride' is a boolean"),
        (lambda c: c["source"].update(pool=["no"] * len(c["source"]["pool"])), r"source.pool is \['no'"),
        (lambda c: c["layers"][0].update(pool="yes"), r"layer 0 has pool='yes', expected true or false"),
        (lambda c: c["preprocessing"].update(image_size=-16), r"preprocessing.image_size is -16"),
    ],
)
def test_a_learngene_config_with_unknown_fields_or_wrong_types_is_refused_naming_the_file(tmp_path, edit, problem):
    folder = tiny_learngene().save_pretrained(tmp_path / "lg")
    config = json.loads((folder / "learngene_config.json").read_text())
    edit(config)
    (folder / "learngene_config.json").write_text(json.dumps(config))
    with pytest.raises(ArtifactError, match=rf"learngene_config.json.*{problem}") as info:
        Learngene.from_pretrained(folder)
    assert str(folder) in str(info.value)


def test_every_learngene_config_field_has_a_declared_json_type():
    import dataclasses

    from learngene_hf.artifact.config import FIELD_TYPES, LearngeneConfig

    assert set(FIELD_TYPES) == {f.name for f in dataclasses.fields(LearngeneConfig)}


def test_a_checkpoint_holding_nan_weights_is_refused_on_resume(stopped_run, tmp_path):
    import shutil

    from safetensors.torch import load_file, save_file

    run_dir = tmp_path / "run"
    shutil.copytree(stopped_run, run_dir)
    weights = run_dir / "checkpoint" / "model" / "model.safetensors"
    tensors = load_file(str(weights))
    name = next(k for k in tensors if k.endswith("conv.weight"))
    tensors[name] = torch.full_like(tensors[name], float("nan"))
    save_file(tensors, str(weights), metadata={"format": "pt"})
    with pytest.raises(ArtifactError, match=r"corrupt or incomplete .*non-finite values.*run diverged"):
        train_collective(tiny_config(), run_dir, progress=False)


@pytest.mark.parametrize("flag, value", [("--lr", "inf"), ("--lr", "nan"), ("--lr-grid", "0.01,inf"), ("--lr", "-inf")])
def test_non_finite_numbers_on_the_command_line_are_refused(learngene_dir, tmp_path, capsys, flag, value):
    code, err = run_example("few_shot", ["--learngene", str(learngene_dir), f"{flag}={value}"], capsys)
    assert code == 2 and "finite" in err and len(err.strip().splitlines()) == 1


# ------------------------------------------------------------------------------- no surprise code, no leaked paths
def test_a_run_folder_naming_remote_code_loads_without_running_it(stopped_run, tmp_path):
    import shutil

    from learngene_hf.training.run import load_model

    folder = tmp_path / "model"
    shutil.copytree(stopped_run / "model", folder)
    marker = tmp_path / "code_ran"
    (folder / "evil.py").write_text(f"open({str(marker)!r}, 'w').write('ran')\n")
    config = json.loads((folder / "config.json").read_text())
    config["auto_map"] = {"AutoConfig": "evil.Config", "AutoModelForImageClassification": "evil.Model"}
    (folder / "config.json").write_text(json.dumps(config))
    model = load_model(folder)
    assert type(model).__module__.startswith("learngene_hf") and not marker.exists()


def test_a_pulled_learngene_never_makes_the_library_open_the_folder_its_config_names(hub, tmp_path):
    from huggingface_hub import HfApi

    from learngene_hf.fewshot.loading import collective_run_dir

    folder = tiny_learngene().save_pretrained(tmp_path / "lg")
    config = json.loads((folder / "learngene_config.json").read_text())
    config["source"]["run_dir"] = str(tmp_path / "someone_elses_run")  # a file crafted by the uploader
    (folder / "learngene_config.json").write_text(json.dumps(config))
    HfApi().create_repo("me/crafted")
    HfApi().upload_folder(repo_id="me/crafted", folder_path=folder)
    pulled = Learngene.from_pretrained("me/crafted", cache_dir=tmp_path / "cache")
    with pytest.raises(ConfigError, match=r"pulled from me/crafted: a folder named in a pulled file is never opened"):
        collective_run_dir(pulled)
    assert collective_run_dir(pulled, str(tmp_path / "mine")) == str(tmp_path / "mine")
    assert collective_run_dir(Learngene.from_pretrained(folder)) == str(tmp_path / "someone_elses_run")  # local: yes


def test_pushed_files_carry_no_absolute_local_path(hub, tmp_path):
    from huggingface_hub import hf_hub_download

    lg = tiny_learngene()
    lg.config.source["run_dir"] = str(tmp_path / "runs" / "collective")
    lg.config.task_stream["dataset"]["source"] = str(tmp_path / "data" / "my-images")
    lg.push_to_hub("me/portable")
    for name in ("learngene_config.json", "README.md"):
        text = Path(hf_hub_download("me/portable", name, cache_dir=tmp_path / "cache")).read_text()
        assert str(tmp_path) not in text, name
    pushed = json.loads(
        Path(hf_hub_download("me/portable", "learngene_config.json", cache_dir=tmp_path / "cache")).read_text()
    )
    assert pushed["source"]["run_name"] == "collective" and "run_dir" not in pushed["source"]
    assert pushed["task_stream"]["dataset"]["source"] == "my-images"
    local = json.loads((lg.save_pretrained(tmp_path / "lg") / "learngene_config.json").read_text())
    assert local["source"]["run_dir"] == str(tmp_path / "runs" / "collective")  # a local save keeps it


# ------------------------------------------------------------------------------- few-shot results survive
FEW_SHOT_TINY = ["--episodes", "2", "--ways", "2", "--shots", "1", "--queries", "1", "--steps", "2", "--no-progress"]


def test_an_unwritable_few_shot_output_folder_is_refused_before_any_training(
    learngene_dir, tmp_path, capsys, monkeypatch
):
    import errno

    import learngene_hf.fewshot.journal as journal

    monkeypatch.setattr(journal, "run_descendants", lambda *a, **k: pytest.fail("trained before checking the folder"))
    (tmp_path / "file").write_text("x")
    argv = ["--learngene", str(learngene_dir), *FEW_SHOT_TINY, "--output-dir"]
    code, err = run_example("few_shot", [*argv, str(tmp_path / "file")], capsys)
    assert code == 2 and "is a file, not a folder" in err and len(err.strip().splitlines()) == 1

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    code, err = run_example("few_shot", [*argv, str(tmp_path / "full")], capsys)
    assert code == 2 and "(the disk is full)" in err and len(err.strip().splitlines()) == 1


def test_few_shot_prints_its_table_when_the_late_write_fails_and_a_rerun_reads_the_episodes_back(
    learngene_dir, tmp_path, capsys, monkeypatch, caplog
):
    import errno

    import learngene_hf.fewshot.compare as compare
    import learngene_hf.fewshot.journal as journal

    out = tmp_path / "out"
    argv = ["--learngene", str(learngene_dir), *FEW_SHOT_TINY, "--no-plot", "--output-dir", str(out)]

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(out / "results.json"))

    with monkeypatch.context() as patch, pytest.raises(SystemExit) as info:
        patch.setattr(compare, "write_json_atomic", full)  # the disk fills up while the episodes train
        run_script(example("few_shot").main, argv)
    code, (printed, err) = info.value.code, capsys.readouterr()
    assert code == 2 and len(err.strip().splitlines()) == 1 and "| learngene |" in printed  # the table came first
    assert "The tables above were measured" in err and "the disk is full" in err and "episodes.jsonl" in err
    lines = [json.loads(line) for line in (out / "episodes.jsonl").read_text().splitlines()]
    assert {(r["method"], r["episode"]) for r in lines} == {(m, e) for m in ("learngene", "scratch") for e in (0, 1)}
    assert not (out / "results.json").exists()
    monkeypatch.setattr(journal, "run_descendants", lambda *a, **k: pytest.fail("trained again"))
    with caplog.at_level(logging.INFO, logger="learngene_hf"):
        code, err = run_example("few_shot", argv, capsys)
    assert code == 0, err
    assert "4 few-shot results were read back" in caplog.text
    results = json.loads((out / "results.json").read_text())
    by_key = {(r["method"], r["episode"]): r["accuracy"] for r in lines}
    assert results["methods"]["learngene"]["accuracies"] == [by_key[("learngene", 0)], by_key[("learngene", 1)]]


def test_a_stopped_comparison_keeps_what_it_measured_and_resumes_only_the_rest(data, tmp_path, monkeypatch):
    import learngene_hf.fewshot.journal as journal

    lg = tiny_learngene()
    episodes = sample_episodes(data, SPLIT["novel"], 3, ways=2, shots=1, queries=1)
    cfg = FewShotConfig(steps=2, device="cpu", stack_size=1)
    trained = []
    real = journal.run_descendants

    def stopped_after_two(jobs, cfg, progress=None):
        if len(trained) == 2:
            raise KeyboardInterrupt
        trained.extend(jobs)
        return real(jobs, cfg, progress=progress)

    monkeypatch.setattr(journal, "run_descendants", stopped_after_two)
    path = tmp_path / "episodes.jsonl"
    with pytest.raises(KeyboardInterrupt), journal.record_episodes(path, {"learngene": "tiny"}):
        compare_methods(lg, episodes, cfg, progress=False)
    assert len(path.read_text().splitlines()) == 2
    with path.open("a") as handle:
        handle.write('{"key": "cut sho')  # a line a kill left half-written
    monkeypatch.setattr(
        journal, "run_descendants", lambda jobs, cfg, progress=None: trained.extend(jobs) or real(jobs, cfg)
    )
    with journal.record_episodes(path, {"learngene": "tiny"}) as opened:
        resumed = compare_methods(lg, episodes, cfg, progress=False)
    assert opened.reused == 2 and len(trained) == 6  # 2 methods x 3 episodes, each trained once
    fresh = compare_methods(lg, episodes, cfg, progress=False)  # no journal: everything trained
    assert resumed["methods"]["learngene"]["accuracies"] == fresh["methods"]["learngene"]["accuracies"]
    with journal.record_episodes(path, {"learngene": "another"}) as other:  # another setting: nothing reused
        compare_methods(lg, episodes[:1], cfg, progress=False)
    assert other.reused == 0


# ------------------------------------------------------------------------------- every failure in one line
def _fails_with(exc: BaseException):
    def main(argv):
        raise exc

    return main


@pytest.mark.parametrize(
    "exc, text",
    [
        (OSError(28, "No space left on device", "/data/out/results.json"), "the disk is full: /data/out/results.json"),
        (OSError(30, "Read-only file system", "/ro/run"), "read-only file system: /ro/run"),
        (PermissionError(13, "Permission denied", "/root/x"), "permission denied: /root/x"),
        (NotADirectoryError(20, "Not a directory", "out/file/x"), "a file is in the way of a folder: out/file/x"),
        (MemoryError("Unable to allocate 745. GiB"), "out of memory (MemoryError: Unable to allocate 745. GiB)"),
        (ConnectionRefusedError(111, "Connection refused"), "the Hub request failed (ConnectionRefusedError"),
    ],
)
def test_machine_failures_reach_the_user_as_one_line(exc, text, capsys):
    with pytest.raises(SystemExit) as info:
        run_script(_fails_with(exc), [])
    err = capsys.readouterr().err
    assert info.value.code == 2 and err.startswith("error: ") and text in err and len(err.strip().splitlines()) == 1
    with pytest.raises(type(exc)):  # --debug: the traceback
        run_script(_fails_with(exc), ["--debug"])
    with pytest.raises(ZeroDivisionError):  # a bug keeps its traceback
        run_script(_fails_with(ZeroDivisionError("bug")), [])


def _client_error(call) -> Exception:
    try:
        call()
    except Exception as err:  # noqa: BLE001 - the error the Hub client raises
        return err
    raise AssertionError("the call did not fail")


def test_hub_client_errors_become_one_line(capsys, _quiet_hub_clients):
    from huggingface_hub import HfApi

    dead = HfApi(endpoint="http://127.0.0.1:9", token=False)
    for exc in (_client_error(lambda: dead.model_info("me/lg")), _client_error(lambda: dead.model_info("bad id!"))):
        with pytest.raises(SystemExit) as info:
            run_script(_fails_with(exc), [])
        err = capsys.readouterr().err
        assert info.value.code == 2 and "the Hub request failed" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize(
    "endpoint, repo_id, message",
    [
        ("http://127.0.0.1:9", "me/lg", r"The Hub at http://127.0.0.1:9 does not answer \(ConnectError"),
        ("not-a-url", "me/lg", r"The Hub endpoint 'not-a-url' is not a URL"),
        (None, "bad id!", r"'bad id!' is not a valid Hub repo id"),
    ],
)
def test_hub_failures_of_a_push_and_a_pull_are_hub_errors(endpoint, repo_id, message, _quiet_hub_clients, monkeypatch):
    from learngene_hf.errors import HubError

    monkeypatch.delenv("HF_TOKEN", raising=False)
    with pytest.raises(HubError, match=message):
        tiny_learngene().push_to_hub(repo_id, endpoint=endpoint or "http://127.0.0.1:9", token="hf_x")
    with pytest.raises(HubError, match=message):
        Learngene.from_pretrained(repo_id, endpoint=endpoint)


def test_a_push_that_fails_after_creating_the_repo_deletes_it_or_says_how(hub, monkeypatch):
    from huggingface_hub import HfApi

    from learngene_hf.errors import HubError

    reset = _client_error(lambda: HfApi(endpoint="http://127.0.0.1:9").model_info("me/lg"))  # a ConnectError

    def dies(*args, **kwargs):
        raise reset

    monkeypatch.setattr(HfApi, "upload_folder", dies)  # the network dies in the middle of the push
    with pytest.raises(
        HubError, match=r"does not answer .* The empty repo me/half that the push had created was deleted"
    ):
        tiny_learngene().push_to_hub("me/half")
    assert not HfApi().repo_exists("me/half")
    monkeypatch.setattr(HfApi, "delete_repo", dies)
    with pytest.raises(HubError, match=r"left empty: delete it with HfApi\(endpoint=.*\)\.delete_repo\('me/half'\)"):
        tiny_learngene().push_to_hub("me/half")
    HfApi().create_repo("me/kept")
    with pytest.raises(HubError) as info:  # a repo that existed before is never deleted
        tiny_learngene().push_to_hub("me/kept")
    assert "deleted" not in str(info.value) and "delete it" not in str(info.value)


def test_run_pipeline_refuses_every_stages_bad_options_before_stage_1(tmp_path, capsys):
    base = [
        "--preset",
        "tiny",
        "--output-dir",
        str(tmp_path / "out"),
        "--embedded",
        '{"num_classes": 20}',
        "--ways",
        "3",
    ]
    for extra, message in [
        (["--ways", "25"], "ways=25 (--ways) is more than the 4 novel classes"),
        (["--repo-id", "../../etc"], "repo_id '../../etc' (--repo-id) is not a Hub repo id"),
        (["--repo-id", "no-namespace"], "needs a namespace"),
        (["--hub-endpoint", "http://127.0.0.1:9"], "does not answer (ConnectError"),
        (["--hub-endpoint", "not-a-url"], "is not a URL like http://127.0.0.1:8080"),
        (["--shots", "30"], "30 shots + 15 queries per class"),
        (["--num-tasks", "0"], "num_tasks must be a positive integer"),
    ]:
        code, err = run_example("run_pipeline", [*base, *extra], capsys)
        assert code == 2 and message in err and len(err.strip().splitlines()) == 1, (extra, err)
    assert not (tmp_path / "out" / "collective").exists()  # stage 1 never started


def test_other_silently_ignored_options_are_refused(learngene_dir, stopped_run, tmp_path, capsys):
    with pytest.raises(ConfigError, match=r"revision='v1' names a version of a Hub repo, but .* is a local folder"):
        Learngene.from_pretrained(learngene_dir, revision="v1")
    code, err = run_example(
        "extract_learngene", [str(stopped_run), "--max-fraction=-1", "--output-dir", str(tmp_path)], capsys
    )
    assert code == 2 and "max_fraction must be a share between 0 and 1" in err
    (tmp_path / "file").write_text("x")
    code, err = run_example("extract_learngene", [str(stopped_run), "--output-dir", str(tmp_path / "file")], capsys)
    assert code == 2 and "is a file, not a folder" in err and len(err.strip().splitlines()) == 1


def test_an_absurd_dataset_size_is_refused_before_any_memory_is_taken(tmp_path):
    with pytest.raises(ConfigError, match=r"would take \d+\.\d GiB, more than this machine's .* GiB of memory"):
        load_tensors(None, num_classes=10, train_per_class=10**9, test_per_class=1, image_size=16)
    with pytest.raises(ConfigError, match="--images-per-class"):
        train_collective(
            tiny_config(embedded={"num_classes": 10, "train_per_class": 10**9}), tmp_path / "run", progress=False
        )
