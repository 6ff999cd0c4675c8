"""Stacked few-shot training (learngene_hf.fewshot.stacked) gives what one-at-a-time training gives."""

from __future__ import annotations

from dataclasses import replace
from functools import partial

import helpers
import pytest
import torch
from helpers import EMBEDDED, SPLIT

from learngene_hf.data import load_tensors, sample_episodes
from learngene_hf.errors import ConfigError
from learngene_hf.fewshot.baselines import fit_frozen_features, frozen_features
from learngene_hf.fewshot.config import FewShotConfig
from learngene_hf.fewshot.runner import Method, run_episodes
from learngene_hf.fewshot.stacked import Descendant, run_descendants, train_and_evaluate_stacked
from learngene_hf.fewshot.stacks import stack_key
from learngene_hf.fewshot.train import build_for_episode
from learngene_hf.models.individual import IndividualConfig, IndividualModel

#: The shared tiny learngene with perturbed BatchNorm means, so that BN re-estimation shows.
tiny_learngene = partial(helpers.tiny_learngene, perturb_bn=True)
HEAD = {"head_hidden": [12], "dropout": 0.3}  # dropout on: its masks must follow the episode seed too


@pytest.fixture(scope="module")
def episodes():
    train, _ = load_tensors(None, **EMBEDDED)
    return sample_episodes(train, SPLIT["novel"], 2, ways=3, shots=3, queries=4)


#: The default recipe, shortened: LP-FT, warm-up + cosine, label smoothing, crop + flip.
RECIPE = FewShotConfig(steps=8, lp_steps=3, warmup_steps=2, batch_size=4, device="cpu")


def methods(dtype: torch.dtype) -> list[Method]:
    """learngene (BN re-estimated), scratch, the whole backbone (with its own head lr and no
    warm-up: a different schedule in the same stack), a frozen learngene and logistic regression
    on a random network's features (fitted, never stacked)."""
    lg, whole = tiny_learngene((0, 1)), tiny_learngene((0, 1, 2, 3))

    def cast(build):
        return lambda n: build(n).to(dtype)

    return [
        Method("learngene", cast(lambda n: IndividualModel.from_learngene(lg, n, **HEAD)), lr=0.1),
        Method("scratch", cast(lambda n: IndividualModel(IndividualConfig.for_learngene(lg, n, **HEAD))), lr=0.05),
        Method(
            "whole",
            cast(lambda n: IndividualModel.from_learngene(whole, n, **HEAD)),
            lr=0.2,
            recipe={"head_lr_scale": 3.0, "warmup_steps": 0},
        ),
        Method("frozen", cast(lambda n: IndividualModel.from_learngene(lg, n, freeze_learngene=True, **HEAD)), lr=0.1),
        Method(
            "logreg_random",
            lambda n: frozen_features(IndividualModel(IndividualConfig.for_learngene(lg, n)), n),
            fit=fit_frozen_features,
            settings={"l2": 0.1},
        ),
    ]


def one_at_a_time(method: Method, episode, cfg: FewShotConfig):
    from learngene_hf.fewshot.train import evaluate, train_individual

    model, seed = build_for_episode(method.builder, episode)
    run_cfg = method.config(cfg)
    train_individual(model, episode.support_images, episode.support_labels, run_cfg, seed)
    return evaluate(model, episode.query_images, episode.query_labels, run_cfg), model.state_dict()


