"""Rank-based AUROC (ties count one half) and the model's unknown score."""

from __future__ import annotations

import pytest
import torch

from learngene_hf import CollectiveConfig, CollectiveModel
from learngene_hf.errors import DataError
from learngene_hf.training.openworld import auroc


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
    from learngene_hf.training.openworld import ClassGaussians

    gen = torch.Generator().manual_seed(0)
    centres = torch.tensor([[0.0, 0.0, 0.0], [6.0, 0.0, 0.0]])
    labels = torch.arange(2).repeat_interleave(50)
    known = centres[labels] + torch.randn(100, 3, generator=gen) * 0.5
    gaussians = ClassGaussians()
    gaussians.add(known[:50], labels[:50])  # one task per class: two components
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
    from learngene_hf.training.config import OPEN_WORLD_SCORES
    from learngene_hf.training.openworld import ClassGaussians, FeatureBank, unknown_scores

    torch.manual_seed(0)
    model = CollectiveModel(CollectiveConfig(preset="tiny")).eval()
    model.add_task(3)
    model.add_task(4)
    x = torch.randn(6, 3, 16, 16)
    scores = unknown_scores(model, x)
    assert set(scores) == {"energy", "msp", "maxlogit"}
    torch.testing.assert_close(scores["energy"], model.unknown_score(x, method="energy"))
    torch.testing.assert_close(scores["msp"], model.unknown_score(x, method="msp"))
    embedding = model.embed(x)
    best_logit = torch.stack([head(embedding).amax(1) for head in model.heads], 1).amax(1)
    torch.testing.assert_close(scores["maxlogit"], -best_logit)
    gaussians = ClassGaussians()
    train = model.embed(torch.randn(20, 3, 16, 16))
    gaussians.add(train, torch.arange(2).repeat(10))
    scores = unknown_scores(model, x, gaussians)
    assert set(scores) == set(OPEN_WORLD_SCORES) - {"knn"}
    assert scores["mahalanobis"].shape == (6,) and torch.all(scores["mahalanobis"] >= -1e-4)
    bank = FeatureBank(per_class=10)
    bank.add(train, torch.arange(2).repeat(10))
    scores = unknown_scores(model, x, gaussians, bank=bank, knn_k=2)
    assert set(scores) == set(OPEN_WORLD_SCORES)
    torch.testing.assert_close(scores["knn"], bank.score(model.embed(x), k=2))


def test_knn_score_is_larger_far_from_the_bank_than_for_held_out_known_features():
    from learngene_hf.training.openworld import FeatureBank

    gen = torch.Generator().manual_seed(0)
    centres = torch.nn.functional.normalize(torch.tensor([[1.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0]]), dim=1)
    labels = torch.arange(2).repeat_interleave(30)
    bank = FeatureBank(per_class=20)
    bank.add((centres[labels] + torch.randn(60, 4, generator=gen) * 0.1) * 7.0, labels, generator=gen)
    held_out = centres[torch.arange(2).repeat(15)] + torch.randn(30, 4, generator=gen) * 0.1
    far = torch.tensor([0.0, 0.0, 1.0, 0.0]) + torch.randn(30, 4, generator=gen) * 0.1
    # the embedding scale does not matter (the bank was added 7x larger): only directions count
    assert auroc(bank.score(far, k=3), bank.score(held_out, k=3)) == 1.0


