"""ViT learngenes (TLEG): the expansion rule, the collective ViT in the trainer, the
linear-expansion artifact (validation and round trip) and descendants of any depth."""

from __future__ import annotations

import json
from functools import partial

import pytest
import timm
import torch
from helpers import color_data
from safetensors.torch import load_file, save_file
from transformers import AutoModelForImageClassification
from transformers import logging as hf_logging

from learngene_hf import (
    Inheritor,
    Learngene,
    ViTCollectiveConfig,
    ViTCollectiveModel,
    ViTIndividualConfig,
    ViTIndividualModel,
    from_learngene,
)
from learngene_hf.errors import ArtifactError, ConfigError, IncompatibleLearngeneError
from learngene_hf.models.vit import expand_block_tensors, expansion_coefficient, select_elements
from learngene_hf.training.config import CollectiveTrainingConfig
from learngene_hf.training.run import load_run
from learngene_hf.training.trainer import train_collective

hf_logging.set_verbosity_error()


def _collective(**overrides) -> ViTCollectiveModel:
    torch.manual_seed(0)
    model = ViTCollectiveModel(ViTCollectiveConfig(preset="vit-tiny", **overrides))
    with torch.no_grad():  # a trained-looking increment (init leaves the LayerNorm part at 0)
        for p in model.vit.blocks.inc.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model


#: Colour classes at the ViT presets' 32x32 input, 20 training images per class.
vit_data = partial(color_data, per=20, size=32)


def _train_config(**overrides) -> CollectiveTrainingConfig:
    values = dict(
        num_tasks=2,
        epochs_per_task=1,
        train_per_class=20,
        test_per_class=10,
        base=list(range(10)),
        open_world=[10, 11],
        novel=[],
    )
    values.update(overrides)
    return CollectiveTrainingConfig.for_preset("vit-tiny", **values)


# ---------------------------------------------------------------------------------------------- the rule
def test_expansion_coefficients_follow_each_rule():
    assert [expansion_coefficient(k, 4) for k in range(1, 5)] == [0.25, 0.5, 0.75, 1.0]
    assert [expansion_coefficient(k, 3, "(l-1)/(L-1)") for k in range(1, 4)] == [0.0, 0.5, 1.0]
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
    twin = ViTIndividualModel(
        ViTIndividualConfig(embed_dim=32, depth=3, num_heads=2, mlp_ratio=2.0, patch_size=8, num_labels=5)
    )
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
    data = vit_data()
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
    train_collective(_train_config(), folder / "run", data=vit_data(), progress=False)
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

    for edit, message in [
        (rule, "expansion rule 'sqrt"),
        (missing, r"missing tensors \['inc.mlp.fc1.weight'\]"),
        (shape, "base.attn.qkv.weight has shape"),
        (recorded, "recorded shapes do not match"),
        (form, "holds a 'layers' learngene"),
    ]:
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
    model = from_learngene(folder, num_labels=4, num_blocks=depth)
    assert isinstance(model, ViTIndividualModel) and len(model.vit.blocks) == depth
    base, inc = learngene.tensors["base.mlp.fc1.weight"], learngene.tensors["inc.mlp.fc1.weight"]
    for k in (1, depth):
        torch.testing.assert_close(model.vit.blocks[k - 1].mlp.fc1.weight, base + k / depth * inc)
    torch.testing.assert_close(model.vit.pos_embed, learngene.tensors["embed.pos_embed"])
    assert model.config.learngene["form"] == "linear_expansion" and model.config.learngene["source_depth"] == 3
    assert model(torch.randn(2, 3, 32, 32)).logits.shape == (2, 4)


def test_descendant_saves_and_loads_with_auto_classes_and_can_be_narrower(vit_learngene, tmp_path):
    learngene, _ = vit_learngene
    model = from_learngene(learngene, num_labels=3, num_blocks=4, embed_dim=16)
    assert model.vit.blocks[0].attn.qkv.weight.shape == (48, 16)
    model.save_pretrained(tmp_path / "desc")
    loaded = AutoModelForImageClassification.from_pretrained(tmp_path / "desc")
    assert isinstance(loaded, ViTIndividualModel) and loaded.config.depth == 4
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(loaded.eval()(x).logits, model.eval()(x).logits)
    with pytest.raises(IncompatibleLearngeneError, match="wider"):
        from_learngene(learngene, num_labels=3, embed_dim=64)
    scratch = ViTIndividualModel(ViTIndividualConfig.for_learngene(learngene, 3, num_blocks=4))
    assert not scratch.has_learngene and scratch.config.depth == 4


