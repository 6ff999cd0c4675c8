"""Every model family travels as remote code: saved with ``register_for_auto_class``, its files
copied beside the weights load with ``trust_remote_code=True`` where learngene-hf cannot be
imported, and give the same logits."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from learngene_hf.artifact.learngene import Learngene
from learngene_hf.models.collective import CollectiveConfig, CollectiveModel
from learngene_hf.models.individual import IndividualModel
from learngene_hf.models.vit_collective import ViTCollectiveConfig, ViTCollectiveModel
from learngene_hf.models.vit_individual import ViTIndividualModel

VGG_FILES = ("vgg.py", "modeling_utils.py", "layers.py", "growth.py", "presets.py")
VIT_FILES = ("vit.py", "vit_collective.py", "modeling_utils.py", "layers.py", "presets.py")


def _vgg_collective() -> tuple[torch.nn.Module, str]:
    model = CollectiveModel(CollectiveConfig(preset="tiny"))
    model.add_task(4)
    model.add_task(3)
    return model, "AutoModelForImageClassification"


def _vgg_individual() -> tuple[torch.nn.Module, str]:
    collective, _ = _vgg_collective()
    for block in collective.blocks:  # non-trivial BatchNorm statistics, as after training
        block.bn.running_mean.uniform_(-1, 1)
        block.bn.running_var.uniform_(0.5, 2)
    learngene = Learngene.from_collective(collective, [0, 1])
    return IndividualModel.from_learngene(learngene, num_labels=3), "AutoModelForImageClassification"


def _vit_collective() -> tuple[torch.nn.Module, str]:
    model = ViTCollectiveModel(ViTCollectiveConfig(preset="vit-tiny"))
    model.add_task(4)
    model.add_task(3)
    return model, "AutoModel"


def _vit_individual() -> tuple[torch.nn.Module, str]:
    collective, _ = _vit_collective()
    return ViTIndividualModel.from_learngene(Learngene.from_vit_collective(collective), num_labels=3, num_blocks=4), (
        "AutoModelForImageClassification"
    )


FAMILIES = {
    "collective": (_vgg_collective, ("collective.py", *VGG_FILES)),
    "individual": (_vgg_individual, ("individual.py", *VGG_FILES)),
    "vit_collective": (_vit_collective, VIT_FILES),
    "vit_individual": (_vit_individual, ("vit_individual.py", *VIT_FILES)),
}


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_saved_model_loads_with_trust_remote_code_where_learngene_hf_is_absent(family, tmp_path):
    build, files = FAMILIES[family]
    model, auto_class = build()
    model.eval()
    config_class = type(model).config_class
    config_class.register_for_auto_class()
    type(model).register_for_auto_class(auto_class)
    try:
        model.save_pretrained(tmp_path / "model")
    finally:
        config_class._auto_class = None
        type(model)._auto_class = None
    for name in files:
        assert (tmp_path / "model" / name).is_file(), f"{name} was not copied beside the weights"
    x = torch.randn(2, 3, 32, 32)
    torch.save(x, tmp_path / "x.pt")
    script = (
        "\n".join(
            [
                "import sys; sys.modules['learngene_hf'] = None",  # `import learngene_hf` fails here
                "import torch",
                f"from transformers import {auto_class}",
                f"m = {auto_class}.from_pretrained({str(tmp_path / 'model')!r}, trust_remote_code=True).eval()",
                "assert not type(m).__module__.startswith('learngene_hf'), type(m).__module__",
                f"with torch.no_grad(): torch.save(m(torch.load({str(tmp_path / 'x.pt')!r})).logits, "
                f"{str(tmp_path / 'y.pt')!r})",
            ]
        )
        + "\n"
    )
    subprocess.run(
        [sys.executable, "-c", script],
        check=True,
        cwd=tmp_path,
        timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    with torch.no_grad():
        torch.testing.assert_close(torch.load(tmp_path / "y.pt"), model(x).logits)
