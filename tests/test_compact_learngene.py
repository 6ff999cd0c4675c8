"""Learngenes that carry more per byte: narrower copies by weight selection, distillation, and the
choice among candidates under a budget of bytes."""

from __future__ import annotations

import pytest
import torch

from learngene_hf import CollectiveConfig, CollectiveModel, IndividualModel
from learngene_hf.artifact.learngene import Learngene
from learngene_hf.artifact.narrow import block_bytes, select_evenly, widths_for_budget
from learngene_hf.errors import ConfigError, DataError
from learngene_hf.selection.compact import budget_candidates, distill_learngene, select_under_budget


@pytest.fixture
def collective() -> CollectiveModel:
    torch.manual_seed(0)
    model = CollectiveModel(CollectiveConfig(preset="tiny", task_num_labels=[5]))  # widths 8-8-16-16
    with torch.no_grad():
        for block in model.blocks:
            block.bn.running_mean.normal_()
            block.bn.running_var.uniform_(0.5, 2.0)
    return model


def test_full_widths_copy_the_blocks_unchanged(collective):
    plain = Learngene.from_collective(collective, [0, 1, 2])
    same = Learngene.from_collective(collective, [0, 1, 2], widths=[8, 8, 16])
    assert plain.tensors.keys() == same.tensors.keys()
    assert all(torch.equal(plain.tensors[k], same.tensors[k]) for k in plain.tensors)
    assert "channel_selection" not in same.config.source


def test_narrow_learngene_keeps_evenly_spaced_channels_layer_to_layer(collective, tmp_path):
    narrow = Learngene.from_collective(collective, [0, 1, 2, 3], widths=[4, 4, 8, 8])
    assert narrow.config.widths == [4, 4, 8, 8] and narrow.config.in_channels == 3
    conv1 = collective.blocks[1].conv.weight
    assert torch.equal(narrow.tensors["blocks.1.conv.weight"], select_evenly(conv1, (4, 4, 3, 3)))
    kept = torch.linspace(0, 15, 8).round().long()
    assert torch.equal(narrow.tensors["blocks.2.bn.running_var"], collective.blocks[2].bn.running_var[kept])
    assert narrow.config.source["channel_selection"]["source_widths"] == [8, 8, 16, 16]
    folder = narrow.save_pretrained(tmp_path / "narrow")
    loaded = Learngene.from_pretrained(folder)  # validated on load
    card = (folder / "README.md").read_text()
    assert (
        "Narrower than in the collective model: the layers are taken at widths 4-4-8-8 of the collective's 8-8-16-16"
        in card
    )
    model = IndividualModel.from_learngene(loaded, num_labels=3, size="tiny")
    assert model(torch.randn(2, 3, 16, 16)).logits.shape == (2, 3)


def test_narrow_learngene_rejects_widths_it_cannot_select(collective):
    with pytest.raises(ConfigError, match="one width per layer"):
        Learngene.from_collective(collective, [0, 1], widths=[4])
    with pytest.raises(ConfigError, match="only narrows"):
        Learngene.from_collective(collective, [0, 1], widths=[4, 9])


def test_widths_for_budget_fit_the_budget_and_count_bytes_as_stored(collective):
    full = Learngene.from_collective(collective, [0, 1])
    assert block_bytes(3, [8, 8], 3) == full.num_bytes()
    widths = widths_for_budget(collective, [0, 1, 2, 3], full.num_bytes())
    narrow = Learngene.from_collective(collective, [0, 1, 2, 3], widths=widths)
    assert narrow.num_bytes() <= full.num_bytes() and widths != [8, 8, 16, 16]
    assert widths_for_budget(collective, [0, 1, 2, 3], 100) is None


def test_budget_candidates_are_named_by_depth_and_all_fit(collective):
    budget = Learngene.from_collective(collective, [0, 1]).num_bytes()
    found = budget_candidates(collective, budget, depths=[2, 3, 4])
    assert list(found) == ["first_2", "narrow_3", "narrow_4"]
    assert all(lg.num_bytes() <= budget for lg in found.values())
    assert [len(lg.config.layers) for lg in found.values()] == [2, 3, 4]
    with pytest.raises(ConfigError, match="out of range"):
        budget_candidates(collective, budget, depths=[5])


def test_distillation_brings_the_narrow_map_closer_to_the_collective_one(collective):
    narrow = Learngene.from_collective(collective, [0, 1, 2], widths=[4, 4, 8])
    images = torch.randint(0, 256, (96, 3, 16, 16), dtype=torch.uint8)
    distilled = distill_learngene(narrow, collective, images, epochs=4, lr=1e-2, batch_size=32)
    record = distilled.config.source["distillation"]
    assert record["loss_after"] < record["loss_before"]
    distilled.validate()
    assert distilled.tensors.keys() == narrow.tensors.keys()
    assert not torch.equal(distilled.tensors["blocks.0.conv.weight"], narrow.tensors["blocks.0.conv.weight"])
    with pytest.raises(DataError, match="uint8"):
        distill_learngene(narrow, collective, images.float())


def test_budget_selection_probes_only_what_fits_and_keeps_the_best(collective):
    found = budget_candidates(collective, Learngene.from_collective(collective, [0, 1]).num_bytes(), depths=[2, 3])
    found["first_4"] = Learngene.from_collective(collective, [0, 1, 2, 3])  # over the budget
    probed = []

    def probe(lg):
        probed.append(len(lg.config.layers))
        return [0.5, 0.6] if len(lg.config.layers) == 3 else [0.4, 0.5]

    budget = found["first_2"].num_bytes()
    result = select_under_budget(found, probe, budget)
    assert result["chosen"] == "narrow_3" and probed == [2, 3]
    assert "more than the budget" in result["candidates"]["first_4"]["skipped"]
    assert result["candidates"]["narrow_3"]["mean"] == pytest.approx(0.55)
    with pytest.raises(ConfigError, match="raise the budget"):
        select_under_budget({"first_4": found["first_4"]}, probe, budget)


def test_a_learngene_of_every_layer_defaults_to_the_linear_probe_size(collective):
    from learngene_hf.fewshot.config import DEFAULT_SIZE, default_size

    whole = Learngene.from_collective(collective, [0, 1, 2, 3], widths=[4, 4, 8, 8])
    assert whole.config.position == "whole" and default_size(whole) == "tiny"
    assert default_size(Learngene.from_collective(collective, [0, 1])) == DEFAULT_SIZE == "small"
