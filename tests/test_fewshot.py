"""Few-shot trainer, episode runner, lr tuning and examples/few_shot.py on 2 CPU processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from functools import partial
from pathlib import Path

import helpers
import pytest
import torch
from conftest import free_port
from helpers import EMBEDDED, SPLIT

from learngene_hf.data import load_tensors, sample_episodes
from learngene_hf.errors import ConfigError, DataError
from learngene_hf.fewshot.compare import compare_methods, format_table, write_results
from learngene_hf.fewshot.config import FewShotConfig
from learngene_hf.fewshot.methods import comparison_methods
from learngene_hf.fewshot.runner import probe_learngene, run_episodes
from learngene_hf.fewshot.train import reestimate_batchnorm, train_individual
from learngene_hf.fewshot.tuning import tune_lr
from learngene_hf.models.individual import IndividualConfig, IndividualModel

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def data():
    train, _ = load_tensors(None, **EMBEDDED)
    return train


#: The shared tiny learngene with perturbed BatchNorm means, so that BN re-estimation shows.
tiny_learngene = partial(helpers.tiny_learngene, perturb_bn=True)

FAST = FewShotConfig(epochs=2, batch_size=8, device="cpu")


def test_training_is_deterministic_per_seed(data):
    ep = sample_episodes(data, SPLIT["novel"], 1, ways=3, shots=2, queries=2)[0]
    lg = tiny_learngene()
    runs = []
    for _ in range(2):
        torch.manual_seed(5)
        model = IndividualModel.from_learngene(lg, 3)
        train_individual(model, ep.support_images, ep.support_labels, FAST, seed=11)
        runs.append(model.state_dict())
    assert all(torch.equal(runs[0][k], runs[1][k]) for k in runs[0])


def test_bn_reestimation_replaces_the_collective_statistics(data):
    lg = tiny_learngene()
    images = torch.randn(12, 3, 16, 16)
    model = IndividualModel.from_learngene(lg, 3)
    inherited = model.blocks[2].bn
    collective_mean = lg.block_state_dict(0)["bn.running_mean"]
    stem_mean = model.blocks[0].bn.running_mean.clone()
    reestimate_batchnorm(model, images, batch_size=12)
    assert torch.equal(model.blocks[0].bn.running_mean, stem_mean)  # fresh layers untouched
    with torch.no_grad():
        model.train()
        pre_bn = model.blocks[2].conv(torch.nn.functional.max_pool2d(model.blocks[1](model.blocks[0](images)), 2))
    assert torch.allclose(inherited.running_mean, pre_bn.mean((0, 2, 3)), atol=1e-5)
    assert not torch.allclose(inherited.running_mean, collective_mean)

    kept = IndividualModel.from_learngene(lg, 3)
    train_individual(
        kept,
        images.new_zeros(4, 3, 16, 16).to(torch.uint8),
        torch.tensor([0, 1, 2, 0]),
        FewShotConfig(epochs=0, bn_reestimate=False),
        seed=0,
    )
    assert torch.equal(kept.blocks[2].bn.running_mean, collective_mean)


def test_bad_labels_give_a_clear_error():
    model = IndividualModel(IndividualConfig(widths=[4], pool=[True], head_hidden=[], num_labels=2))
    with pytest.raises(DataError, match="num_labels=4"):
        train_individual(model, torch.zeros(2, 3, 8, 8, dtype=torch.uint8), torch.tensor([0, 3]), FAST, seed=0)


def test_learngene_and_scratch_see_identical_episodes_and_fresh_init(data, monkeypatch):
    import learngene_hf.fewshot.train as fewshot

    lg = tiny_learngene()
    episodes = sample_episodes(data, SPLIT["novel"], 3, ways=3, shots=2, queries=2)
    seen: dict[str, list] = {"learngene": [], "scratch": []}
    real_train = fewshot.train_individual

    def spy(model, images, labels, cfg, seed):
        name = "learngene" if model.has_learngene else "scratch"
        seen[name].append((images.clone(), labels.clone(), seed, model.blocks[0].conv.weight.detach().clone()))
        return real_train(model, images, labels, cfg, seed)

    monkeypatch.setattr(fewshot, "train_individual", spy)
    one_at_a_time = FAST.replace(stack=False)  # the stacked path: tests/test_stacked.py
    results = compare_methods(lg, episodes, one_at_a_time, progress=False)
    assert [r["index"] for r in results["episodes"]] == [0, 1, 2]
    for a, b in zip(seen["learngene"], seen["scratch"]):
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) and a[2] == b[2]
        assert torch.equal(a[3], b[3])  # the fresh stem starts from the same draw
    assert len({s[2] for s in seen["scratch"]}) == 3  # but every episode has its own seed
    m = results["methods"]
    assert set(m) == {"learngene", "scratch"} and len(m["learngene"]["accuracies"]) == 3
    assert "diff_vs_scratch" in m["learngene"] and "diff_vs_scratch" not in m["scratch"]
    assert m["learngene"]["inherited_parameters"] > 0 == m["scratch"]["inherited_parameters"]
    assert "| learngene |" in format_table(results)


def test_probe_learngene_returns_one_accuracy_per_episode(data):
    lg = tiny_learngene()
    episodes = sample_episodes(data, SPLIT["open_world"], 2, ways=2, shots=2, queries=3)
    probes = probe_learngene(lg, episodes, FAST)
    scratch = probe_learngene(None, episodes, FAST, architecture_of=lg)
    assert len(probes) == len(scratch) == 2
    assert all(0.0 <= p <= 1.0 and p * 6 == round(p * 6) for p in probes + scratch)


def test_tune_lr_picks_the_best_mean_on_open_world_episodes(data, monkeypatch):
    import learngene_hf.fewshot.stacked as fewshot

    episodes = sample_episodes(data, SPLIT["open_world"], 2, ways=2, shots=2, queries=2)
    monkeypatch.setattr(
        fewshot, "run_method_on_episode", lambda builder, ep, cfg, seed=0, *fit: 1.0 - abs(cfg.lr - 0.01)
    )
    best, means = tune_lr(lambda n: None, episodes, grid=(0.001, 0.01, 0.1), cfg=FAST.replace(stack=False))
    assert best == 0.01 and set(means) == {0.001, 0.01, 0.1}


def test_run_episodes_rejects_duplicate_method_names(data):
    ep = sample_episodes(data, SPLIT["novel"], 1, ways=2, shots=1, queries=1)
    with pytest.raises(ConfigError, match="distinct"):
        run_episodes([("a", None, None), ("a", None, None)], ep, FAST)


def test_write_results_writes_json_table_and_plot(tmp_path, data):
    lg = tiny_learngene()
    episodes = sample_episodes(data, SPLIT["novel"], 2, ways=2, shots=1, queries=2)
    results = compare_methods(lg, episodes, FewShotConfig(epochs=1, device="cpu"), progress=False)
    paths = write_results(results, tmp_path / "out")
    assert json.loads(Path(paths["results"]).read_text())["setting"]["episodes"] == 2
    assert Path(paths["plot"]).stat().st_size > 1000 and "scratch" in Path(paths["table"]).read_text()


def test_example_without_a_learngene_says_what_to_run(tmp_path):
    proc = subprocess.run(
        [sys.executable, str(REPO / "examples" / "few_shot.py"), "--learngene", str(tmp_path / "none")],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert proc.returncode == 2 and "extract_learngene.py" in proc.stderr


def test_example_on_two_cpu_processes_runs_every_episode_once(tmp_path, data):
    folder = tiny_learngene().save_pretrained(tmp_path / "lg")
    out = tmp_path / "few_shot"
    env = {**os.environ, "PYTHONPATH": str(REPO), "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
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
        str(REPO / "examples" / "few_shot.py"),
        "--learngene",
        str(folder),
        "--episodes",
        "5",
        "--ways",
        "2",
        "--shots",
        "2",
        "--queries",
        "2",
        "--epochs",
        "1",
        "--output-dir",
        str(out),
        "--no-progress",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    results = json.loads((out / "results.json").read_text())
    assert [e["index"] for e in results["episodes"]] == [0, 1, 2, 3, 4]
    assert results["setting"]["processes"] == 2
    for e in results["episodes"]:
        assert set(e["classes"]) <= set(SPLIT["novel"])
    assert len(results["methods"]["learngene"]["accuracies"]) == 5
    assert (out / "accuracy.png").is_file() and "| learngene |" in proc.stdout


def test_compare_adds_blocks_of_the_collective_run_and_tunes_lr_on_open_world(tmp_path, data):
    from learngene_hf.fewshot.loading import load_fewshot_data
    from learngene_hf.selection.inheritor import Inheritor
    from learngene_hf.training.config import CollectiveTrainingConfig
    from learngene_hf.training.trainer import train_collective

    cfg = CollectiveTrainingConfig.for_preset(
        "tiny",
        num_tasks=2,
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
    lg = Inheritor.from_run(tmp_path / "run").extract([2, 3])
    images, novel, open_world = load_fewshot_data(lg)
    assert novel == SPLIT["novel"] and open_world == SPLIT["open_world"]
    episodes = sample_episodes(images, novel, 2, ways=2, shots=2, queries=2)
    tune = sample_episodes(images, open_world, 1, ways=2, shots=2, queries=2, seed=5)
    results = compare_methods(
        lg,
        episodes,
        FewShotConfig(epochs=1, device="cpu"),
        compare=True,
        tune_lr_episodes=tune,
        lr_grid=(0.01, 0.05),
        progress=False,
    )
    methods = results["methods"]
    # the learngene is the last block: it is not run a second time as "last_2"
    assert list(methods)[:5] == ["learngene", "scratch", "whole", "first_2", "worst_2"]
    # then the baselines: frozen features of a random descendant, the learngene, the collective; weight selection
    assert list(methods)[5:] == [
        "logreg_random",
        "centroid_random",
        "logreg_learngene",
        "centroid_learngene",
        "logreg_collective",
        "centroid_collective",
        "weight_selection",
    ]
    assert "last_2" in methods["learngene"]["same_as"] and "learngene (= last_2" in format_table(results)
    tuned = [m for m in methods.values() if m["kind"] == "fine-tuned"]
    # the grid (widened once where the best lr is at its edge) and the chosen lr, for every fine-tuned method
    assert len(tuned) == 6 and all(
        {"0.01", "0.05"} <= set(m["lr_search"]) and f"{m['lr']:g}" in m["lr_search"] for m in tuned
    )
    assert all(set(m["lr_search"]) - {"0.01", "0.05"} <= {"0.002", "0.25"} for m in tuned)
    assert methods["logreg_collective"]["settings_search"] and methods["logreg_collective"]["lr"] is None
    assert results["setting"]["lr_tuned_on"] == "open-world classes"
    # without the other fine-tuned networks (--no-blocks): learngene, scratch and the cheap baselines
    cheap = comparison_methods(lg, compare=True, blocks=False)
    assert [m.name for m in cheap] == [
        "learngene",
        "scratch",
        "logreg_random",
        "centroid_random",
        "logreg_learngene",
        "centroid_learngene",
        "logreg_collective",
        "centroid_collective",
    ]
