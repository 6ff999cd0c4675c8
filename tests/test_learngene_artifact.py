"""Learngene save/load round trips and validation of damaged or inconsistent artifacts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from learngene_hf import CollectiveConfig, CollectiveModel
from learngene_hf.artifact.config import CONFIG_NAME, WEIGHTS_NAME
from learngene_hf.artifact.learngene import Learngene
from learngene_hf.errors import ArtifactError


@pytest.fixture
def collective() -> CollectiveModel:
    torch.manual_seed(0)
    model = CollectiveModel(CollectiveConfig(preset="tiny", task_num_labels=[5]))
    with torch.no_grad():  # non-trivial BatchNorm buffers, so the round trip checks them too
        for block in model.blocks:
            block.bn.running_mean.normal_()
            block.bn.running_var.uniform_(0.5, 2.0)
            block.bn.num_batches_tracked.fill_(7)
    return model


@pytest.fixture
def saved(collective, tmp_path) -> Path:
    learngene = Learngene.from_collective(collective, [1, 2, 3], source={"run_dir": "/runs/x"})
    return learngene.save_pretrained(tmp_path / "lg")


def test_extract_save_load_gives_the_collective_model_tensors(collective, saved):
    loaded = Learngene.from_pretrained(saved)
    assert loaded.config.layer_names == ["conv1", "conv2", "conv3"]
    for j, index in enumerate([1, 2, 3]):
        state = collective.blocks[index].state_dict()
        block = loaded.block_state_dict(j)
        assert set(block) == set(state)
        for name, tensor in state.items():
            assert torch.equal(block[name], tensor), name
    assert loaded.config.position == "output" and loaded.config.in_channels == 8 and loaded.config.out_channels == 16
    assert loaded.config.sizes["learngene_parameters"] < loaded.config.sizes["collective_parameters"]


def test_saved_folder_holds_safetensors_with_metadata_json_and_card(saved):
    assert sorted(p.name for p in saved.iterdir()) == sorted(["README.md", CONFIG_NAME, WEIGHTS_NAME])
    with safe_open(str(saved / WEIGHTS_NAME), framework="pt") as handle:
        meta = handle.metadata()
    assert meta["format"] == "learngene-hf" and meta["format_version"] == "1"
    assert json.loads(meta["layers"]) == ["conv1", "conv2", "conv3"]
    config = json.loads((saved / CONFIG_NAME).read_text())
    assert config["format"] == "learngene-hf" and config["source"]["run_dir"] == "/runs/x"


def test_save_replaces_an_older_learngene_and_leaves_no_temporary_files(collective, saved):
    Learngene.from_collective(collective, [0, 1]).save_pretrained(saved)
    assert Learngene.from_pretrained(saved).config.layer_names == ["conv0", "conv1"]
    assert not [p for p in saved.parent.iterdir() if p.name.startswith(".")]


def test_truncated_safetensors_raises_an_artifact_error_saying_to_resave(saved):
    data = (saved / WEIGHTS_NAME).read_bytes()
    (saved / WEIGHTS_NAME).write_bytes(data[: len(data) // 2])
    with pytest.raises(ArtifactError, match="truncated or corrupt.*re-save"):
        Learngene.from_pretrained(saved)


def test_corrupt_config_json_raises_an_artifact_error(saved):
    (saved / CONFIG_NAME).write_text('{"layers": [')
    with pytest.raises(ArtifactError, match="not valid JSON"):
        Learngene.from_pretrained(saved)


def _edit_config(folder: Path, edit) -> None:
    data = json.loads((folder / CONFIG_NAME).read_text())
    edit(data)
    (folder / CONFIG_NAME).write_text(json.dumps(data))


def test_config_whose_layers_do_not_chain_is_rejected(saved):
    _edit_config(saved, lambda d: d["layers"][1].update(out_channels=32))
    with pytest.raises(ArtifactError, match="do not chain"):
        Learngene.from_pretrained(saved)


def test_config_with_a_wrong_channel_contract_is_rejected(saved):
    _edit_config(saved, lambda d: d.update(out_channels=64))
    with pytest.raises(ArtifactError, match="channel contract"):
        Learngene.from_pretrained(saved)


def test_config_that_does_not_match_the_tensor_shapes_is_rejected(saved):
    def widen(d):  # a consistent config for wider layers than the file holds
        d["layers"][2].update(out_channels=32)
        d["out_channels"] = 32

    _edit_config(saved, widen)
    with pytest.raises(
        ArtifactError, match=r"blocks\.2\.conv\.weight has shape \[16, 16, 3, 3\], expected \[32, 16, 3, 3\]"
    ):
        Learngene.from_pretrained(saved)


def test_config_naming_other_layers_than_the_tensors_is_rejected(saved):
    _edit_config(saved, lambda d: d["layers"][0].update(name="conv9"))
    with pytest.raises(ArtifactError, match="config does not match the tensors"):
        Learngene.from_pretrained(saved)


def test_missing_unexpected_and_wrong_dtype_tensors_are_all_named(saved):
    path = saved / WEIGHTS_NAME
    with safe_open(str(path), framework="pt") as handle:
        meta = handle.metadata()
    tensors = load_file(str(path))
    del tensors["blocks.0.bn.bias"]
    tensors["blocks.9.extra"] = torch.zeros(1)
    tensors["blocks.1.bn.num_batches_tracked"] = torch.tensor(1.0)
    save_file(tensors, str(path), metadata=meta)
    with pytest.raises(ArtifactError) as info:
        Learngene.from_pretrained(saved)
    message = str(info.value)
    assert "missing tensors ['blocks.0.bn.bias']" in message
    assert "unexpected tensors ['blocks.9.extra']" in message
    assert "blocks.1.bn.num_batches_tracked has dtype torch.float32, expected torch.int64" in message


def test_a_safetensors_file_from_another_library_is_rejected(saved):
    tensors = load_file(str(saved / WEIGHTS_NAME))
    save_file(tensors, str(saved / WEIGHTS_NAME), metadata={"format": "pt"})
    with pytest.raises(ArtifactError, match="not written by learngene-hf"):
        Learngene.from_pretrained(saved)


def test_a_newer_format_version_asks_to_upgrade(saved):
    _edit_config(saved, lambda d: d.update(format_version=99))
    with pytest.raises(ArtifactError, match="upgrade learngene-hf"):
        Learngene.from_pretrained(saved)


def test_missing_files_and_paths_give_clear_errors(saved, tmp_path):
    (saved / WEIGHTS_NAME).unlink()
    with pytest.raises(ArtifactError, match="no learngene.safetensors"):
        Learngene.from_pretrained(saved)
    with pytest.raises(ArtifactError, match="not a folder holding a learngene"):
        Learngene.from_pretrained(tmp_path / "does" / "not" / "exist")


def test_saving_an_inconsistent_learngene_fails_before_writing(collective, tmp_path):
    learngene = Learngene.from_collective(collective, [0, 1])
    learngene.tensors["blocks.0.conv.weight"] = torch.zeros(1)
    with pytest.raises(ArtifactError, match="blocks.0.conv.weight has shape"):
        learngene.save_pretrained(tmp_path / "bad")
    assert not (tmp_path / "bad" / WEIGHTS_NAME).exists()
