"""The package's house rules, read from the source with ``ast``: imports run one way (a lower floor
never imports a higher one), no circles, the model files import nothing of the package, no private
name crosses a file, small files and functions; and the models register with transformers and timm
whatever the import order."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "learngene_hf"

#: The floors, lowest first: a module may import its own folder and anything on a lower floor.
FLOORS = [
    ("errors",),
    ("io", "logs", "machine", "flops", "stats"),
    ("data", "plots", "testing"),
    ("models",),
    ("artifact",),
    ("auto", "training"),
    ("selection",),
    ("fewshot",),
    ("summary",),
    ("cli", "pipeline"),
]
FLOOR = {room: level for level, rooms in enumerate(FLOORS) for room in rooms}
#: What a model file may import besides its siblings: it travels alone as remote code.
MODEL_DEPENDENCIES = {"torch", "timm", "transformers", "safetensors"}


def _modules() -> dict[str, Path]:
    """Every module of the package by dotted name, the top-level ``__init__`` left out (it is the
    package's face: it names the public objects of every floor)."""
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(REPO).with_suffix("").parts
        if parts == ("learngene_hf", "__init__"):
            continue
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def _imports(name: str, path: Path) -> list[tuple[str, list[str], int]]:
    """``(imported module, names taken, line)`` for every import in ``path``, wherever it stands;
    relative imports resolved against ``name``."""
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            found.append((module, [a.name for a in node.names], node.lineno))
        elif isinstance(node, ast.Import):
            found.extend((a.name, [], node.lineno) for a in node.names)
    return found


def _room(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if parts[0] == "learngene_hf" and len(parts) > 1 else None


def _targets(module: str, names: list[str], modules: dict[str, Path]) -> list[str]:
    """The package modules an import reaches (``from .x import y`` reaches ``.x.y`` when it is a module)."""
    out = [module] if module in modules else []
    out += [f"{module}.{n}" for n in names if f"{module}.{n}" in modules]
    return out


def test_every_room_has_a_floor():
    rooms = {_room(name) for name in _modules()}
    assert rooms - set(FLOOR) == set(), f"rooms without a floor: {sorted(rooms - set(FLOOR))}; add them to FLOORS"


def test_imports_run_one_way():
    modules = _modules()
    bad = []
    for name, path in modules.items():
        room = _room(name)
        for module, names, line in _imports(name, path):
            for target in _targets(module, names, modules):
                other = _room(target)
                if other != room and (FLOOR[other] > FLOOR[room] or (FLOOR[other] == FLOOR[room])):
                    bad.append(f"{path.relative_to(REPO)}:{line} imports {target} ({other} is not below {room})")
    assert not bad, "\n".join(bad)


def test_there_are_no_import_circles():
    modules = _modules()
    graph = {
        name: sorted({t for m, n, _ in _imports(name, path) for t in _targets(m, n, modules) if t != name})
        for name, path in modules.items()
    }
    state: dict[str, int] = {}
    stack: list[str] = []
    circles = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in graph[node]:
            if state.get(nxt) == 1:
                circles.append(" -> ".join(stack[stack.index(nxt) :] + [nxt]))
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in graph:
        if node not in state:
            visit(node)
    assert not circles, "\n".join(circles)


def test_model_files_import_only_torch_timm_transformers_safetensors_and_their_siblings():
    bad = []
    for name, path in _modules().items():
        if _room(name) != "models":
            continue
        for module, _, line in _imports(name, path):
            top = module.split(".")[0]
            sibling = module.startswith("learngene_hf.models.") or module == "learngene_hf.models"
            if not (sibling or top in MODEL_DEPENDENCIES or top in sys.stdlib_module_names or top == "__future__"):
                bad.append(f"{path.relative_to(REPO)}:{line} imports {module}")
    assert not bad, "\n".join(bad)


def test_no_private_name_is_imported_from_another_file():
    modules = _modules()
    bad = [
        f"{path.relative_to(REPO)}:{line} takes {n} from {module}"
        for name, path in modules.items()
        for module, names, line in _imports(name, path)
        if module.startswith("learngene_hf")
        for n in names
        if n.startswith("_") and n != "__version__"
    ]
    assert not bad, "\n".join(bad)


def test_files_and_functions_stay_small():
    too_long = []
    for path in sorted(PACKAGE.rglob("*.py")):
        text = path.read_text()
        if len(text.splitlines()) > 600:
            too_long.append(f"{path.relative_to(REPO)}: {len(text.splitlines())} lines (at most 600)")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno >= 100:
                too_long.append(
                    f"{path.relative_to(REPO)}:{node.lineno} {node.name}: "
                    f"{node.end_lineno - node.lineno + 1} lines (at most 100)"
                )
    assert not too_long, "\n".join(too_long)


def _python(code: str, *args: str, **env: str) -> str:
    environment = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""), **env)
    done = subprocess.run(
        [sys.executable, "-c", code, *args], env=environment, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def test_local_hub_cli_help_does_not_import_transformers():
    out = _python(
        "import runpy, sys\n"
        "sys.argv = ['hub', '--help']\n"
        "try:\n"
        "    runpy.run_module('learngene_hf.testing.hub', run_name='__main__')\n"
        "except SystemExit as stop:\n"
        "    assert stop.code == 0, stop.code\n"
        "print('RESULT', sorted(m for m in ('torch', 'transformers', 'timm') if m in sys.modules))",
        LEARNGENE_HF_DEFER_MODELS="1",
    )
    assert out.strip().splitlines()[-1] == "RESULT []"


@pytest.mark.parametrize("first", ["timm", "learngene_hf"])
def test_saved_models_load_through_auto_classes_and_pipeline_whatever_the_import_order(first, tmp_path):
    """``import timm, learngene_hf`` or ``import learngene_hf, timm``, then transformers' Auto
    classes, ``pipeline()`` and ``timm.create_model`` know both families."""
    from learngene_hf import CollectiveConfig, CollectiveModel, IndividualConfig, IndividualModel

    collective = CollectiveModel(CollectiveConfig(preset="tiny", task_num_labels=[3]))
    collective.save_pretrained(tmp_path / "collective")
    individual = IndividualModel(IndividualConfig(widths=[4, 8], pool=[True, False], head_hidden=[8], num_labels=2))
    individual.save_pretrained(tmp_path / "individual")
    second = "learngene_hf" if first == "timm" else "timm"
    out = _python(
        f"import sys, {first}, {second}\n"
        "import numpy as np\n"
        "from PIL import Image\n"
        "from transformers import AutoConfig, AutoModel, AutoModelForImageClassification, pipeline\n"
        "print(AutoConfig.for_model('learngene_collective').model_type)\n"
        "for folder in sys.argv[1:]:\n"
        "    print(type(AutoConfig.from_pretrained(folder)).__name__, "
        "type(AutoModel.from_pretrained(folder)).__name__,\n"
        "          type(AutoModelForImageClassification.from_pretrained(folder)).__name__)\n"
        "    scores = pipeline('image-classification', model=folder)(Image.fromarray(np.zeros((32, 32, 3), "
        "np.uint8)))\n"
        "    print(len(scores))\n"
        "m = timm.create_model('learngene_vgg_small', pretrained=False, num_classes=5)\n"
        "print(type(m).__module__, m.head.out_features)\n",
        str(tmp_path / "collective"),
        str(tmp_path / "individual"),
    ).split()
    assert out == [
        "learngene_collective",
        "CollectiveConfig",
        "CollectiveBaseModel",
        "CollectiveForImageClassification",
        "3",
        "IndividualConfig",
        "IndividualBaseModel",
        "IndividualForImageClassification",
        "2",
        "learngene_hf.models.vgg",
        "5",
    ]
