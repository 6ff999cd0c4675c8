"""The VGG-BN family as a timm model: registry, default cfg, features_only, head API, growth."""

from __future__ import annotations

import pytest
import timm
import torch

import learngene_hf  # noqa: F401  (registers learngene_vgg_* with timm)
from learngene_hf import COLLECTIVE_PRESETS, CollectiveConfig, CollectiveModel, ConfigError
from learngene_hf.models.vgg import VGGBN


@pytest.mark.parametrize("size", ["tiny", "small", "paper"])
def test_every_size_is_a_registered_timm_model(size):
    name = f"learngene_vgg_{size}"
    assert name in timm.list_models("learngene_vgg_*")
    model = timm.create_model(name, pretrained=False, num_classes=5)
    assert isinstance(model, VGGBN) and model.widths == COLLECTIVE_PRESETS[size]["widths"]
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 5)
    cfg = model.pretrained_cfg
    assert cfg["input_size"] == (3, 32, 32) and tuple(cfg["mean"]) == (0.5, 0.5, 0.5) and cfg["classifier"] == "head"
    data_cfg = timm.data.resolve_data_config({}, model=model)
    assert data_cfg["input_size"] == (3, 32, 32) and data_cfg["std"] == (0.5, 0.5, 0.5)


def test_features_only_returns_one_map_per_requested_block():
    model = timm.create_model("learngene_vgg_small", features_only=True, out_indices=(1, 3, 5))
    maps = model(torch.randn(2, 3, 32, 32))
    assert [m.shape for m in maps] == [(2, 32, 16, 16), (2, 64, 8, 8), (2, 128, 4, 4)]
    assert model.feature_info.channels() == [32, 64, 128] and model.feature_info.reduction() == [2, 4, 8]
    every = timm.create_model("learngene_vgg_tiny", features_only=True)
    assert len(every(torch.randn(1, 3, 32, 32))) == len(COLLECTIVE_PRESETS["tiny"]["widths"])


def test_forward_head_pre_logits_and_reset_classifier():
    model = timm.create_model("learngene_vgg_tiny", num_classes=7).eval()
    x = torch.randn(3, 3, 32, 32)
    features = model.forward_features(x)
    assert features.shape == (3, 16, 8, 8)
    embedding = model.forward_head(features, pre_logits=True)
    assert embedding.shape == (3, model.head_hidden_size) == (3, 32)
    torch.testing.assert_close(model.get_classifier()(embedding), model(x))
    model.reset_classifier(0)
    torch.testing.assert_close(model(x), embedding)
    model.reset_classifier(4)
    assert model(x).shape == (3, 4) and model.num_classes == 4
    with pytest.raises(ConfigError, match="'avg'"):
        model.reset_classifier(4, global_pool="max")


def test_forward_intermediates_end_at_the_feature_map():
    model = timm.create_model("learngene_vgg_tiny", num_classes=0).eval()
    x = torch.randn(2, 3, 32, 32)
    final, intermediates = model.forward_intermediates(x)
    torch.testing.assert_close(final, model.forward_features(x))
    torch.testing.assert_close(intermediates[-1], final)
    assert [t.shape[1] for t in intermediates] == model.widths
    assert len(model.forward_intermediates(x, indices=2, intermediates_only=True)) == 2


def test_collective_and_timm_models_share_one_module_layout():
    """A collective model's backbone is the timm model: same state dict, same features."""
    collective = CollectiveModel(CollectiveConfig(preset="tiny"))
    collective.add_task(5)
    collective.eval()
    timm_model = timm.create_model("learngene_vgg_tiny", num_classes=0).eval()
    missing = timm_model.load_state_dict(collective.vgg.state_dict())
    assert not missing.missing_keys and not missing.unexpected_keys
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(timm_model(x), collective.embed(x))


def test_timm_model_growth_preserves_the_function():
    model = timm.create_model("learngene_vgg_tiny", num_classes=3)
    model.train()
    with torch.no_grad():
        model(torch.randn(8, 3, 32, 32))  # BatchNorm statistics that are not the identity
    model.eval()
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        before = model(x)
        model.widen(3, 24, generator=torch.Generator().manual_seed(0))
        model.deepen(1)
        after = model(x)
    assert model.widths == [8, 8, 8, 16, 24] and model.pool == [False, True, False, False, True]
    assert (after - before).abs().max().item() < 1e-5
    assert model.feature_info[-1]["num_chs"] == 24
