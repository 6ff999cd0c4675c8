"""timm users load what the library pushes: ``timm.create_model("hf-hub:org/name", pretrained=True)``
on the local Hub server gives the same logits as the transformers class.

timm downloads with ``huggingface_hub.hf_hub_download`` and no endpoint of its own, so it reads
``HF_ENDPOINT`` like every other client; ``tests/conftest.py`` points that at the ``hub``
fixture's server. Every load below pins the pushed commit (``@sha``) and uses a fresh
``cache_dir``, and the test checks that the files of that commit landed there.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import timm
import torch
from helpers import tiny_learngene

import learngene_hf
from learngene_hf import CollectiveConfig, CollectiveModel, IndividualConfig, IndividualModel
from learngene_hf.models.timm_hub import TIMM_CONFIG_KEYS, timm_state_dict
from learngene_hf.models.vit_collective import ViTCollectiveConfig, ViTCollectiveModel
from learngene_hf.models.vit_individual import ViTIndividualConfig, ViTIndividualModel


def _models() -> dict[str, tuple[torch.nn.Module, int]]:
    """One small model of every family the library pushes, with its input size."""
    torch.manual_seed(0)
    collective = CollectiveModel(CollectiveConfig(preset="tiny", task_num_labels=[3, 4]))
    collective.add_task(2, id2label={0: "cat", 1: "dog"})
    individual = IndividualModel(
        IndividualConfig(widths=[4, 8], pool=[True, False], head_hidden=[8], num_labels=2, image_size=16)
    )
    vit_individual = ViTIndividualModel(ViTIndividualConfig(embed_dim=16, depth=2, num_heads=2, patch_size=8))
    vit_collective = ViTCollectiveModel(ViTCollectiveConfig(preset="vit-tiny", task_num_labels=[3, 5]))
    return {
        "collective": (collective, 16),
        "individual": (individual, 16),
        "vit_individual": (vit_individual, 32),
        "vit_collective": (vit_collective, 32),
    }


def _timm_from_hub(repo_id: str, sha: str, cache: Path) -> torch.nn.Module:
    model = timm.create_model(f"hf-hub:{repo_id}@{sha}", pretrained=True, cache_dir=cache)
    snapshot = cache / f"models--{repo_id.replace('/', '--')}" / "snapshots" / sha
    assert (snapshot / "config.json").is_file() and (snapshot / "model.safetensors").is_file()
    return model.eval()


def _same_logits(model: torch.nn.Module, timm_model: torch.nn.Module, size: int) -> None:
    x = torch.randn(3, 3, size, size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = model.eval()(x).logits
        got = timm_model(x)
    assert got.shape == expected.shape
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)


@pytest.mark.parametrize("family", ["collective", "individual", "vit_individual", "vit_collective"])
def test_pushed_models_load_with_timm_create_model_hf_hub_and_give_the_same_logits(hub, tmp_path, family):
    import huggingface_hub

    assert huggingface_hub.constants.ENDPOINT == hub  # what timm's hf_hub_download uses
    model, size = _models()[family]
    sha = model.push_to_hub(f"org/{family}").oid
    timm_model = _timm_from_hub(f"org/{family}", sha, tmp_path / "timm_cache")
    _same_logits(model, timm_model, size)
    if family == "collective":  # the newest head and its class names
        assert timm_model.pretrained_cfg["label_names"] == ["cat", "dog"]
        assert timm_model.num_classes == 2


def test_descendant_pulled_from_a_learngene_and_pushed_back_loads_in_timm(hub, tmp_path):
    learngene_sha = tiny_learngene().push_to_hub("org/learngene").oid
    descendant = learngene_hf.from_learngene("org/learngene", num_labels=3, revision=learngene_sha)
    sha = descendant.push_to_hub("org/descendant").oid
    _same_logits(descendant, _timm_from_hub("org/descendant", sha, tmp_path / "timm_cache"), 16)


def test_to_timm_export_pushed_by_timm_loads_back_with_the_same_logits(hub, tmp_path):
    descendant = learngene_hf.from_learngene(tiny_learngene(), num_labels=3)
    exported = descendant.to_timm()
    assert not any(key.startswith(("individual.", "classifier.")) for key in exported.state_dict())
    _same_logits(descendant, exported.eval(), 16)
    timm.models.push_to_hf_hub(exported, "org/timm-format", safe_serialization=True)
    sha = _repo_sha("org/timm-format")
    _same_logits(descendant, _timm_from_hub("org/timm-format", sha, tmp_path / "timm_cache"), 16)


def _repo_sha(repo_id: str) -> str:
    from huggingface_hub import HfApi

    return HfApi().repo_info(repo_id).sha


def test_timm_section_is_written_beside_transformers_keys_and_dropped_on_load(tmp_path):
    from transformers import AutoConfig, AutoModelForImageClassification

    model, _ = _models()["collective"]
    model.save_pretrained(tmp_path / "saved")
    saved = json.loads((tmp_path / "saved" / "config.json").read_text())
    assert saved["architecture"] == "learngene_vgg_tiny"  # timm's key
    assert saved["architectures"] == ["CollectiveForImageClassification"]  # transformers' key
    assert saved["model_args"]["widths"] == model.config.widths and saved["num_classes"] == 2
    config = AutoConfig.from_pretrained(tmp_path / "saved")
    assert not [key for key in (*TIMM_CONFIG_KEYS, "image_processor_type") if hasattr(config, key)]
    reloaded = AutoModelForImageClassification.from_pretrained(tmp_path / "saved")
    reloaded.widen(0, 12)  # a grown copy saves its new shape for timm
    reloaded.save_pretrained(tmp_path / "grown")
    grown = json.loads((tmp_path / "grown" / "config.json").read_text())
    assert grown["model_args"]["widths"][0] == 12
    timm_model = timm.create_model(f"local-dir:{tmp_path / 'grown'}", pretrained=True)
    _same_logits(reloaded, timm_model.eval(), 16)


def test_timm_state_dict_keeps_the_newest_task_head_and_timm_names():
    state = {
        "collective.vgg.blocks.0.conv.weight": 1,
        "heads.0.weight": 2,
        "heads.10.weight": 3,
        "heads.2.weight": 4,
        "classifier.bias": 5,
        "vit.pos_embed": 6,
        "blocks.1.bn.weight": 7,
    }
    assert timm_state_dict(state) == {
        "blocks.0.conv.weight": 1,
        "head.weight": 3,
        "head.bias": 5,
        "pos_embed": 6,
        "blocks.1.bn.weight": 7,
    }
