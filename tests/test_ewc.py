"""EWC: the penalty follows growth, changes the loss, and reduces forgetting of the first task."""

from __future__ import annotations

import pytest
import torch
from helpers import striped_data

from learngene_hf import CollectiveConfig, CollectiveModel
from learngene_hf.training.config import CollectiveTrainingConfig
from learngene_hf.training.ewc import EWC, stable_parameters
from learngene_hf.training.trainer import train_collective


def _batches(model: CollectiveModel, n: int = 2):
    gen = torch.Generator().manual_seed(1)
    return [(torch.randn(8, 3, 16, 16, generator=gen), torch.randint(0, 3, (8,), generator=gen)) for _ in range(n)]


def test_penalty_is_zero_until_consolidated_then_grows_with_drift():
    torch.manual_seed(0)
    model = CollectiveModel(CollectiveConfig(preset="tiny"))
    model.add_task(3)
    ewc = EWC(10.0)
    assert float(ewc.penalty(model).detach()) == 0.0
    ewc.consolidate(model, _batches(model), task_id=0)
    assert float(ewc.penalty(model).detach()) == pytest.approx(0.0, abs=1e-12)
    with torch.no_grad():
        for p in model.blocks[0].parameters():
            p.add_(0.1)
    assert float(ewc.penalty(model).detach()) > 0.0
    assert all(not name.startswith("head") for name in ewc.fisher)


def test_growth_reanchors_changed_parameters_and_zero_pads_their_fisher():
    torch.manual_seed(0)
    model = CollectiveModel(CollectiveConfig(preset="tiny"))
    model.add_task(3)
    ewc = EWC(1.0)
    ewc.consolidate(model, _batches(model), task_id=0)
    old = ewc.fisher["conv1.conv.weight"].clone()
    model.widen(1, 12, generator=torch.Generator().manual_seed(0))
    model.deepen(1)  # inserts a layer: stable names keep conv2/conv3 matched
    ewc.sync(model)
    new = ewc.fisher["conv1.conv.weight"]
    assert new.shape[0] == 12
    torch.testing.assert_close(new[:8], old)
    assert torch.all(new[8:] == 0)
    assert float(ewc.penalty(model).detach()) == pytest.approx(0.0, abs=1e-10)  # growth preserves the anchor


def test_ewc_changes_the_loss_and_reduces_forgetting_of_the_first_task(tmp_path):
    data = striped_data()
    results = {}
    for weight in (0.0, 50.0):
        config = CollectiveTrainingConfig.for_preset(
            "tiny",
            num_tasks=3,
            epochs_per_task=5,
            lr=0.03,
            train_per_class=40,
            test_per_class=20,
            growth="none",
            ewc_weight=weight,
            record_gradients=False,
            base=list(range(15)),
            open_world=[],
            novel=[],
        )
        run = train_collective(config, tmp_path / f"ewc{weight}", data=data, resume=False, progress=False)
        results[weight] = run.report["tasks"]
    off, on = results[0.0], results[50.0]
    assert off[0]["epoch_losses"] == on[0]["epoch_losses"]  # identical until EWC has a task to protect
    assert off[1]["epoch_losses"] != on[1]["epoch_losses"]
    assert all(p == 0.0 for p in off[1]["epoch_ewc_penalties"]) and on[1]["epoch_ewc_penalties"][-1] > 0
    drop_off = off[0]["accuracy_after"] - off[0]["accuracy_end"]
    drop_on = on[0]["accuracy_after"] - on[0]["accuracy_end"]
    assert drop_on < drop_off


def test_cap_bounds_each_parameters_curvature_and_the_penalty_gradient():
    torch.manual_seed(0)
    model = CollectiveModel(CollectiveConfig(preset="tiny"))
    model.add_task(3)
    ewc = EWC(1e9, max_curvature=5.0)
    ewc.consolidate(model, _batches(model), task_id=0)
    assert 0.0 < ewc.capped_fraction() < 1.0  # a random model's Fisher is tiny: only its largest entries reach the cap
    name = "conv0.conv.weight"
    coef = ewc.coefficient(name)
    assert float(coef.max()) == 5.0 and float(coef.min()) < 5.0
    torch.testing.assert_close(coef, (1e9 * ewc.fisher[name]).clamp(max=5.0))
    param = stable_parameters(model)[name]
    with torch.no_grad():
        param.add_(0.01)
    model.zero_grad()
    ewc.penalty(model).backward()
    # d/dtheta of 1/2 c (theta - anchor)^2 is c (theta - anchor), with c never above the cap
    torch.testing.assert_close(param.grad, coef * 0.01, rtol=1e-4, atol=1e-8)
    assert EWC(1.0).capped_fraction() == 0.0  # no cap, nothing capped


def test_sgd_max_curvature_is_half_the_stability_limit_and_rejects_bad_values():
    from learngene_hf.errors import ConfigError
    from learngene_hf.training.ewc import sgd_max_curvature

    assert sgd_max_curvature(0.03, 0.9) == pytest.approx(0.5 * 2 * 1.9 / 0.03)
    with pytest.raises(ConfigError, match="momentum"):
        sgd_max_curvature(0.1, 1.0)
    with pytest.raises(ConfigError, match="max_curvature"):
        EWC(1.0, max_curvature=0.0)


def test_a_huge_ewc_weight_diverges_without_the_cap_and_stays_finite_with_it(tmp_path):
    import math

    from learngene_hf.errors import DataError

    data = striped_data()
    finite = {}
    for cap in (False, True):
        config = CollectiveTrainingConfig.for_preset(
            "tiny",
            num_tasks=3,
            epochs_per_task=3,
            lr=0.05,
            train_per_class=40,
            test_per_class=20,
            growth="none",
            ewc_weight=1e7,
            ewc_cap=cap,
            record_gradients=False,
            base=list(range(15)),
            open_world=[],
            novel=[],
        )
        try:
            run = train_collective(config, tmp_path / f"cap{cap}", data=data, resume=False, progress=False)
            tasks = run.report["tasks"]
            finite[cap] = all(math.isfinite(x) for t in tasks for x in t["epoch_losses"] + t["epoch_ewc_penalties"])
        except DataError:  # NaN scores stop the run
            finite[cap] = False
    assert finite == {False: False, True: True}
    assert run.report["tasks"][1]["ewc_capped_fraction"] > 0