def test_weight_selection_takes_the_first_blocks_of_an_unconstrained_vit():
    torch.manual_seed(0)
    plain = ViTCollectiveModel(ViTCollectiveConfig(preset="vit-tiny", expansion="none"))
    model = ViTIndividualModel.from_weight_selection(plain, num_labels=5, num_blocks=2, embed_dim=16)
    torch.testing.assert_close(
        model.vit.blocks[1].mlp.fc2.weight, select_elements(plain.vit.blocks[1].mlp.fc2.weight, (16, 32))
    )
    with pytest.raises(IncompatibleLearngeneError, match="only 3"):
        ViTIndividualModel.from_weight_selection(plain, num_labels=5, num_blocks=4)


def test_vit_learngene_goes_through_the_hub_and_builds_descendants_by_repo_id(vit_learngene, hub):
    from huggingface_hub import HfApi, hf_hub_download

    from learngene_hf.testing.hub_cards import validate_card_metadata

    learngene, _ = vit_learngene
    sha = learngene.push_to_hub("me/learngene-vit").oid
    errors, _ = validate_card_metadata(open(hf_hub_download("me/learngene-vit", "README.md"), encoding="utf-8").read())
    assert errors == []
    assert HfApi().model_info("me/learngene-vit").sha == sha
    shallow = from_learngene("me/learngene-vit", num_labels=5, num_blocks=2, revision=sha)
    deep = from_learngene("me/learngene-vit", num_labels=5, num_blocks=8, revision=sha)
    assert (len(shallow.vit.blocks), len(deep.vit.blocks)) == (2, 8)
    assert shallow.config.learngene["repo_id"] == "me/learngene-vit" and shallow.config.learngene["commit_sha"] == sha


def test_pulled_learngene_builds_descendants_of_two_depths_like_the_local_one(vit_learngene, hub):
    learngene, _ = vit_learngene
    sha = learngene.push_to_hub("me/learngene-vit-pull").oid
    pulled = Learngene.from_pretrained("me/learngene-vit-pull", revision=sha)
    assert pulled.config.form == "linear_expansion" and set(pulled.tensors) == set(learngene.tensors)
    x = torch.randn(2, 3, 32, 32)
    for depth in (2, 6):
        torch.manual_seed(0)
        mine = from_learngene(learngene, num_labels=5, num_blocks=depth).eval()
        torch.manual_seed(0)
        theirs = from_learngene(pulled, num_labels=5, num_blocks=depth).eval()
        assert len(theirs.vit.blocks) == depth and theirs.config.learngene["source_depth"] == 3
        with torch.no_grad():
            torch.testing.assert_close(theirs(x).logits, mine(x).logits)
    # a trained descendant pushed as a model loads back through the Auto classes from the Hub
    mine.push_to_hub("me/vit-descendant")
    loaded = AutoModelForImageClassification.from_pretrained("me/vit-descendant").eval()
    assert isinstance(loaded, ViTIndividualModel) and loaded.config.depth == 6
    with torch.no_grad():
        torch.testing.assert_close(loaded(x).logits, mine(x).logits)
    import numpy as np
    from PIL import Image
    from transformers import pipeline

    scores = pipeline("image-classification", model="me/vit-descendant")(
        Image.fromarray(np.zeros((32, 32, 3), np.uint8)), top_k=5
    )
    assert len(scores) == 5 and abs(sum(s["score"] for s in scores) - 1) < 1e-4


# ---------------------------------------------------------------------------------------------- few-shot
def test_vit_descendants_train_with_the_few_shot_recipe_body_frozen_during_lp(vit_learngene):
    from learngene_hf.fewshot.config import FewShotConfig
    from learngene_hf.fewshot.train import parameter_groups, train_individual

    learngene, _ = vit_learngene
    model = from_learngene(learngene, num_labels=2, num_blocks=2)
    groups = parameter_groups(model)
    assert {id(p) for p in groups["head"]} == {id(p) for p in model.vit.head.parameters()}
    assert len(groups["body"]) == len(list(model.parameters())) - 2
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    images, labels = vit_data(n_classes=2, per=4)[0].images, torch.tensor([0] * 4 + [1] * 4)
    # LP only (every step before the body starts): the head moves, the transformer does not
    train_individual(model, images, labels, FewShotConfig(steps=3, lp_steps=3, device="cpu"), seed=0)
    moved = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert moved == {"vit.head.weight", "vit.head.bias"}
    train_individual(model, images, labels, FewShotConfig(steps=3, lp_steps=1, device="cpu"), seed=0)
    assert not torch.equal(model.vit.blocks[0].attn.qkv.weight, before["vit.blocks.0.attn.qkv.weight"])


