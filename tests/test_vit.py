"""ViT learngenes (TLEG): the expansion rule, the collective ViT in the trainer, the
linear-expansion artifact (validation and round trip) and descendants of any depth."""

from __future__ import annotations

import json

import pytest
import timm
import torch
from safetensors.torch import load_file, save_file
from transformers import AutoModelForImageClassification
from transformers import logging as hf_logging

from learngene_hf import (
    IndividualModel,
    Inheritor,
    Learngene,
    ViTCollectiveConfig,
    ViTCollectiveModel,
    ViTIndividualConfig,
    ViTIndividualModel,
)
from learngene_hf.errors import ArtifactError, ConfigError, IncompatibleLearngeneError
from learngene_hf.training import CollectiveTrainingConfig, load_run, train_collective
from learngene_hf.vit import expand_block_tensors, expansion_coefficient, select_elements

hf_logging.set_verbosity_error()


def _collective(**overrides) -> ViTCollectiveModel:
    torch.manual_seed(0)
    model = ViTCollectiveModel(ViTCollectiveConfig(preset="vit-tiny", **overrides))
    with torch.no_grad():  # a trained-looking increment (init leaves the LayerNorm part at 0)
        for p in model.vit.blocks.inc.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model


def _data(n_classes: int = 12, per: int = 20, test: int = 10, size: int = 32):
    from learngene_hf.data import ImageTensors

    g = torch.Generator().manual_seed(0)
    colors = torch.rand(n_classes, 3, 1, 1, generator=g) * 200

    def make(k: int) -> ImageTensors:
        labels = torch.arange(n_classes).repeat_interleave(k)
        images = colors[labels] + torch.rand(len(labels), 3, size, size, generator=g) * 55
        return ImageTensors(images.clamp(0, 255).to(torch.uint8), labels, [f"c{i}" for i in range(n_classes)])

    return make(per), make(test)


def _train_config(**overrides) -> CollectiveTrainingConfig:
    values = dict(num_tasks=2, epochs_per_task=1, train_per_class=20, test_per_class=10,
                  base=list(range(10)), open_world=[10, 11], novel=[])
    values.update(overrides)
    return CollectiveTrainingConfig.for_preset("vit-tiny", **values)


# ---------------------------------------------------------------------------------------------- the rule
def test_expansion_coefficients_follow_each_rule():
    assert [expansion_coefficient(l, 4) for l in range(1, 5)] == [0.25, 0.5, 0.75, 1.0]
    assert [expansion_coefficient(l, 3, "(l-1)/(L-1)") for l in range(1, 4)] == [0.0, 0.5, 1.0]
    with pytest.raises(ConfigError, match="Unknown expansion rule"):
        expansion_coefficient(1, 4, "l^2")
    with pytest.raises(ConfigError, match="does not exist"):
        expansion_coefficient(5, 4)


def test_expanded_blocks_are_base_plus_scaled_increment():
    base = {"w": torch.ones(2, 2)}
    inc = {"w": torch.full((2, 2), 4.0)}
    blocks = expand_block_tensors(base, inc, 4)
    assert [float(b["w"][0, 0]) for b in blocks] == [2.0, 3.0, 4.0, 5.0]


def test_collective_vit_computes_the_ordinary_vit_of_its_expanded_blocks():
    model = _collective()
    model.add_task(5)
    model.eval()
    twin = ViTIndividualModel(ViTIndividualConfig(embed_dim=32, depth=3, num_heads=2, mlp_ratio=2.0, patch_size=8, num_labels=5))
    twin.load_linear_expansion(model.learngene_tensors())
    twin.vit.head.load_state_dict(model.heads[0].state_dict())
    twin.eval()
    x = torch.randn(3, 3, 32, 32)
    torch.testing.assert_close(twin(x).logits, model(x).logits, atol=1e-5, rtol=1e-5)
    # gradients reach both tensors of the pair
    model.train()
    model(x, labels=torch.tensor([0, 1, 2])).loss.backward()
    assert model.vit.blocks.base.mlp.fc1.weight.grad.abs().sum() > 0
    assert model.vit.blocks.inc.mlp.fc1.weight.grad.abs().sum() > 0


def test_select_elements_takes_evenly_spaced_entries():
    t = torch.arange(24.0).view(6, 4)
    out = select_elements(t, (3, 2))
    assert out.tolist() == [[0.0, 2.0], [8.0, 10.0], [16.0, 18.0]]
    with pytest.raises(IncompatibleLearngeneError, match="must not be larger"):
        select_elements(t, (7, 4))


