"""The Inheritor: selection on a collective model, extraction, saving with the plot, pushing."""

from __future__ import annotations

import json

import pytest
import torch
from huggingface_hub import HfApi

from learngene_hf import CollectiveConfig, CollectiveModel
from learngene_hf.artifact.learngene import Learngene
from learngene_hf.data import ImageTensors
from learngene_hf.errors import ConfigError
from learngene_hf.fewshot.runner import learngene_probe
from learngene_hf.selection.inheritor import Inheritor
from learngene_hf.training.record import GradientRecord

NAMES = ["conv0", "conv1", "conv2", "conv3"]


def tiny_model() -> CollectiveModel:
    torch.manual_seed(0)
    return CollectiveModel(CollectiveConfig(preset="tiny", task_num_labels=[5], image_size=16))


def tiny_record(tasks: int = 3) -> GradientRecord:
    """conv3's gradient scale fluctuates across tasks; the other layers are steady."""
    epochs, changes = [], {}
    wobble = [1.0, 4.0, 0.25]
    for t in range(tasks):
        layers = {}
        for i, name in enumerate(NAMES):
            factor = wobble[t % 3] if name == "conv3" else 1.0
            rms = 10.0 ** (-2 - i / 2) * factor
            layers[name] = {"frac_above": [1.0, 0.9 - 0.2 * i], "mean_abs": 0.7 * rms, "rms": rms}
        epochs.append({"task": t, "epoch": 0, "batches": 2, "layers": layers})
        changes[str(t)] = {name: 0.1 * (i + 1) for i, name in enumerate(NAMES)}
    return GradientRecord([5e-10, 1e-4], NAMES, epochs, changes)


def tiny_images(classes: int = 10, per_class: int = 8, size: int = 16) -> ImageTensors:
    generator = torch.Generator().manual_seed(0)
    labels = torch.arange(classes).repeat_interleave(per_class)
    base = torch.randint(0, 256, (classes, 3, size, size), generator=generator)
    noise = torch.randint(-20, 21, (len(labels), 3, size, size), generator=generator)
    images = (base[labels] + noise).clamp(0, 255).to(torch.uint8)
    return ImageTensors(images, labels, [f"c{i}" for i in range(classes)])


PROBE = dict(probe_episodes=2, probe_epochs=1, probe_ways=3, probe_shots=2, probe_queries=2, max_fraction=None)


def test_validated_selection_probes_candidates_on_open_world_classes_only(monkeypatch):
    import learngene_hf.fewshot.runner as fewshot

    seen_classes = []
    real_probe = fewshot.probe_learngene

    def spy(learngene, episodes, cfg, seed=0, **kw):
        seen_classes.extend(c for e in episodes for c in e.classes)
        return real_probe(learngene, episodes, cfg, seed, **kw)

    monkeypatch.setattr(fewshot, "probe_learngene", spy)
    inheritor = Inheritor(
        tiny_model(), tiny_record(), probe_data=tiny_images(), open_world_classes=[5, 6, 7, 8], probe=learngene_probe
    )
    selection = inheritor.select(k=2, criterion="stability", **PROBE)
    assert selection.strategy == "validated"
    assert set(seen_classes) <= {5, 6, 7, 8}
    layers = [c["layers"] for c in selection.candidates]
    assert [2, 3] in layers and [0, 1] in layers  # the paper's and the first block are always candidates
    assert all(len(c["accuracies"]) == 2 for c in selection.candidates)
    best = max(c["mean"] for c in selection.candidates)
    assert next(c for c in selection.candidates if c["layers"] == selection.layers)["mean"] == best
    assert selection.probe["open_world_classes"] == [5, 6, 7, 8] and selection.probe["episodes"] == 2


def test_validated_selection_skips_candidates_over_the_size_cap_and_records_each_probe_lr():
    model = tiny_model()
    inheritor = Inheritor(
        model, tiny_record(), probe_data=tiny_images(), open_world_classes=[5, 6, 7, 8], probe=learngene_probe
    )
    fractions = {tuple(c): inheritor.parameter_fraction(c) for c in ([0, 1], [1, 2], [2, 3])}
    cap = sorted(fractions.values())[1]  # the largest block is over it
    settings = dict(PROBE, max_fraction=cap, probe_lrs=(0.01, 0.05))
    selection = inheritor.select(k=2, criterion="stability", **settings)
    for cand in selection.candidates:
        assert cand["parameter_fraction"] == pytest.approx(fractions[tuple(cand["layers"])])
        if cand["parameter_fraction"] > cap:
            assert "max_fraction" in cand["skipped"] and "accuracies" not in cand
        else:
            assert cand["lr"] in (0.01, 0.05) and set(cand["mean_by_lr"]) == {"0.01", "0.05"}
    assert inheritor.parameter_fraction(selection.layers) <= cap
    assert any("skipped" in c for c in selection.candidates)
    assert "skipped, holds" in selection.reason


