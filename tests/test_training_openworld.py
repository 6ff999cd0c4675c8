"""Rank-based AUROC (ties count one half) and the model's unknown score."""

from __future__ import annotations

import pytest
import torch

from learngene_hf import CollectiveConfig, CollectiveModel
from learngene_hf.errors import DataError
from learngene_hf.openworld import auroc


def _pairwise(unknown, known) -> float:
    wins = sum((u > k) + 0.5 * (u == k) for u in unknown for k in known)
    return wins / (len(unknown) * len(known))


def test_auroc_perfect_reversed_and_tied():
    assert auroc([3.0, 4.0], [1.0, 2.0]) == 1.0
    assert auroc([1.0, 2.0], [3.0, 4.0]) == 0.0
    assert auroc([1.0, 1.0], [1.0, 1.0, 1.0]) == 0.5


def test_auroc_equals_pairwise_count_with_ties():
    gen = torch.Generator().manual_seed(0)
    unknown = torch.randint(0, 6, (40,), generator=gen).float()
    known = torch.randint(0, 6, (55,), generator=gen).float()
    assert auroc(unknown, known) == pytest.approx(_pairwise(unknown.tolist(), known.tolist()))


def test_auroc_rejects_empty_or_nan_scores():
    with pytest.raises(DataError, match="at least one score"):
        auroc([], [1.0])
    with pytest.raises(DataError, match="NaN"):
        auroc([float("nan")], [1.0])


def test_unknown_score_covers_all_known_heads():
    torch.manual_seed(0)
    model = CollectiveModel(CollectiveConfig(preset="tiny")).eval()
    model.add_task(3)
    model.add_task(4)
    x = torch.randn(5, 3, 16, 16)
    both = model.unknown_score(x, method="msp")
    first = model.unknown_score(x, task_ids=[0], method="msp")
    assert both.shape == (5,)
    assert torch.all(both <= first + 1e-6)  # more heads can only make an image look more familiar


def test_mahalanobis_score_separates_far_clusters_and_round_trips():
    from learngene_hf.openworld import ClassGaussians

    gen = torch.Generator().manual_seed(0)
    centres = torch.tensor([[0.0, 0.0, 0.0], [6.0, 0.0, 0.0]])
    labels = torch.arange(2).repeat_interleave(50)
    known = centres[labels] + torch.randn(100, 3, generator=gen) * 0.5
    gaussians = ClassGaussians()
    gaussians.add(known[:50], labels[:50])   # one task per class: two components
    gaussians.add(known[50:], labels[50:])
    assert len(gaussians) == 2
    torch.testing.assert_close(gaussians.means, centres, atol=0.3, rtol=0)
    unknown = torch.tensor([3.0, 5.0, 0.0]) + torch.randn(40, 3, generator=gen) * 0.5
    held_out = centres[torch.arange(2).repeat(20)] + torch.randn(40, 3, generator=gen) * 0.5
    assert auroc(gaussians.score(unknown), gaussians.score(held_out)) > 0.99
    again = ClassGaussians()
    again.load_state_tensors(gaussians.state_tensors())
    torch.testing.assert_close(again.score(unknown), gaussians.score(unknown))
    with pytest.raises(DataError, match="no component"):
        ClassGaussians().precision()
    with pytest.raises(DataError, match="dims"):
        gaussians.add(torch.randn(4, 5), torch.zeros(4, dtype=torch.long))


def test_unknown_scores_give_every_score_from_one_embedding():
    from learngene_hf.openworld import OPEN_WORLD_SCORES, ClassGaussians, unknown_scores

    torch.manual_seed(0)
    model = CollectiveModel(CollectiveConfig(preset="tiny")).eval()
    model.add_task(3)
    model.add_task(4)
    x = torch.randn(6, 3, 16, 16)
    scores = unknown_scores(model, x)
    assert set(scores) == {"energy", "msp"}
    torch.testing.assert_close(scores["energy"], model.unknown_score(x, method="energy"))
    torch.testing.assert_close(scores["msp"], model.unknown_score(x, method="msp"))
    gaussians = ClassGaussians()
    gaussians.add(model.embed(torch.randn(20, 3, 16, 16)), torch.arange(2).repeat(10))
    scores = unknown_scores(model, x, gaussians)
    assert set(scores) == set(OPEN_WORLD_SCORES)
    assert scores["mahalanobis"].shape == (6,) and torch.all(scores["mahalanobis"] >= -1e-4)