def test_knn_bank_keeps_a_reproducible_subset_per_class_and_scores_the_kth_neighbour():
    from learngene_hf.training.openworld import FeatureBank

    angles = torch.tensor([0.0, 0.1, 0.3, 0.6, 1.0, 1.5])
    points = torch.stack([angles.cos(), angles.sin()], 1) * torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0, 6.0])[:, None]
    everything = FeatureBank(per_class=10)
    everything.add(points, torch.zeros(6, dtype=torch.long))
    assert len(everything) == 6 and everything.num_components == 1
    query = torch.tensor([[2.0, 0.0], [0.0, 0.5]])
    expected = (
        (torch.nn.functional.normalize(query, dim=1)[:, None] - everything.features[None]).norm(dim=2).sort(1).values
    )
    for k in (1, 3, 6):
        torch.testing.assert_close(everything.score(query, k=k), expected[:, k - 1])
    assert everything.score(query[:1], k=1).item() == pytest.approx(0.0, abs=1e-6)  # angle 0 is in the bank

    labels = torch.arange(3).repeat_interleave(10)
    features = torch.randn(30, 5, generator=torch.Generator().manual_seed(1))
    banks = []
    for seed in (0, 0, 1):
        bank = FeatureBank(per_class=4)
        bank.add(features, labels, generator=torch.Generator().manual_seed(seed))
        banks.append(bank)
    assert len(banks[0]) == 12 and banks[0].components.tolist() == [0] * 4 + [1] * 4 + [2] * 4
    torch.testing.assert_close(banks[0].features, banks[1].features)
    assert not torch.equal(banks[0].features, banks[2].features)
    unit = torch.nn.functional.normalize(features, dim=1)
    for row, component in zip(banks[0].features, banks[0].components):  # every kept row is one of its class's
        assert (unit[labels == component] - row).abs().amax(1).min() < 1e-6
    banks[0].add(features[:6], torch.zeros(6, dtype=torch.long))  # a later task: a new component
    assert banks[0].num_components == 4 and len(banks[0]) == 16
    with pytest.raises(DataError, match=r"k must be an integer in \[1, 16\]"):
        banks[0].score(features, k=17)


def test_knn_bank_round_trips_and_refuses_bad_shapes():
    from learngene_hf.training.openworld import FeatureBank

    bank = FeatureBank(per_class=3)
    with pytest.raises(DataError, match="empty"):
        bank.score(torch.randn(2, 4))
    features = torch.randn(12, 4, generator=torch.Generator().manual_seed(0))
    bank.add(features, torch.arange(2).repeat(6), generator=torch.Generator().manual_seed(0))
    again = FeatureBank(per_class=3)
    again.load_state_tensors(bank.state_tensors())
    torch.testing.assert_close(again.features, bank.features)
    assert again.components.tolist() == bank.components.tolist()
    torch.testing.assert_close(again.score(features, k=2), bank.score(features, k=2))
    with pytest.raises(DataError, match="keeps 3 embeddings per class"):
        FeatureBank(per_class=5).load_state_tensors(bank.state_tensors())
    with pytest.raises(DataError, match=r"knn/bank must be \[M, D\]"):
        FeatureBank(per_class=3).load_state_tensors(
            {**bank.state_tensors(), "knn/components": torch.zeros(2, dtype=torch.long)}
        )
    with pytest.raises(DataError, match="embedding width changed"):
        bank.add(torch.randn(4, 5), torch.zeros(4, dtype=torch.long))
    with pytest.raises(DataError, match=r"features \[N, D\] and labels \[N\]"):
        bank.add(torch.randn(4, 4), torch.zeros(3, dtype=torch.long))
    with pytest.raises(DataError, match=r"needs features \[N, 4\]"):
        bank.score(torch.randn(2, 5))
    with pytest.raises(DataError, match="positive integer"):
        FeatureBank(per_class=0)


def test_knn_options_are_validated_against_the_first_tasks_bank():
    from learngene_hf.errors import ConfigError
    from learngene_hf.training.config import CollectiveTrainingConfig

    with pytest.raises(ConfigError, match="open_world_knn_k must be a positive integer"):
        CollectiveTrainingConfig.for_preset("tiny", open_world_knn_k=0)
    with pytest.raises(ConfigError, match="open_world_bank_per_class must be a positive integer"):
        CollectiveTrainingConfig.for_preset("tiny", open_world_bank_per_class=-1)
    # tiny: 5 ways x min(50, 20 training images) = 100 embeddings after the first task
    assert CollectiveTrainingConfig.for_preset("tiny", open_world_knn_k=100).open_world_knn_k == 100
    with pytest.raises(ConfigError, match="open_world_knn_k=101 is more than the 100 embeddings"):
        CollectiveTrainingConfig.for_preset("tiny", open_world_knn_k=101)
    with pytest.raises(ConfigError, match="open_world_knn_k=11 is more than the 10 embeddings"):
        CollectiveTrainingConfig.for_preset("tiny", open_world_knn_k=11, open_world_bank_per_class=2)