def test_budget_selection_probes_narrow_and_distilled_candidates_and_shares_the_winner(tmp_path):
    model = tiny_model()
    inheritor = Inheritor(
        model,
        tiny_record(),
        probe_data=tiny_images(),
        open_world_classes=[5, 6, 7, 8],
        task_stream={"classes": [0, 1, 2, 3, 4]},
        probe=learngene_probe,
    )
    budget = Learngene.from_collective(model, [0, 1]).num_bytes()
    settings = {k: v for k, v in PROBE.items() if k != "max_fraction"}
    result = inheritor.select_under_budget(budget, depths=[2, 4], distill_epochs=1, **settings)
    assert set(result["candidates"]) == {"first_2", "narrow_4", "distilled_4"}
    assert all(c["bytes"] <= budget and len(c["accuracies"]) == 2 for c in result["candidates"].values())
    chosen = inheritor.learngene
    assert chosen.config.selection["strategy"] == "budget" and chosen.num_bytes() <= budget
    folder = inheritor.save_pretrained(tmp_path / "lg")
    assert Learngene.from_pretrained(folder).config.selection["budget_candidates"].keys() == result["candidates"].keys()
    card = (folder / "README.md").read_text()
    assert "narrow_4" in card and "distilled_4" in card
    with pytest.raises(ConfigError, match="open-world probes"):
        Inheritor(model).select_under_budget(budget)


def test_without_open_world_data_the_selection_falls_back_to_the_criterion():
    inheritor = Inheritor(tiny_model(), tiny_record(), open_world_classes=[5, 6, 7])
    selection = inheritor.select(k=2, criterion="stability")
    assert selection.strategy == "criterion"
    assert selection.layers == [0, 1]  # conv3 is unstable; equal scores: the earlier block wins
    assert "probe_data" in selection.reason


def test_extract_copies_the_selected_blocks_and_stores_the_selection():
    model = tiny_model()
    inheritor = Inheritor(model, tiny_record(), task_stream={"num_tasks": 3, "ways": 5})
    inheritor.select("paper", k=2, criterion="paper", threshold=1e-4)
    learngene = inheritor.extract()
    assert learngene.config.layer_names == ["conv2", "conv3"]
    assert torch.equal(learngene.tensors["blocks.1.conv.weight"], model.blocks[3].conv.weight)
    assert learngene.config.selection["strategy"] == "paper"
    assert learngene.config.selection["scores"]["conv0"] == pytest.approx(0.9)
    assert learngene.config.task_stream == {"num_tasks": 3, "ways": 5}
    assert learngene.config.preprocessing["image_size"] == 16
    json.dumps(learngene.config.to_dict(), allow_nan=False)


def test_explicit_layers_override_the_selection():
    learngene = Inheritor(tiny_model()).extract(layers=[1, 2])
    assert learngene.config.layer_names == ["conv1", "conv2"]
    assert learngene.config.selection["strategy"] == "layers"


def test_inheritor_rejects_wrong_inputs_with_a_fix():
    with pytest.raises(ConfigError, match="CollectiveModel"):
        Inheritor(torch.nn.Linear(2, 2))
    with pytest.raises(ConfigError, match="gradient record"):
        Inheritor(tiny_model()).select("criterion")
    other = tiny_record()
    other.layer_names = ["a", "b", "c", "d"]
    for entry in other.epochs:
        entry["layers"] = {new: v for new, v in zip(other.layer_names, entry["layers"].values())}
    with pytest.raises(ConfigError, match="same collective run"):
        Inheritor(tiny_model(), other).select("criterion")


def test_save_pretrained_writes_the_learngene_and_the_ranking_plot(tmp_path):
    inheritor = Inheritor(
        tiny_model(), tiny_record(), probe_data=tiny_images(), open_world_classes=[5, 6, 7, 8], probe=learngene_probe
    )
    inheritor.select(k=2, **PROBE)
    folder = inheritor.save_pretrained(tmp_path / "lg")
    assert (folder / "layer_ranking.png").stat().st_size > 1000
    loaded = Learngene.from_pretrained(folder)
    assert loaded.config.selection["candidates"] and loaded.config.selection["reason"].startswith(
        "strategy 'validated'"
    )