def test_vit_sizes_are_registered_timm_models():
    model = timm.create_model("learngene_vit_tiny_patch8_32", num_classes=4)
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 4)
    plain = timm.create_model("learngene_vit_small_patch4_32", expansion="none", features_only=True, depth=4)
    assert [f.shape[1:] for f in plain(torch.randn(1, 3, 32, 32))] == [(96, 8, 8)] * 3


# ---------------------------------------------------------------------------------------------- trainer
def test_collective_vit_trains_through_the_trainer_and_resumes_identically(tmp_path):
    data = _data()
    full = train_collective(_train_config(), tmp_path / "full", data=data, progress=False)
    train_collective(_train_config(stop_after_task=1), tmp_path / "split", data=data, progress=False)
    resumed = train_collective(_train_config(), tmp_path / "split", data=data, progress=False)
    assert full.report["complete"] and len(full.model.heads) == 2
    assert full.record.layer_names[0] == "base.attn.qkv" and full.record.epochs
    for (name, a), b in zip(full.model.state_dict().items(), resumed.model.state_dict().values()):
        torch.testing.assert_close(a, b, msg=name)
    run = load_run(tmp_path / "full")
    assert isinstance(run.model, ViTCollectiveModel) and run.model.is_linear_expansion


def test_growth_is_refused_for_vit_presets():
    with pytest.raises(ConfigError, match="not offered"):
        _train_config(growth="paper")


# ---------------------------------------------------------------------------------------------- artifact
@pytest.fixture(scope="module")
def vit_learngene(tmp_path_factory):
    """A learngene extracted from a 2-task vit-tiny run (shared by the tests of this module)."""
    folder = tmp_path_factory.mktemp("vit")
    train_collective(_train_config(), folder / "run", data=_data(), progress=False)
    inheritor = Inheritor.from_run(folder / "run", load_probe_data=False)
    inheritor.save_pretrained(folder / "lg")
    return inheritor.learngene, folder / "lg"


def test_linear_expansion_learngene_round_trips_and_stores_two_tensors_per_block_parameter(vit_learngene):
    learngene, folder = vit_learngene
    config = json.loads((folder / "learngene_config.json").read_text())
    assert config["form"] == "linear_expansion" and config["expansion"]["rule"] == "l/L"
    loaded = Learngene.from_pretrained(folder)
    assert loaded.tensors.keys() == learngene.tensors.keys()
    for name, tensor in learngene.tensors.items():
        torch.testing.assert_close(loaded.tensors[name], tensor)
    depth = config["expansion"]["depth"]
    pair = sum(t.numel() for n, t in loaded.tensors.items() if n.startswith(("base.", "inc.")))
    sizes = config["sizes"]
    assert pair == sizes["block_parameters"]
    assert pair * depth == 2 * sizes["unconstrained_block_parameters"]  # = 2/L of an L-block ViT's blocks
    assert "vision-transformer" in (folder / "README.md").read_text()


def test_linear_expansion_validation_names_each_problem(vit_learngene, tmp_path):
    _, folder = vit_learngene

    def edited(edit, name):
        target = tmp_path / name
        target.mkdir()
        config = json.loads((folder / "learngene_config.json").read_text())
        tensors = load_file(str(folder / "learngene.safetensors"))
        from safetensors import safe_open

        with safe_open(str(folder / "learngene.safetensors"), "pt") as handle:
            metadata = handle.metadata()
        edit(config, tensors, metadata)
        (target / "learngene_config.json").write_text(json.dumps(config))
        save_file(tensors, str(target / "learngene.safetensors"), metadata=metadata)
        return target

    def rule(c, t, m):
        c["expansion"]["rule"] = "sqrt(l)"

    def missing(c, t, m):
        del t["inc.mlp.fc1.weight"]

    def shape(c, t, m):
        t["base.attn.qkv.weight"] = t["base.attn.qkv.weight"][:, :8].contiguous()

    def recorded(c, t, m):
        c["expansion"]["embed_dim"] = 64

    def form(c, t, m):
        m["form"] = "layers"

    for edit, message in [(rule, "expansion rule 'sqrt"), (missing, r"missing tensors \['inc.mlp.fc1.weight'\]"),
                          (shape, "base.attn.qkv.weight has shape"), (recorded, "recorded shapes do not match"),
                          (form, "holds a 'layers' learngene")]:
        with pytest.raises(ArtifactError, match=message):
            Learngene.from_pretrained(edited(edit, edit.__name__))


