"""The few-shot recipe: schedule per step and group, LP-FT, the paper recipe, recipe tuning, CLI defaults."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import pytest
import torch
from helpers import EMBEDDED, SPLIT, tiny_learngene
from torch import nn

from learngene_hf.cli import config_kwargs
from learngene_hf.data import load_tensors, sample_episodes
from learngene_hf.errors import ConfigError
from learngene_hf.fewshot.compare import add_strongest_baseline, compare_methods, format_table
from learngene_hf.fewshot.config import DEFAULT_LR_GRID, DEFAULT_STEPS, SIZE_RECIPES, ComparisonConfig, FewShotConfig
from learngene_hf.fewshot.train import augment_batch, parameter_groups, reestimate_batchnorm, train_individual
from learngene_hf.fewshot.tuning import tune_recipe
from learngene_hf.models.individual import IndividualModel
from learngene_hf.pipeline import PipelineConfig

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def data():
    train, _ = load_tensors(None, **EMBEDDED)
    return train


def test_schedule_gives_each_group_its_lr_per_step():
    cfg = FewShotConfig(
        steps=20, lr=0.1, head_lr_scale=2.0, lp_steps=4, warmup_steps=2, schedule="cosine", final_lr_scale=0.0
    )
    head = [cfg.group_lr("head", t, 20) for t in range(20)]
    body = [cfg.group_lr("body", t, 20) for t in range(20)]
    assert head[:3] == pytest.approx([0.1, 0.2, 0.2])  # warm-up to 2 x lr, then cosine from the peak
    assert body[:4] == [0.0] * 4  # LP: the body does not train
    assert body[4:7] == pytest.approx([0.05, 0.1, 0.1])  # its own warm-up starts after LP
    assert all(a >= b for a, b in zip(head[2:], head[3:])) and head[-1] < 0.02
    assert body[-1] == pytest.approx(0.1 * 0.5 * (1 + math.cos(math.pi * 13 / 14)))
    constant = FewShotConfig(steps=5, lr=0.3, lp_steps=0, warmup_steps=0, schedule="constant")
    assert {constant.group_lr(g, t, 5) for g in ("head", "body") for t in range(5)} == {0.3}
    with pytest.raises(ConfigError, match="steps or epochs, not both"):
        FewShotConfig(steps=3, epochs=2)
    assert FewShotConfig().steps == DEFAULT_STEPS and FewShotConfig().epochs is None


def test_lp_steps_train_the_head_on_a_frozen_body(data):
    ep = sample_episodes(data, SPLIT["novel"], 1, ways=3, shots=2, queries=2)[0]
    torch.manual_seed(1)
    model = IndividualModel.from_learngene(tiny_learngene(), 3)
    before = {k: v.clone() for k, v in model.named_parameters()}
    groups = parameter_groups(model)
    assert groups["head"] and groups["body"]
    cfg = FewShotConfig(steps=3, lp_steps=3, lr=0.1, warmup_steps=0, device="cpu")
    train_individual(model, ep.support_images, ep.support_labels, cfg, seed=3)
    after = dict(model.named_parameters())
    body = {id(p) for p in groups["body"]}
    assert all(torch.equal(before[k], after[k]) for k, p in after.items() if id(p) in body)
    assert not torch.equal(before["classifier.weight"], after["classifier.weight"])
    assert all(p.requires_grad for p in model.parameters())  # released after training
    # one fine-tuning step after LP moves the body
    model = IndividualModel.from_learngene(tiny_learngene(), 3)
    start = model.blocks[0].conv.weight.detach().clone()
    train_individual(model, ep.support_images, ep.support_labels, cfg.replace(steps=4), seed=3)
    assert not torch.equal(model.blocks[0].conv.weight, start)


def _old_paper_loop(model, images, labels, lr, epochs, batch_size, seed):
    """train_individual as it was before recipes (SGD lr, epochs of shuffled batches, crop + flip)."""
    from learngene_hf.fewshot.train import model_stats, normalize

    x = normalize(images, torch.device("cpu"), *model_stats(model))
    generator = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        reestimate_batchnorm(model, x, batch_size)
        params = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=5e-4)
        model.train()
        n = x.shape[0]
        for _ in range(epochs):
            order = torch.randperm(n, generator=generator)
            for start in range(0, n, batch_size):
                idx = order[start : start + batch_size]
                if idx.numel() < 2 and n >= 2:
                    continue
                batch = augment_batch(x[idx], generator)
                loss = model(batch, labels=labels[idx]).loss
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
    return model.eval()


def test_paper_recipe_reproduces_the_old_training_loop(data):
    # 6 support images in batches of 5: a batch of 5, then a single image that is skipped
    ep = sample_episodes(data, SPLIT["novel"], 1, ways=3, shots=2, queries=1)[0]
    lg = tiny_learngene()
    cfg = FewShotConfig.from_recipe("paper", epochs=3, batch_size=5, device="cpu")
    assert cfg.recipe == "paper" and cfg.lr == 5e-3 and cfg.total_steps(6) == 3
    models = []
    for old in (True, False):
        torch.manual_seed(4)
        model = IndividualModel.from_learngene(lg, 3)
        if old:
            _old_paper_loop(model, ep.support_images, ep.support_labels, 5e-3, 3, 5, seed=9)
        else:
            train_individual(model, ep.support_images, ep.support_labels, cfg, seed=9)
        models.append(model.state_dict())
    assert all(torch.equal(models[0][k], models[1][k]) for k in models[0])


def test_tuning_runs_on_open_world_episodes_and_flags_values_at_the_edge(data, monkeypatch):
    import learngene_hf.fewshot.stacked as fewshot

    episodes = sample_episodes(data, SPLIT["open_world"], 2, ways=2, shots=1, queries=1)
    seen = []

    def fake(builder, ep, cfg, seed=0, *fit):  # accuracy rises with lr up to 0.3, and with steps
        seen.append(tuple(ep.classes))
        return 1.0 - abs(math.log(cfg.lr / 0.3)) + 0.01 * cfg.steps

    monkeypatch.setattr(fewshot, "run_method_on_episode", fake)
    result = tune_recipe(
        lambda n: None, episodes, {"lr": [0.01, 0.03], "steps": [5, 10]}, FewShotConfig(stack=False), widen=1
    )
    assert set(seen) <= {tuple(ep.classes) for ep in episodes} and set(map(frozenset, seen)) == {
        frozenset(SPLIT["open_world"])
    }
    assert result.widened == {"lr": [0.09], "steps": [20]}  # each widened once
    assert result.chosen == {"lr": 0.09, "steps": 20} and isinstance(result.chosen["steps"], int)
    assert result.edge == ["lr", "steps"]  # still at the edge after one widening: reported
    inside = tune_recipe(lambda n: None, episodes, {"lr": [0.1, 0.3, 1.0]}, FewShotConfig(stack=False))
    assert inside.chosen == {"lr": 0.3} and inside.edge == [] and inside.widened == {}


def test_compare_methods_reports_tuned_recipes_and_edge_flags(data, monkeypatch):
    import learngene_hf.fewshot.stacked as fewshot

    lg = tiny_learngene()
    novel = sample_episodes(data, SPLIT["novel"], 2, ways=2, shots=1, queries=1)
    tune = sample_episodes(data, SPLIT["open_world"], 1, ways=2, shots=1, queries=1, seed=3)
    tuned_on = []

    def fake(builder, ep, cfg, seed=0, *fit):
        if set(ep.classes) <= set(SPLIT["open_world"]):
            tuned_on.append(cfg.lr)
        return min(cfg.lr, 0.5)

    monkeypatch.setattr(fewshot, "run_method_on_episode", fake)
    results = compare_methods(
        lg,
        novel,
        FewShotConfig(steps=2, stack=False),
        tune_lr_episodes=tune,
        tune_grid={"lr": [0.01, 0.02]},
        widen=1,
        progress=False,
    )
    m = results["methods"]["learngene"]
    assert m["lr"] == 0.04 and m["edge_of_grid"] == ["lr"] and m["tuning"]["widened"] == {"lr": [0.04]}
    assert m["recipe"]["steps"] == 2 and m["recipe"]["recipe"] == "default" and "diff_vs_scratch" in m
    assert sorted(set(tuned_on)) == [0.01, 0.02, 0.04]
    assert "0.04 (edge)" in format_table(results) and "learngene: lr=0.04" in format_table(results)
    assert (
        results["strongest_baseline"]["name"] == "scratch" and m["diff_vs_strongest_baseline"]["baseline"] == "scratch"
    )


def test_the_strongest_method_that_inherits_nothing_is_the_reference():
    methods = {
        "learngene": {"inherited_parameters": 10, "mean": 0.6, "accuracies": [0.6, 0.7, 0.5]},
        "scratch": {"inherited_parameters": 0, "mean": 0.3, "accuracies": [0.3, 0.4, 0.2]},
        "logreg_random": {"inherited_parameters": 0, "mean": 0.4, "accuracies": [0.5, 0.4, 0.3]},
    }
    best = add_strongest_baseline(methods)
    assert best == {"name": "logreg_random", "mean": 0.4, "candidates": ["scratch", "logreg_random"]}
    assert methods["learngene"]["diff_vs_strongest_baseline"]["mean"] == pytest.approx(0.2)
    assert methods["scratch"]["diff_vs_strongest_baseline"]["mean"] == pytest.approx(-0.1)
    assert "diff_vs_strongest_baseline" not in methods["logreg_random"]
    assert add_strongest_baseline({"learngene": methods["learngene"]}) is None


def _example(name: str):
    spec = importlib.util.spec_from_file_location(name, REPO / "examples" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_few_shot_example_trains_with_the_default_recipe_and_the_paper_one_by_name():
    few_shot = _example("few_shot")
    default = few_shot.fewshot_config(few_shot.parse_args(["--learngene", "org/lg"]), "full", "cpu")
    assert default == FewShotConfig(device="cpu")
    tiny = few_shot.fewshot_config(few_shot.parse_args(["--learngene", "org/lg", "--lr", "0.2"]), "tiny", "cpu")
    assert tiny == FewShotConfig(device="cpu", lr=0.2, **SIZE_RECIPES["tiny"])  # the size's recipe, the flags on top
    paper = few_shot.fewshot_config(few_shot.parse_args(["--learngene", "org/lg", "--recipe", "paper"]), "tiny", "cpu")
    assert paper == FewShotConfig.from_recipe("paper", device="cpu")
    assert (paper.lr, paper.epochs, paper.steps, paper.batch_size, paper.lp_steps, paper.schedule) == (
        5e-3,
        30,
        None,
        32,
        0,
        "constant",
    )
    args = few_shot.parse_args(
        ["--recipe", "paper", "--steps", "7", "--lr", "0.2", "--steps-grid", "5,10", "--wd-grid", "0.001"]
    )
    changed = few_shot.fewshot_config(args, "small")
    assert (changed.recipe, changed.steps, changed.epochs, changed.lr, changed.lp_steps) == ("paper", 7, None, 0.2, 0)
    grid = ComparisonConfig(**config_kwargs(args, ComparisonConfig)).tune_grid()
    assert grid == {"lr": list(DEFAULT_LR_GRID), "steps": [5, 10], "weight_decay": [0.001]}
    pipeline = PipelineConfig(recipe="paper", steps=12, steps_grid=[6, 12])
    assert pipeline.fewshot_config() == FewShotConfig.from_recipe("paper", steps=12)
    assert PipelineConfig(size="tiny").fewshot_config() == FewShotConfig(**SIZE_RECIPES["tiny"])
    assert pipeline.tune_grid()["steps"] == [6, 12]


def test_label_smoothing_is_the_loss_the_recipe_asks_for(data, monkeypatch):
    ep = sample_episodes(data, SPLIT["novel"], 1, ways=2, shots=2, queries=1)[0]
    calls = []
    real = nn.functional.cross_entropy

    def spy(logits, target, *args, **kwargs):
        calls.append(kwargs.get("label_smoothing", 0.0))
        return real(logits, target, *args, **kwargs)

    monkeypatch.setattr(nn.functional, "cross_entropy", spy)
    model = IndividualModel.from_learngene(tiny_learngene(), 2)
    train_individual(
        model, ep.support_images, ep.support_labels, FewShotConfig(steps=2, label_smoothing=0.2, device="cpu"), seed=0
    )
    assert 0.2 in calls
