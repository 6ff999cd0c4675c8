"""Lineage on the Hub: the cards of pushed models and learngenes say where they came from, read
back with ``huggingface_hub.ModelCard`` from the local Hub server."""

from __future__ import annotations

import torch
from helpers import tiny_learngene
from huggingface_hub import ModelCard

import learngene_hf
from learngene_hf import CollectiveConfig, CollectiveModel, IndividualConfig, IndividualModel, Inheritor
from learngene_hf.models.hub_card import LEARNGENE_PAPER, TLEG_PAPER
from learngene_hf.models.vit_collective import ViTCollectiveConfig, ViTCollectiveModel


def test_descendant_card_names_the_learngene_repo_as_base_model_with_its_commit(hub):
    learngene_sha = tiny_learngene().push_to_hub("org/learngene").oid
    descendant = learngene_hf.from_learngene("org/learngene", num_labels=3)
    descendant.push_to_hub("org/descendant", tags=["my-task"])
    card = ModelCard.load("org/descendant")
    assert card.data.library_name == "learngene-hf"
    assert card.data.base_model == "org/learngene"
    assert {"learngene", "learngene-hf", "vgg-bn", "individual-model", "my-task"} <= set(card.data.tags)
    assert card.data.pipeline_tag == "image-classification"
    assert learngene_sha in card.text and LEARNGENE_PAPER in card.text
    assert 'timm.create_model("hf-hub:org/descendant", pretrained=True)' in card.text


def test_vit_descendant_card_links_both_papers_and_its_learngene(hub):
    torch.manual_seed(0)
    collective = ViTCollectiveModel(ViTCollectiveConfig(preset="vit-tiny", task_num_labels=[3]))
    sha = Inheritor(collective).extract().push_to_hub("org/vit-learngene").oid
    descendant = learngene_hf.from_learngene("org/vit-learngene", num_labels=2, num_blocks=2)
    descendant.push_to_hub("org/vit-descendant")
    card = ModelCard.load("org/vit-descendant")
    assert card.data.base_model == "org/vit-learngene" and "vision-transformer" in card.data.tags
    assert "tleg" in card.data.tags and sha in card.text
    assert LEARNGENE_PAPER in card.text and TLEG_PAPER in card.text


def test_models_without_a_hub_learngene_have_no_base_model(hub, tmp_path):
    scratch = IndividualModel(IndividualConfig(widths=[4, 8], pool=[True, False], head_hidden=[8], num_labels=2))
    scratch.push_to_hub("org/scratch")
    local = tiny_learngene().save_pretrained(tmp_path / "learngene")
    learngene_hf.from_learngene(local, num_labels=3).push_to_hub("org/from-folder")
    for repo in ("org/scratch", "org/from-folder"):
        card = ModelCard.load(repo)
        assert card.data.library_name == "learngene-hf" and card.data.base_model is None
    assert "from scratch" in ModelCard.load("org/scratch").text


def test_learngene_card_names_its_collective_model_once_that_is_on_the_hub(hub):
    torch.manual_seed(0)
    inheritor = Inheritor(CollectiveModel(CollectiveConfig(preset="tiny", task_num_labels=[3])))
    collective_sha = inheritor.push_collective_to_hub("org/collective").oid
    collective_card = ModelCard.load("org/collective")
    assert "collective-model" in collective_card.data.tags and collective_card.data.base_model is None
    inheritor.extract(layers=[1, 2])
    inheritor.push_to_hub("org/learngene")
    card = ModelCard.load("org/learngene")
    assert card.data.base_model == "org/collective" and card.data.library_name == "learngene-hf"
    assert collective_sha in card.text and LEARNGENE_PAPER in card.text
    assert learngene_hf.Learngene.from_pretrained("org/learngene").config.source["commit_sha"] == collective_sha