def test_vit_depth_comparison_runs_every_method_and_names_the_strongest_that_inherits_nothing(vit_learngene):
    from learngene_hf.data import sample_episodes
    from learngene_hf.fewshot.baselines import FrozenViTFeatureClassifier, inheritance
    from learngene_hf.fewshot.compare import compare_vit_depths
    from learngene_hf.fewshot.config import FewShotConfig
    from learngene_hf.fewshot.methods import vit_depth_methods

    learngene, _ = vit_learngene
    torch.manual_seed(0)
    plain = ViTCollectiveModel(ViTCollectiveConfig(preset="vit-tiny", expansion="none"))
    methods = {m.name: m for m in vit_depth_methods(learngene, plain, [2, 4])}
    assert set(methods) == {
        "tleg@2",
        "scratch@2",
        "weight_selection@2",
        "logreg_random@2",
        "tleg@4",
        "scratch@4",
        "logreg_random@4",
    }  # weight selection needs depth <= 3
    probe = methods["logreg_random@2"].builder(3)
    assert isinstance(probe, FrozenViTFeatureClassifier) and probe.num_features == 2 * 32
    assert inheritance(probe) == {"parameters": 0, "bytes": 0}
    tleg = methods["tleg@4"].builder(3)
    assert inheritance(tleg) == {"parameters": tleg.num_inherited_parameters(), "bytes": learngene.num_bytes()}

    train, _ = vit_data(n_classes=12, per=8)
    episodes = sample_episodes(train, [6, 7, 8, 9], 2, ways=3, shots=2, queries=2, seed=0)
    open_world = sample_episodes(train, [10, 11, 5], 1, ways=3, shots=2, queries=2, seed=1, role="open_world")
    cfg = FewShotConfig(steps=2, lp_steps=1, warmup_steps=0, device="cpu")
    results = compare_vit_depths(
        learngene, plain, episodes, cfg, [2], tune_lr_episodes=open_world, lr_grid=[0.01, 0.05], progress=False
    )
    rows = {r["method"]: r for r in results["sizes"]}
    assert set(rows) == {"tleg", "scratch", "weight_selection", "logreg_random"}
    assert all(len(results["methods"][r["name"]]["accuracies"]) == 2 for r in rows.values())
    assert rows["logreg_random"]["settings"]["l2"] in (1e-4, 1e-3, 1e-2, 1e-1, 1.0)
    assert rows["tleg"]["lr"] is not None and rows["logreg_random"]["lr"] is None
    best = "logreg_random" if rows["logreg_random"]["mean"] > rows["scratch"]["mean"] else "scratch"  # ties: the first
    assert rows[best]["diff_vs_strongest"] is None
    assert rows["tleg"]["diff_vs_strongest"]["baseline"] == best
    assert rows["tleg"]["inherited_bytes"] == learngene.num_bytes() and rows["scratch"]["inherited_bytes"] == 0


def test_vit_depth_methods_at_half_width_build_narrow_descendants_of_both_sources(vit_learngene):
    from learngene_hf.fewshot.baselines import inheritance
    from learngene_hf.fewshot.methods import vit_depth_methods

    learngene, _ = vit_learngene
    torch.manual_seed(0)
    plain = ViTCollectiveModel(ViTCollectiveConfig(preset="vit-tiny", expansion="none"))
    methods = {m.name: m for m in vit_depth_methods(learngene, plain, [2], widths=[None, 16])}
    assert {"tleg@2", "tleg@2w16", "scratch@2w16", "weight_selection@2w16", "logreg_random@2w16"} <= set(methods)
    for name in ("tleg@2w16", "scratch@2w16", "weight_selection@2w16"):
        model = methods[name].builder(3)
        assert model.config.embed_dim == 16 and model.config.depth == 2, name
        assert model(torch.randint(0, 256, (2, 3, 32, 32)).float()).logits.shape == (2, 3)
    narrow, wide = methods["tleg@2w16"].builder(3), methods["tleg@2"].builder(3)
    assert 0 < inheritance(narrow)["parameters"] < inheritance(wide)["parameters"]


def test_logistic_regression_on_random_vit_features_separates_easy_classes():
    from learngene_hf.fewshot.baselines import fit_frozen_features, vit_frozen_features
    from learngene_hf.fewshot.config import FewShotConfig
    from learngene_hf.fewshot.train import evaluate

    train, test = vit_data(n_classes=3, per=6, test=6)
    torch.manual_seed(0)
    random_vit = ViTIndividualModel(ViTIndividualConfig(embed_dim=32, depth=2, num_heads=2, patch_size=8, num_labels=3))
    probe = vit_frozen_features(random_vit, 3, "logistic", source="random")
    before = [p.detach().clone() for p in probe.vit.parameters()]
    fit_frozen_features(probe, train.images, train.labels, FewShotConfig(device="cpu"), seed=0, l2=1e-3)
    assert evaluate(probe, test.images, test.labels, FewShotConfig(device="cpu")) > 0.9  # chance: 1/3
    assert all(torch.equal(a, b) for a, b in zip(before, probe.vit.parameters()))  # nothing was fine-tuned