#: The same with the classifier fitted first (every BatchNorm re-estimated, logistic regression)
#: and the inherited blocks at a third of the lr.
LP_INIT = RECIPE.replace(lp_init=True, lp_steps=0, inherited_lr_scale=0.3, lr=0.02)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("recipe", ["lp-ft", "lp-init"])
def test_stacked_descendants_match_one_at_a_time_training(episodes, dtype, recipe):
    cfg = RECIPE if recipe == "lp-ft" else LP_INIT
    chosen = methods(dtype)[:3]
    if recipe == "lp-init":  # the gentle learning rates such a recipe trains with, one per method
        chosen = [replace(m, lr=lr, recipe=None) for m, lr in zip(chosen, (0.02, 0.01, 0.03))]
    jobs = [(m, ep) for m in chosen for ep in episodes]
    models, seeds = zip(*(build_for_episode(m.builder, ep) for m, ep in jobs))
    stacked = train_and_evaluate_stacked(
        models, [ep for _, ep in jobs], seeds, [m.config(cfg) for m, _ in jobs], write_back=True
    )
    queries = episodes[0].query_labels.numel()
    for (method, ep), model, acc in zip(jobs, models, stacked):
        alone, state = one_at_a_time(method, ep, cfg)
        trained = model.state_dict()
        worst = max(float((state[k].double() - trained[k].double()).abs().max()) for k in state)
        if dtype == torch.float64:  # weights, BN statistics and accuracies agree up to float64 rounding
            # (the linear probe's L-BFGS stops at a point that depends on rounding: training then amplifies it)
            tolerance = 1e-10 if recipe == "lp-ft" else 1e-6
            assert acc == alone and worst < tolerance, (method.name, ep.index, acc, alone, worst)
        else:  # float32: within one query image per episode (the weights too, unless L-BFGS fitted the head:
            # its stopping point moves with float32 rounding)
            tolerance = 1e-3 if recipe == "lp-ft" else 0.1
            assert abs(acc - alone) * queries <= 1 and worst < tolerance, (method.name, ep.index, acc, alone, worst)


@pytest.mark.parametrize("recipe", ["default", "paper"])
def test_run_episodes_gives_the_same_rows_stacked_or_one_at_a_time(episodes, recipe):
    """Both recipes (steps with LP-FT; the paper's epochs), mixed stack keys (the frozen learngene
    trains apart; the whole backbone's own schedule shares the stack), a frozen-feature baseline
    (fitted one at a time in both paths), stacks of at most 3, float64."""
    cfg = (
        RECIPE.replace(stack_size=3)
        if recipe == "default"
        else FewShotConfig.from_recipe("paper", epochs=2, batch_size=4, device="cpu", stack_size=3)
    )
    stacked = run_episodes(methods(torch.float64), episodes, cfg, progress=False)
    alone = run_episodes(methods(torch.float64), episodes, cfg.replace(stack=False), progress=False)
    assert stacked == alone
    assert [r["index"] for r in stacked] == [ep.index for ep in episodes]


def test_models_that_cannot_be_stacked_train_one_at_a_time(episodes):
    class Custom(IndividualModel):  # any other model class: not reproduced by the stacked network
        pass

    lg = tiny_learngene((0, 1))
    custom = lambda n: Custom(IndividualConfig.for_learngene(lg, n, **HEAD))  # noqa: E731
    plain = lambda n: IndividualModel(IndividualConfig.for_learngene(lg, n, **HEAD))  # noqa: E731
    assert stack_key(custom(3)) is None and stack_key(plain(3)) is not None
    cfg = RECIPE
    jobs = [Descendant(custom, episodes[0]), Descendant(plain, episodes[0])]
    custom_acc, plain_acc = run_descendants(jobs, cfg)
    assert custom_acc == pytest.approx(plain_acc, abs=1 / episodes[0].query_labels.numel() + 1e-9)


def test_a_stack_refuses_models_of_different_architectures(episodes):
    lg = tiny_learngene((0, 1))
    a = IndividualModel(IndividualConfig.for_learngene(lg, 3, **HEAD))
    b = IndividualModel(IndividualConfig.for_learngene(lg, 3, head_hidden=[8]))
    with pytest.raises(ConfigError, match="stack_key"):
        train_and_evaluate_stacked([a, b], [episodes[0]] * 2, [0, 0], [RECIPE, RECIPE])
    with pytest.raises(ConfigError, match="recipe_key"):
        train_and_evaluate_stacked([a, a], [episodes[0]] * 2, [0, 0], [RECIPE, RECIPE.replace(batch_size=2)])
    with pytest.raises(ConfigError, match="stack_size"):
        FewShotConfig(stack_size=0)