def test_push_to_hub_pushes_only_the_learngene(hub):
    model = tiny_model()
    inheritor = Inheritor(model, tiny_record())
    inheritor.select("criterion", k=2)
    commit = inheritor.push_to_hub("me/tiny-learngene")
    files = set(HfApi().list_repo_files("me/tiny-learngene"))
    assert {"learngene.safetensors", "learngene_config.json", "README.md"} <= files
    assert not any(f.endswith(("model.safetensors", "config.json")) and f != "learngene_config.json" for f in files)
    pulled = Learngene.from_pretrained("me/tiny-learngene", revision=commit.oid)
    assert set(pulled.tensors) == {
        f"blocks.{j}.{n}"
        for j in range(2)
        for n in ("conv.weight", "bn.weight", "bn.bias", "bn.running_mean", "bn.running_var", "bn.num_batches_tracked")
    }
    assert pulled.num_parameters() < sum(p.numel() for p in model.parameters())


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A 3-task collective run on a small embedded dataset (about 10 s on 2 CPU cores)."""
    from learngene_hf.training.config import CollectiveTrainingConfig
    from learngene_hf.training.trainer import train_collective

    config = CollectiveTrainingConfig(
        preset="tiny",
        num_tasks=3,
        ways=3,
        epochs_per_task=1,
        batch_size=16,
        growth="none",
        image_size=16,
        embedded={"num_classes": 12, "train_per_class": 12, "test_per_class": 4},
        base="0-5",
        open_world="6-9",
        novel="10-11",
    )
    run_dir = tmp_path_factory.mktemp("run")
    train_collective(config, run_dir, progress=False)
    return run_dir


def test_from_run_probes_open_world_classes_and_records_the_run(tiny_run, tmp_path):
    without_probe = Inheritor.from_run(tiny_run).select(k=2)
    assert without_probe.strategy == "criterion" and "no probe was given" in without_probe.reason
    inheritor = Inheritor.from_run(tiny_run, probe=learngene_probe)
    assert inheritor.open_world_classes == [6, 7, 8, 9]
    selection = inheritor.select(k=2, probe_episodes=2, probe_epochs=1, probe_shots=2, probe_queries=2)
    assert selection.strategy == "validated" and selection.probe["ways"] == 4  # capped at the 4 open-world classes
    learngene = inheritor.extract()
    assert learngene.config.source["run_dir"] == str(tiny_run.resolve())
    stream = learngene.config.task_stream
    assert stream["split"]["novel"] == [10, 11] and stream["num_tasks"] == 3 and stream["ways"] == 3
    assert set(stream["classes"]) <= set(range(6))


def run_extract_example(argv: list[str]) -> int:
    """Run examples/extract_learngene.py as a script with ``argv``; returns its exit code."""
    import runpy
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "examples" / "extract_learngene.py"
    old, sys.argv = sys.argv, [str(script), *argv]
    try:
        with pytest.raises(SystemExit) as info:
            runpy.run_path(str(script), run_name="__main__")
    finally:
        sys.argv = old
    return info.value.code


def test_example_script_extracts_and_pushes_to_a_hub_endpoint(tiny_run, tmp_path, hub, capsys):
    argv = [str(tiny_run), "--strategy", "paper", "--k", "2", "--output-dir", str(tmp_path / "out"),
            "--push-to-hub", "me/example-lg", "--hub-endpoint", hub]  # fmt: skip
    assert run_extract_example(argv) == 0
    out = capsys.readouterr().out
    assert "Chosen layers [2, 3]" in out and "Pushed to me/example-lg" in out
    assert Learngene.from_pretrained("me/example-lg").config.layer_names == ["conv2", "conv3"]
    assert (tmp_path / "out" / "layer_ranking.png").exists()


def test_example_script_with_a_byte_budget_saves_the_best_candidate_that_fits(tiny_run, tmp_path, capsys):
    budget = Learngene.from_collective(Inheritor.from_run(tiny_run, load_probe_data=False).model, [0, 1]).num_bytes()
    probes = ["--probe-episodes", "1", "--probe-epochs", "1", "--probe-shots", "2", "--probe-queries", "2"]
    argv = [str(tiny_run), "--max-bytes", str(budget), "--distill-epochs", "1", *probes,
            "--output-dir", str(tmp_path / "out")]  # fmt: skip
    assert run_extract_example(argv) == 0
    out = capsys.readouterr().out
    assert "| narrow_4 " in out and "| distilled_4 " in out and "Chosen " in out
    saved = Learngene.from_pretrained(tmp_path / "out")
    assert saved.num_bytes() <= budget and saved.config.selection["strategy"] == "budget"
    assert not (tmp_path / "out" / "layer_ranking.png").exists()


def test_a_byte_budget_with_explicit_layers_is_refused_in_one_line():
    from learngene_hf.selection.config import SelectionConfig

    with pytest.raises(ConfigError, match="--max-bytes chooses the layers"):
        SelectionConfig(max_bytes=1000, layers=[0, 1])
    with pytest.raises(ConfigError, match="needs --max-bytes"):
        SelectionConfig(distill_epochs=2)
