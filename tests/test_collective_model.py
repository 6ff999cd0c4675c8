"""CollectiveModel: forward, multi-head, function-preserving growth, save/load, Auto classes, errors."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoConfig, AutoModel, AutoModelForImageClassification
from transformers.modeling_outputs import ImageClassifierOutput

import learngene_hf  # noqa: F401  (registers the Auto classes)
from learngene_hf import (
    COLLECTIVE_PRESETS,
    CollectiveBaseModel,
    CollectiveConfig,
    CollectiveForImageClassification,
    CollectiveModel,
    ConfigError,
)


def _warmed_model(preset: str = "tiny", tasks=(5, 3), seed: int = 0) -> CollectiveModel:
    """A model whose BatchNorm statistics are not the identity, so growth is really tested."""
    torch.manual_seed(seed)
    model = CollectiveModel(CollectiveConfig(preset=preset))
    for n in tasks:
        model.add_task(n)
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.randn(8, 3, 32, 32) * 2 + 0.5)
    return model.eval()


def _max_diff(model, before, x, task_id=None):
    with torch.no_grad():
        return (model(x, task_id=task_id).logits - before).abs().max().item()


def test_paper_preset_matches_the_paper_architecture():
    config = CollectiveConfig()
    assert config.widths == [64, 64, 64, 64, 128, 128, 128, 256, 256, 256, 256, 256, 256]
    assert config.num_layers == 13 and sum(config.pool) == 5
    assert config.head_hidden == [1024, 1024] and config.dropout == 0.5
    model = CollectiveModel(config)
    model.add_task(5)
    out = model(torch.randn(2, 3, 32, 32), labels=torch.tensor([0, 4]))
    assert isinstance(out, ImageClassifierOutput)
    assert out.logits.shape == (2, 5) and out.loss.ndim == 0


def test_multi_head_forward_uses_the_requested_head():
    model = _warmed_model(tasks=(5, 3))
    x = torch.randn(4, 3, 32, 32)
    assert model(x).logits.shape == (4, 3)  # newest head by default
    assert model(x, task_id=0).logits.shape == (4, 5)
    assert model.add_task(7) == 2 and model.config.task_num_labels == [5, 3, 7]


@pytest.mark.parametrize("layer", [0, 1, 3])  # first, middle, last conv layer of "tiny"
def test_widen_preserves_the_function(layer):
    model = _warmed_model()
    x = torch.randn(6, 3, 32, 32)
    with torch.no_grad():
        before = [model(x, task_id=t).logits for t in range(2)]
    old = model.config.widths[layer]
    model.widen(layer, old + 7, generator=torch.Generator().manual_seed(layer))
    assert model.config.widths[layer] == old + 7
    assert model.blocks[layer].conv.out_channels == old + 7
    assert model.blocks[layer].bn.running_mean.shape == (old + 7,)
    for t in range(2):
        assert _max_diff(model, before[t], x, task_id=t) < 1e-4
    event = model.config.growth_log[-1]
    assert (
        event["op"] == "widen"
        and event["layer"] == layer
        and (event["old_width"], event["new_width"]) == (old, old + 7)
    )


def test_widen_copies_batchnorm_statistics_of_the_replicated_filters():
    model = _warmed_model()
    old_bn = {k: v.clone() for k, v in model.blocks[1].bn.state_dict().items()}
    model.widen(1, 20, generator=torch.Generator().manual_seed(3))
    new_bn = model.blocks[1].bn
    old_w = old_bn["weight"]
    for j in range(8, 20):
        # every new channel equals some old channel in weight, bias and running statistics
        match = [
            i
            for i in range(8)
            if torch.equal(new_bn.weight[j], old_w[i]) and torch.equal(new_bn.running_var[j], old_bn["running_var"][i])
        ]
        assert match, f"channel {j} is not a copy of an old channel"


@pytest.mark.parametrize("layer", [0, 2, 3])
def test_deepen_preserves_the_function(layer):
    model = _warmed_model()
    x = torch.randn(6, 3, 32, 32)
    with torch.no_grad():
        before = model(x).logits
    names = list(model.config.layer_names)
    model.deepen(layer)
    assert model.config.num_layers == 5
    assert model.config.layer_names[: layer + 1] == names[: layer + 1]
    assert model.config.layer_names[layer + 1] not in names  # a new layer gets a new stable name
    assert model.config.pool[layer + 1] is False
    assert _max_diff(model, before, x) < 1e-4


def test_repeated_growth_preserves_the_function_and_round_trips(tmp_path):
    model = _warmed_model(preset="small")
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        before = model(x).logits
    gen = torch.Generator().manual_seed(0)
    model.widen(5, 160, gen)
    model.deepen(2)
    model.widen(3, 80, gen)  # the deepened copy of layer 2
    model.widen(0, 40, gen)
    model.deepen(6)  # after the last conv layer
    model.widen(7, 200, gen)  # the new last layer, read by the MLP
    with torch.no_grad():
        after = model(x).logits
    assert (after - before).abs().max().item() < 1e-4
    assert [e["op"] for e in model.config.growth_log] == ["widen", "deepen", "widen", "widen", "deepen", "widen"]

    model.save_pretrained(tmp_path)
    loaded = CollectiveModel.from_pretrained(tmp_path).eval()
    assert loaded.config.widths == model.config.widths
    assert loaded.config.layer_names == model.config.layer_names
    assert loaded.config.growth_log == model.config.growth_log
    with torch.no_grad():
        assert torch.equal(loaded(x).logits, after)


def test_auto_classes_load_a_saved_collective_model(tmp_path):
    model = _warmed_model()
    model.widen(2, 24)
    model.save_pretrained(tmp_path)
    assert isinstance(AutoConfig.from_pretrained(tmp_path), CollectiveConfig)
    head_model = AutoModelForImageClassification.from_pretrained(tmp_path).eval()
    assert isinstance(head_model, CollectiveForImageClassification) and head_model.config.widths[2] == 24
    base = AutoModel.from_pretrained(tmp_path).eval()
    assert isinstance(base, CollectiveBaseModel) and base.config.widths[2] == 24
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():  # the base model got the trained weights, not a fresh initialization
        torch.testing.assert_close(base(x).pooler_output, model.embed(x))
    assert CollectiveModel.base_model_prefix == "collective" and head_model.base_model is head_model.collective
    assert CollectiveModel._no_split_modules == ["ConvNormAct"]


def test_pipeline_classifies_with_the_newest_head(tmp_path):
    from PIL import Image
    from transformers import pipeline

    model = _warmed_model(tasks=(5, 3))
    model.add_task(4, id2label={0: "cat", 1: "dog", 2: "fox", 3: "owl"})
    model.save_pretrained(tmp_path)
    assert (tmp_path / "preprocessor_config.json").is_file()
    classify = pipeline("image-classification", model=str(tmp_path))
    image = Image.fromarray((torch.rand(40, 40, 3) * 255).to(torch.uint8).numpy())
    scores = classify(image, top_k=4)
    assert sorted(s["label"] for s in scores) == ["cat", "dog", "fox", "owl"]
    assert abs(sum(s["score"] for s in scores) - 1.0) < 1e-4
    pixels = classify.image_processor(image, return_tensors="pt")["pixel_values"]
    assert pixels.shape == (1, 3, 32, 32)
    with torch.no_grad():
        expected = model(pixels).logits.softmax(-1)[0]
    best = max(scores, key=lambda s: s["score"])
    assert best["label"] == model.config.id2label[int(expected.argmax())]
    assert abs(best["score"] - float(expected.max())) < 1e-5


def test_hidden_states_and_return_dict_are_honoured():
    model = _warmed_model(tasks=(5,))
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        out = model(x, output_hidden_states=True)
        plain = model(x)
        as_tuple = model(x, labels=torch.tensor([0, 1]), output_hidden_states=True, return_dict=False)
    assert plain.hidden_states is None
    assert [h.shape[1] for h in out.hidden_states] == model.config.widths
    assert out.hidden_states[-1].shape == (2, 16, 8, 8)
    loss, logits, hidden = as_tuple
    assert loss.ndim == 0 and torch.equal(logits, out.logits) and len(hidden) == model.config.num_layers
    base_out = model.collective(x, return_dict=False)
    assert len(base_out) == 2 and base_out[0].shape == (2, 16, 8, 8)
    model.config.output_hidden_states = True  # the config default applies when the call does not say
    with torch.no_grad():
        assert len(model(x).hidden_states) == model.config.num_layers


def test_layer_summary_lists_conv_mlp_and_heads():
    model = _warmed_model(tasks=(5, 3))
    rows = model.layer_summary()
    conv = [r for r in rows if r["kind"] == "conv"]
    assert [r["out_channels"] for r in conv] == COLLECTIVE_PRESETS["tiny"]["widths"]
    assert conv[0]["in_channels"] == 3 and conv[1]["in_channels"] == conv[0]["out_channels"]
    assert sum(r["parameters"] for r in rows) == sum(p.numel() for p in model.parameters())
    assert [r["name"] for r in rows if r["kind"] == "head"] == ["head0", "head1"]


def test_unknown_score_prefers_confident_inputs():
    """Inputs a head is confident about score lower (less unknown) than inputs it is unsure of."""
    model = _warmed_model(tasks=(2, 3))
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        sure, unsure = model.embed(x)
        # Head 0: logits +-w.(e - unsure) with w along (sure - unsure): [0, 0] for the unsure
        # input, [20, -20] for the sure one. Head 1 is uniform (all-zero logits) everywhere.
        gap = sure - unsure
        w = gap / gap.norm() ** 2 * 20  # w.(sure - unsure) == 20
        model.heads[0].weight.copy_(torch.stack([w, -w]))
        model.heads[0].bias.copy_(torch.stack([-(w @ unsure), w @ unsure]))
        model.heads[1].weight.zero_()
        model.heads[1].bias.zero_()
    for method in ("energy", "msp", "maxlogit"):
        score = model.unknown_score(x, method=method)
        assert score.shape == (2,) and torch.isfinite(score).all()
        assert score[0] < score[1] - 0.4, (method, score)
        only_uniform = model.unknown_score(x, task_ids=[1], method=method)
        torch.testing.assert_close(only_uniform[0], only_uniform[1])  # the uniform head cannot tell them apart
    energy = model.unknown_score(x, method="energy")  # unsure input: max(log 2, log 3) from the uniform heads
    assert abs(energy[1].item() + torch.log(torch.tensor(3.0)).item()) < 1e-4
    with pytest.raises(ConfigError, match="Unknown open-world score 'entropy'"):
        model.unknown_score(x, method="entropy")
    with pytest.raises(ConfigError, match="open_world.safetensors"):
        model.open_world_score(x, method="knn")  # needs the run's feature bank, not the model alone


def test_open_world_score_defaults_to_the_configured_score_and_survives_save_and_load(tmp_path):
    model = _warmed_model(tasks=(2, 3))
    x = torch.randn(4, 3, 32, 32)
    torch.testing.assert_close(model.open_world_score(x), model.open_world_score(x, method="energy"))
    model.config.open_world_score = "maxlogit"
    model.save_pretrained(tmp_path)
    again = CollectiveModel.from_pretrained(tmp_path).eval()
    assert again.config.open_world_score == "maxlogit"
    torch.testing.assert_close(again.open_world_score(x), model.open_world_score(x, method="maxlogit"))
    with pytest.raises(ConfigError, match="open_world_score must be one of"):
        CollectiveConfig(preset="tiny", open_world_score="knn")


def test_widen_to_a_smaller_width_is_refused():
    model = _warmed_model()
    with pytest.raises(ConfigError, match=r"already has 8.*must be >= 8"):
        model.widen(0, 4)


@pytest.mark.parametrize("layer", [4, -5, 10])
def test_layer_index_out_of_range_is_refused(layer):
    model = _warmed_model()
    with pytest.raises(ConfigError, match=r"out of range: this model has 4 conv layers \(0\.\.3\)"):
        model.widen(layer, 32)
    with pytest.raises(ConfigError, match="out of range"):
        model.deepen(layer)


@pytest.mark.parametrize("num_labels", [0, -3])
def test_non_positive_number_of_labels_is_refused(num_labels):
    model = _warmed_model()
    with pytest.raises(ConfigError, match="num_labels must be a positive integer"):
        model.add_task(num_labels)
    with pytest.raises(ConfigError, match="at least one label"):
        CollectiveConfig(preset="tiny", task_num_labels=[5, num_labels])


def test_invalid_configs_name_the_problem():
    with pytest.raises(ConfigError, match="Unknown preset 'huge'"):
        CollectiveConfig(preset="huge")
    with pytest.raises(ConfigError, match="must be positive"):
        CollectiveConfig(widths=[8, 0])
    with pytest.raises(ConfigError, match="one flag per layer"):
        CollectiveConfig(widths=[8, 8], pool=[True])
    with pytest.raises(ConfigError, match="no task head yet"):
        CollectiveModel(CollectiveConfig(preset="tiny"))(torch.randn(1, 3, 32, 32))
