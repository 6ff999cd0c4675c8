"""Imports run one way and stay light; the models still register with transformers and timm."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "learngene_hf"


def _python(code: str, *args: str) -> str:
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    done = subprocess.run([sys.executable, "-c", code, *args], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def test_importing_the_package_or_its_errors_loads_no_heavy_library():
    out = _python(
        "import sys, learngene_hf, learngene_hf.errors\n"
        "from learngene_hf import ConfigError, __version__\n"
        "print(sorted(m for m in ('torch', 'timm', 'transformers', 'accelerate', 'datasets') if m in sys.modules))"
    )
    assert out.strip() == "[]"


def test_local_hub_cli_help_does_not_import_transformers():
    out = _python(
        "import runpy, sys\n"
        "sys.argv = ['hub', '--help']\n"
        "try:\n"
        "    runpy.run_module('learngene_hf.testing.hub', run_name='__main__')\n"
        "except SystemExit as stop:\n"
        "    assert stop.code == 0, stop.code\n"
        "print('RESULT', sorted(m for m in ('torch', 'transformers', 'timm') if m in sys.modules))"
    )
    assert out.strip().splitlines()[-1] == "RESULT []"


def test_models_register_with_transformers_and_timm_whatever_the_import_order(tmp_path):
    """After ``import learngene_hf``, the Auto classes load both families and ``timm.create_model``
    knows the VGG-BN sizes, whether the libraries are imported after the package, before it, or
    through one of its submodules."""
    from learngene_hf import CollectiveConfig, CollectiveModel, IndividualConfig, IndividualModel

    collective = CollectiveModel(CollectiveConfig(preset="tiny", task_num_labels=[3]))
    collective.save_pretrained(tmp_path / "collective")
    individual = IndividualModel(IndividualConfig(widths=[4, 8], pool=[True, False], head_hidden=[8], num_labels=2))
    individual.save_pretrained(tmp_path / "individual")
    folders = (str(tmp_path / "collective"), str(tmp_path / "individual"))
    load = (
        "from transformers import AutoModel, AutoModelForImageClassification\n"
        "for folder in sys.argv[1:]:\n"
        "    print(type(AutoModel.from_pretrained(folder)).__name__, type(AutoModelForImageClassification.from_pretrained(folder)).__name__)\n"
    )
    make_timm = "m = timm.create_model('learngene_vgg_small', pretrained=False, num_classes=5)\nprint(type(m).__module__, m.head.out_features)\n"
    expected = ["CollectiveBaseModel", "CollectiveForImageClassification", "IndividualBaseModel", "IndividualForImageClassification"]
    # the package first, transformers and timm after it
    after = _python("import sys, learngene_hf\nassert 'transformers' not in sys.modules and 'timm' not in sys.modules\n"
                    + load + "import timm\n" + make_timm, *folders).split()
    assert after == expected + ["learngene_hf.vgg", "5"]
    # the libraries first
    before = _python("import sys, timm, transformers, learngene_hf\n" + load + make_timm, *folders).split()
    assert before == expected + ["learngene_hf.vgg", "5"]
    # a submodule imported directly, not through the package's names
    direct = _python("import sys\nfrom learngene_hf.training import train_collective\n" + load, *folders).split()
    assert direct == expected


def _imports(path: Path) -> set[str]:
    """Modules of this package that ``path`` imports, at module level or inside any function."""
    package = ".".join(path.relative_to(REPO).with_suffix("").parts[:-1])
    found = set()
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            if module.startswith("learngene_hf"):
                found.add(module)
                if node.module is None or module in ("learngene_hf", "learngene_hf.plots"):
                    found.update(f"{module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("learngene_hf"))
    return found


@pytest.mark.parametrize(
    "module, forbidden",
    [
        ("vgg.py", ("learngene", "training", "fewshot", "inheritor", "criterion", "pipeline", "collective", "individual")),
        ("collective.py", ("learngene", "training", "fewshot", "inheritor", "criterion", "pipeline", "individual")),
        ("individual.py", ("learngene", "training", "fewshot", "inheritor", "criterion", "pipeline", "collective")),
        ("model_outputs.py", ("learngene", "training", "fewshot", "inheritor", "pipeline", "collective", "individual")),
        ("layers.py", ("learngene", "training", "fewshot", "inheritor", "pipeline", "collective", "individual")),
        ("growth.py", ("learngene", "training", "fewshot", "inheritor", "pipeline", "collective", "individual")),
        ("errors.py", ("io", "stats", "data", "collective", "individual", "learngene")),
        ("io.py", ("stats", "data", "collective", "individual", "learngene")),
        ("stats.py", ("io", "data", "collective", "individual", "learngene")),
        ("learngene.py", ("training", "fewshot", "inheritor", "criterion", "pipeline")),
        ("inheritor.py", ("fewshot", "pipeline")),
        ("criterion.py", ("fewshot", "inheritor", "pipeline")),
        ("plots/accuracy.py", ("fewshot", "training", "inheritor", "pipeline")),
        ("plots/heatmap.py", ("fewshot", "training", "inheritor", "pipeline")),
        ("plots/ranking.py", ("fewshot", "training", "inheritor", "pipeline")),
    ],
)
def test_imports_run_one_way(module, forbidden):
    imported = _imports(PACKAGE / module)
    if module == "individual.py":
        # the one exception: from_learngene("org/name") asks the artifact module to load it by name
        imported.discard("learngene_hf.learngene")
        assert "from learngene_hf.learngene import resolve_learngene" in (PACKAGE / module).read_text()
    bad = sorted(m for m in imported for f in forbidden if m == f"learngene_hf.{f}" or m.startswith(f"learngene_hf.{f}."))
    assert not bad, f"{module} imports {bad}"