def test_vit_depth_comparison_tunes_on_the_vit_grid_unless_given_one(vit_learngene, monkeypatch):
    from learngene_hf.fewshot import compare as descendants
    from learngene_hf.fewshot.config import DEFAULT_LR_GRID, FewShotConfig

    learngene, _ = vit_learngene
    seen = []
    monkeypatch.setattr(
        descendants, "compare_methods", lambda *a, **k: seen.append(tuple(k["lr_grid"])) or {"methods": {}}
    )
    descendants.compare_vit_depths(learngene, None, ["episode"], FewShotConfig(device="cpu"), [2], progress=False)
    descendants.compare_vit_depths(
        learngene, None, ["episode"], FewShotConfig(device="cpu"), [2], lr_grid=[0.3], progress=False
    )
    assert seen == [descendants.DEFAULT_VIT_LR_GRID, (0.3,)]
    # the VGG grid (around lr 0.1) is too hot for ViTs under SGD: the default must not be it
    assert seen[0] != tuple(DEFAULT_LR_GRID) and max(seen[0]) <= 0.05


def test_stacked_vit_descendants_match_one_at_a_time_training(vit_learngene):
    from learngene_hf.data import sample_episodes
    from learngene_hf.fewshot.config import FewShotConfig
    from learngene_hf.fewshot.stacked import train_and_evaluate_stacked
    from learngene_hf.fewshot.stacks import StackedViTs, stack_key
    from learngene_hf.fewshot.train import build_for_episode, evaluate, train_individual

    learngene, _ = vit_learngene
    torch.manual_seed(0)
    plain = ViTCollectiveModel(ViTCollectiveConfig(preset="vit-tiny", expansion="none"))
    builders = [
        lambda n: ViTIndividualModel.from_learngene(learngene, n, num_blocks=2).double(),
        lambda n: ViTIndividualModel.from_weight_selection(plain, n, num_blocks=2).double(),
        lambda n: ViTIndividualModel(ViTIndividualConfig.for_learngene(learngene, n, num_blocks=2)).double(),
    ]
    train, _ = vit_data(n_classes=8, per=6)
    episodes = sample_episodes(train, [4, 5, 6, 7], 2, ways=3, shots=2, queries=2, seed=0)
    # the default recipe, shortened (LP-FT, warm-up + cosine, label smoothing, crop + flip); each method its own lr
    cfgs = [
        FewShotConfig(steps=6, lp_steps=2, warmup_steps=2, batch_size=4, device="cpu", lr=lr)
        for lr in (0.01, 0.05, 0.02)
    ]
    jobs = [(b, c, ep) for b, c in zip(builders, cfgs) for ep in episodes]
    models, seeds = zip(*(build_for_episode(b, ep) for b, _, ep in jobs))
    assert len({stack_key(m) for m in models}) == 1  # TLEG, weight selection and scratch of one depth share a stack
    assert stack_key(ViTIndividualModel(ViTIndividualConfig.for_learngene(learngene, 3, num_blocks=3))) != stack_key(
        models[0]
    )
    stacked = train_and_evaluate_stacked(
        models, [ep for *_, ep in jobs], seeds, [c for _, c, _ in jobs], write_back=True
    )
    for (build, cfg, ep), model, acc in zip(jobs, models, stacked):
        alone, seed = build_for_episode(build, ep)
        train_individual(alone, ep.support_images, ep.support_labels, cfg, seed)
        assert acc == evaluate(alone, ep.query_images, ep.query_labels, cfg)
        for name, p in alone.named_parameters():
            torch.testing.assert_close(model.get_parameter(name), p, atol=1e-10, rtol=0)
    # one AdamW over the stacked tensors is every model's own AdamW
    a, b = builders[0](3), builders[2](3)
    stack = StackedViTs([a, b])
    x = torch.randn(2, 4, 3, 32, 32, dtype=torch.float64)
    optimizer = torch.optim.AdamW(stack.parameters(), lr=1e-2)
    stack.logits(x).logsumexp(-1).sum().backward()
    optimizer.step()
    for i, model in enumerate((a, b)):
        own = torch.optim.AdamW(model.parameters(), lr=1e-2)
        model(x[i]).logits.logsumexp(-1).sum().backward()
        own.step()
        torch.testing.assert_close(
            stack.params["blocks.1.mlp.fc1.weight"][i], model.vit.blocks[1].mlp.fc1.weight, atol=1e-10, rtol=0
        )
    with pytest.raises(ConfigError, match="stack_key"):
        StackedViTs([a, ViTIndividualModel(ViTIndividualConfig.for_learngene(learngene, 3, num_blocks=3))])
