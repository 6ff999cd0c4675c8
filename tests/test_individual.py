"""IndividualConfig / IndividualModel: architecture from a learngene, loading, fit errors, freeze, Auto/pipeline."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from transformers import AutoModelForImageClassification, pipeline
from transformers.utils import logging as tf_logging

import learngene_hf  # noqa: F401 - registers the Auto classes
from learngene_hf.artifact.learngene import Learngene
from learngene_hf.auto import from_learngene
from learngene_hf.errors import ConfigError, IncompatibleLearngeneError
from learngene_hf.fewshot.config import FewShotConfig
from learngene_hf.fewshot.train import train_individual
from learngene_hf.models.collective import CollectiveConfig, CollectiveModel
from learngene_hf.models.individual import IndividualBaseModel, IndividualConfig, IndividualModel

tf_logging.set_verbosity_error()


def tiny_collective(seed: int = 0) -> CollectiveModel:
    torch.manual_seed(seed)
    model = CollectiveModel(CollectiveConfig(preset="tiny", task_num_labels=[5]))
    # make the BatchNorm statistics non-trivial, as after training
    for block in model.blocks:
        block.bn.running_mean.uniform_(-1, 1)
        block.bn.running_var.uniform_(0.5, 2)
    return model


def test_default_config_is_the_papers_individual_model():
    model = IndividualModel(IndividualConfig(num_labels=5))
    assert model.config.widths == [64, 128, 256, 512, 512, 512, 512]
    assert model.num_features == 2048 and model.config.head_hidden == [1024, 1024]
    assert model.num_inherited_parameters() == 7_080_960
    assert 11.7e6 < sum(p.numel() for p in model.parameters()) < 11.9e6
    assert model(torch.randn(2, 3, 32, 32)).logits.shape == (2, 5)


def test_paper_output_learngene_gets_the_papers_stem_and_head():
    torch.manual_seed(0)
    cfg = CollectiveConfig(
        preset="paper", widths=[8, 8, 16, 512, 512, 512, 512], pool=[False, True, False, True, False, False, True]
    )
    cfg.preset = "paper"
    model = CollectiveModel(cfg)
    lg = Learngene.from_collective(model, [4, 5, 6])
    config = IndividualConfig.for_learngene(lg, 5)
    assert config.widths == [64, 128, 256, 512, 512, 512, 512]
    assert config.pool[:4] == [True] * 4 and config.inherited == [4, 7]
    assert config.head_hidden == [1024, 1024] and config.feature_pool_size == 2


@pytest.mark.parametrize("layers, stem, tail", [([0, 1], 0, 2), ([1, 2], 1, 1), ([2, 3], 2, 0), ([0, 1, 2, 3], 0, 0)])
def test_fresh_layers_fill_in_before_and_after_the_learngene(layers, stem, tail):
    collective = tiny_collective()
    lg = Learngene.from_collective(collective, layers)
    model = IndividualModel.from_learngene(lg, 3)
    assert model.config.widths == collective.config.widths
    assert model.config.inherited == [stem, stem + len(layers)]
    assert len(model.config.widths) - model.config.inherited[1] == tail
    for j, index in enumerate(model.inherited_indices):
        for name, tensor in collective.blocks[layers[j]].state_dict().items():
            assert torch.equal(model.blocks[index].state_dict()[name], tensor)
    assert model(torch.randn(2, 3, 32, 32)).logits.shape == (2, 3)


def test_sizes_of_fresh_parts_are_configurable():
    lg = Learngene.from_collective(tiny_collective(), [2, 3])
    model = IndividualModel.from_learngene(
        lg, 4, stem_widths=[4, 6, 8], stem_pool=[True, False, True], head_hidden=[16, 16], image_size=48
    )
    assert model.config.widths == [4, 6, 8, 16, 16]
    assert model.config.head_hidden == [16, 16] and model.config.image_size == 48
    assert model(torch.randn(2, 3, 48, 48)).logits.shape == (2, 4)


def test_building_from_a_local_folder_records_the_source(tmp_path):
    collective = tiny_collective()
    folder = Learngene.from_collective(collective, [1, 2]).save_pretrained(tmp_path / "lg")
    model = from_learngene(str(folder), 5)
    assert model.config.learngene["repo_id"] is None and model.config.learngene["local_folder"] == "lg"
    assert str(tmp_path) not in json.dumps(model.config.to_dict())  # no path of this machine in config.json
    assert model.config.learngene["layers"] == ["conv1", "conv2"]
    assert model.config.learngene["position"] == "middle"
    assert torch.equal(model.blocks[1].conv.weight, collective.blocks[1].conv.weight)


def test_building_from_the_hub_records_repo_revision_and_commit(hub):
    collective = tiny_collective()
    info = Learngene.from_collective(collective, [2, 3]).push_to_hub("org/tiny-lg")
    model = from_learngene("org/tiny-lg", 5, revision="main")
    record = model.config.learngene
    assert record["repo_id"] == "org/tiny-lg" and record["revision"] == "main"
    assert record["commit_sha"] == info.oid
    assert torch.equal(model.blocks[3].conv.weight, collective.blocks[3].conv.weight)


def test_a_learngene_that_does_not_fit_names_both_shapes():
    lg = Learngene.from_collective(tiny_collective(), [2, 3])  # expects 8 input channels
    with pytest.raises(IncompatibleLearngeneError, match=r"expects 8 input channels.*\(12\)"):
        IndividualModel.from_learngene(lg, 5, stem_widths=[4, 12])
    wrong = IndividualModel(IndividualConfig(widths=[8, 8, 16, 32], pool=[False] * 4, inherited=[2, 4], num_labels=5))
    with pytest.raises(IncompatibleLearngeneError, match=r"\(16, 16, 3, 3\).*\(32, 16, 3, 3\)"):
        wrong.load_learngene(lg)


def test_freeze_keeps_the_inherited_weights_and_trains_the_rest():
    collective = tiny_collective()
    lg = Learngene.from_collective(collective, [2, 3])
    model = IndividualModel.from_learngene(lg, 5, freeze_learngene=True)
    assert all(not p.requires_grad for b in model.inherited_blocks() for p in b.parameters())
    stem_before = model.blocks[0].conv.weight.detach().clone()
    images = torch.randint(0, 256, (10, 3, 32, 32), dtype=torch.uint8)
    train_individual(
        model, images, torch.arange(5).repeat(2), FewShotConfig.from_recipe("paper", epochs=2, batch_size=5), seed=0
    )
    assert torch.equal(model.blocks[2].conv.weight, collective.blocks[2].conv.weight)
    assert not torch.equal(model.blocks[0].conv.weight, stem_before)
    bn = model.blocks[2].bn
    assert not torch.equal(bn.running_mean, collective.blocks[2].bn.running_mean)  # re-estimated on the support set
    model.train()
    assert not model.blocks[2].training and model.blocks[0].training


def test_auto_and_pipeline_round_trip(tmp_path):
    from PIL import Image

    lg = Learngene.from_collective(tiny_collective(), [0, 1])
    id2label = {0: "cat", 1: "dog", 2: "fox"}
    model = IndividualModel.from_learngene(lg, 3, id2label=id2label, label2id={v: k for k, v in id2label.items()})
    train_individual(
        model,
        torch.randint(0, 256, (6, 3, 32, 32), dtype=torch.uint8),
        torch.tensor([0, 1, 2] * 2),
        FewShotConfig(epochs=1, batch_size=6),
        seed=0,
    )
    model.save_pretrained(tmp_path / "ind")
    loaded = AutoModelForImageClassification.from_pretrained(tmp_path / "ind")
    assert isinstance(loaded, IndividualModel)
    assert loaded.config.learngene == model.config.learngene
    x = torch.randn(2, 3, 32, 32)
    assert torch.allclose(loaded.eval()(x).logits, model.eval()(x).logits, atol=1e-6)
    classifier = pipeline("image-classification", model=str(tmp_path / "ind"))
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 40, 3), dtype=np.uint8))
    out = classifier(image, top_k=3)
    assert {row["label"] for row in out} == {"cat", "dog", "fox"}
    pixels = classifier.image_processor(image, return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        expected = model(pixels).logits.softmax(-1)[0]
    best = max(out, key=lambda row: row["score"])
    assert best["label"] == id2label[int(expected.argmax())] and abs(best["score"] - float(expected.max())) < 1e-5


def test_base_model_for_automodel_and_hidden_states(tmp_path):
    from transformers import AutoModel

    lg = Learngene.from_collective(tiny_collective(), [0, 1])
    model = IndividualModel.from_learngene(lg, 3).eval()
    model.save_pretrained(tmp_path)
    base = AutoModel.from_pretrained(tmp_path).eval()
    assert isinstance(base, IndividualBaseModel) and not hasattr(base, "classifier")
    assert IndividualModel.base_model_prefix == "individual" and model.base_model is model.individual
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        out = model(x, output_hidden_states=True)
        base_out = base(x, output_hidden_states=True)
        as_tuple = model(x, return_dict=False)
    assert [h.shape[1] for h in out.hidden_states] == model.config.widths
    for mine, theirs in zip(out.hidden_states, base_out.hidden_states):
        torch.testing.assert_close(mine, theirs)
    torch.testing.assert_close(model.classifier(base_out.pooler_output), out.logits)
    assert isinstance(as_tuple, tuple) and len(as_tuple) == 1 and torch.equal(as_tuple[0], out.logits)


def test_push_to_hub_and_load_with_auto(hub):
    lg = Learngene.from_collective(tiny_collective(), [1, 2])
    model = IndividualModel.from_learngene(lg, 4)
    model.push_to_hub("org/individual")
    loaded = AutoModelForImageClassification.from_pretrained("org/individual")
    x = torch.randn(1, 3, 32, 32)
    assert torch.allclose(loaded.eval()(x).logits, model.eval()(x).logits, atol=1e-6)
    from transformers import AutoImageProcessor

    assert AutoImageProcessor.from_pretrained("org/individual").size["height"] == 32


def test_named_sizes_shorten_and_narrow_the_fresh_tail_and_head():
    grown = {"widths": [32, 32, 64, 128, 256, 256], "pool": [False, True, False, True, False, True]}
    collective = CollectiveModel(CollectiveConfig(preset="small", task_num_labels=[5], **grown))  # as after growth
    lg = Learngene.from_collective(collective, [0, 1, 2])
    configs = {size: IndividualConfig.for_learngene(lg, 5, size=size) for size in ("tiny", "small", "medium", "full")}
    assert configs["tiny"].widths == [32, 32, 64] and configs["tiny"].head_hidden == []
    assert configs["tiny"].feature_pool_size == 2  # a linear head on 2x2-pooled features
    assert configs["small"].widths == [32, 32, 64, 64] and configs["small"].pool[-1] is True
    assert configs["medium"].widths == [32, 32, 64, 64, 128, 128] and configs["medium"].head_hidden == [128]
    assert configs["full"].to_dict()["widths"] == IndividualConfig.for_learngene(lg, 5).widths
    parameters = [sum(p.numel() for p in IndividualModel(c).parameters()) for c in configs.values()]
    assert parameters == sorted(parameters) and parameters[0] < 0.05 * sum(p.numel() for p in collective.parameters())
    explicit = IndividualConfig.for_learngene(lg, 5, size="tiny", head_hidden=[16])  # an explicit field wins
    assert explicit.head_hidden == [16]
    model = IndividualModel.from_learngene(lg, 5, size="small")
    assert model.num_inherited_parameters() == lg.num_parameters()
    with pytest.raises(ConfigError, match="Unknown descendant size"):
        IndividualConfig.for_learngene(lg, 5, size="huge")
