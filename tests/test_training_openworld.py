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
