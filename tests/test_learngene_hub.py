"""Learngene push/pull against the local Hub-protocol server (no network)."""

from __future__ import annotations

import pytest
import torch
from huggingface_hub import HfApi, ModelCard, hf_hub_download

from learngene_hf import CollectiveConfig, CollectiveModel
from learngene_hf.artifact.learngene import Learngene
from learngene_hf.errors import ArtifactError, HubError
from learngene_hf.testing.hub_cards import validate_card_metadata


def tiny_learngene(seed: int, repo_id: str | None = "org/collective") -> Learngene:
    torch.manual_seed(seed)
    model = CollectiveModel(CollectiveConfig(preset="tiny", task_num_labels=[5]))
    task_stream = {"dataset": {"source": "uoft-cs/cifar100"}, "num_tasks": 3, "ways": 5, "classes": list(range(15))}
    return Learngene.from_collective(model, [0, 1, 2], source={"repo_id": repo_id}, task_stream=task_stream)


def test_pull_by_commit_sha_after_a_second_push_returns_the_first_version(hub):
    first, second = tiny_learngene(0), tiny_learngene(1)
    sha1 = first.push_to_hub("me/lg").oid
    sha2 = second.push_to_hub("me/lg", commit_message="second").oid
    assert sha1 != sha2
    old = Learngene.from_pretrained("me/lg", revision=sha1)
    new = Learngene.from_pretrained("me/lg")
    for name, tensor in first.tensors.items():
        assert torch.equal(old.tensors[name], tensor)
        assert torch.equal(new.tensors[name], second.tensors[name])
    assert old.config.source["pulled"] == {"repo_id": "me/lg", "revision": sha1, "commit_sha": sha1}
    assert new.config.source["pulled"]["commit_sha"] == sha2


def test_push_to_a_branch_leaves_main_unchanged(hub):
    tiny_learngene(0).push_to_hub("me/lg")
    tiny_learngene(1).push_to_hub("me/lg", revision="v2")
    assert torch.equal(
        Learngene.from_pretrained("me/lg", revision="v2").tensors["blocks.0.conv.weight"],
        tiny_learngene(1).tensors["blocks.0.conv.weight"],
    )
    assert torch.equal(
        Learngene.from_pretrained("me/lg").tensors["blocks.0.conv.weight"],
        tiny_learngene(0).tensors["blocks.0.conv.weight"],
    )


def test_model_card_passes_yaml_validation_and_names_the_source_model(hub):
    tiny_learngene(0).push_to_hub("me/lg")
    text = open(hf_hub_download("me/lg", "README.md"), encoding="utf-8").read()
    errors, warnings = validate_card_metadata(text)
    assert errors == [] and warnings == []
    card = ModelCard(text)
    assert card.data.library_name == "learngene-hf"
    assert "learngene" in card.data.tags
    assert card.data.base_model == "org/collective"
    assert card.data.datasets == ["uoft-cs/cifar100"]
    assert card.data.license == "apache-2.0"
    assert "org/collective" in card.text and 'Learngene.from_pretrained("me/lg")' in card.text
    files = sorted(HfApi().list_repo_files("me/lg"))
    assert {"README.md", "learngene.safetensors", "learngene_config.json"} <= set(files)


def test_missing_repo_raises_a_hub_error_saying_to_check_the_id(hub):
    with pytest.raises(HubError, match="not found.*Check the repo id"):
        Learngene.from_pretrained("me/nothing-here")


def test_unknown_revision_raises_a_hub_error(hub):
    tiny_learngene(0).push_to_hub("me/lg")
    with pytest.raises(HubError, match="Revision 'no-such-branch' does not exist"):
        Learngene.from_pretrained("me/lg", revision="no-such-branch")


def test_private_repo_without_a_token_asks_for_one(hub):
    tiny_learngene(0).push_to_hub("me/secret", private=True)  # as alice (HF_TOKEN of the hub fixture)
    with pytest.raises(HubError, match="token=") as info:
        Learngene.from_pretrained("me/secret", token=False)
    assert "private" in str(info.value)
    assert Learngene.from_pretrained("me/secret").config.num_layers == 3


def test_gated_repo_without_a_token_says_to_accept_the_gate(hub):
    tiny_learngene(0).push_to_hub("me/gated")
    HfApi().update_repo_settings("me/gated", gated="auto")
    with pytest.raises(HubError, match="gated.*accept"):
        Learngene.from_pretrained("me/gated", token=False)


def test_a_repo_that_is_not_a_learngene_is_rejected(hub, tmp_path):
    api = HfApi()
    api.create_repo("me/other")
    (tmp_path / "x.txt").write_text("hello")
    api.upload_file(path_or_fileobj=str(tmp_path / "x.txt"), path_in_repo="x.txt", repo_id="me/other")
    with pytest.raises(ArtifactError, match="no learngene_config.json"):
        Learngene.from_pretrained("me/other")