def test_layer_learngene_files_without_a_form_load_as_layers(tmp_path):
    from learngene_hf import CollectiveConfig, CollectiveModel

    model = CollectiveModel(CollectiveConfig(preset="tiny"))
    Learngene.from_collective(model, [0, 1]).save_pretrained(tmp_path / "lg")
    config = json.loads((tmp_path / "lg" / "learngene_config.json").read_text())
    assert config.pop("form") == "layers"
    config.pop("expansion")
    (tmp_path / "lg" / "learngene_config.json").write_text(json.dumps(config))
    assert Learngene.from_pretrained(tmp_path / "lg").config.form == "layers"


def test_inheritor_has_nothing_to_select_for_a_linear_expansion_vit():
    inheritor = Inheritor(_collective())
    with pytest.raises(ConfigError, match="no layers to select"):
        inheritor.select()
    plain = ViTCollectiveModel(ViTCollectiveConfig(preset="vit-tiny", expansion="none"))
    with pytest.raises(ConfigError, match="without the linear-expansion constraint"):
        Inheritor(plain)


# ---------------------------------------------------------------------------------------------- descendants
@pytest.mark.parametrize("depth", [2, 3, 7, 12])
def test_descendants_of_any_depth_start_on_the_expansion_line(vit_learngene, depth):
    learngene, folder = vit_learngene
    model = IndividualModel.from_learngene(folder, num_labels=4, num_blocks=depth)
    assert isinstance(model, ViTIndividualModel) and len(model.vit.blocks) == depth
    base, inc = learngene.tensors["base.mlp.fc1.weight"], learngene.tensors["inc.mlp.fc1.weight"]
    for l in (1, depth):
        torch.testing.assert_close(model.vit.blocks[l - 1].mlp.fc1.weight, base + l / depth * inc)
    torch.testing.assert_close(model.vit.pos_embed, learngene.tensors["embed.pos_embed"])
    assert model.config.learngene["form"] == "linear_expansion" and model.config.learngene["source_depth"] == 3
    assert model(torch.randn(2, 3, 32, 32)).logits.shape == (2, 4)


def test_descendant_saves_and_loads_with_auto_classes_and_can_be_narrower(vit_learngene, tmp_path):
    learngene, _ = vit_learngene
    model = IndividualModel.from_learngene(learngene, num_labels=3, num_blocks=4, embed_dim=16)
    assert model.vit.blocks[0].attn.qkv.weight.shape == (48, 16)
    model.save_pretrained(tmp_path / "desc")
    loaded = AutoModelForImageClassification.from_pretrained(tmp_path / "desc")
    assert isinstance(loaded, ViTIndividualModel) and loaded.config.depth == 4
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(loaded.eval()(x).logits, model.eval()(x).logits)
    with pytest.raises(IncompatibleLearngeneError, match="wider"):
        IndividualModel.from_learngene(learngene, num_labels=3, embed_dim=64)
    scratch = ViTIndividualModel(ViTIndividualConfig.for_learngene(learngene, 3, num_blocks=4))
    assert not scratch.has_learngene and scratch.config.depth == 4


def test_weight_selection_takes_the_first_blocks_of_an_unconstrained_vit():
    torch.manual_seed(0)
    plain = ViTCollectiveModel(ViTCollectiveConfig(preset="vit-tiny", expansion="none"))
    model = ViTIndividualModel.from_weight_selection(plain, num_labels=5, num_blocks=2, embed_dim=16)
    torch.testing.assert_close(model.vit.blocks[1].mlp.fc2.weight, select_elements(plain.vit.blocks[1].mlp.fc2.weight, (16, 32)))
    with pytest.raises(IncompatibleLearngeneError, match="only 3"):
        ViTIndividualModel.from_weight_selection(plain, num_labels=5, num_blocks=4)


def test_vit_learngene_goes_through_the_hub_and_builds_descendants_by_repo_id(vit_learngene, hub):
    from huggingface_hub import HfApi, hf_hub_download

    from learngene_hf.testing.hub import validate_card_metadata

    learngene, _ = vit_learngene
    sha = learngene.push_to_hub("me/learngene-vit").oid
    errors, _ = validate_card_metadata(open(hf_hub_download("me/learngene-vit", "README.md"), encoding="utf-8").read())
    assert errors == []
    assert HfApi().model_info("me/learngene-vit").sha == sha
    shallow = IndividualModel.from_learngene("me/learngene-vit", num_labels=5, num_blocks=2, revision=sha)
    deep = IndividualModel.from_learngene("me/learngene-vit", num_labels=5, num_blocks=8, revision=sha)
    assert (len(shallow.vit.blocks), len(deep.vit.blocks)) == (2, 8)
    assert shallow.config.learngene["repo_id"] == "me/learngene-vit" and shallow.config.learngene["commit_sha"] == sha
