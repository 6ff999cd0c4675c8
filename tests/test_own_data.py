"""Own data end to end: an imagefolder trains a collective model with no column flags, its run
records the dataset so that it reloads from any working directory, and the class names of the
folder become the saved model's ``id2label``."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
NAMES = ["apple", "bee", "cat", "dog", "eel", "fox"]


def _script(name: str, monkeypatch: pytest.MonkeyPatch):
    """``examples/<name>.py`` as a module (its environment settings undone after the test)."""
    monkeypatch.setenv("LEARNGENE_HF_DEFER_MODELS", "1")
    spec = importlib.util.spec_from_file_location(f"example_{name}", REPO / "examples" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _imagefolder(root: Path) -> Path:
    """``root/images/{train,test}/<class>/*.png``: one flat colour per class plus noise, 16x16."""
    rng = np.random.default_rng(0)
    for name in NAMES:
        colour = rng.integers(0, 200, size=3)
        for split, count in (("train", 16), ("test", 6)):
            (root / "images" / split / name).mkdir(parents=True)
            for i in range(count):
                pixels = np.clip(colour + rng.integers(0, 55, size=(16, 16, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(root / "images" / split / name / f"{i}.png")
    return root / "images"


def test_train_collective_on_an_imagefolder_needs_no_column_flags(tmp_path, monkeypatch):
    from learngene_hf.selection.inheritor import Inheritor

    folder = _imagefolder(tmp_path)
    monkeypatch.chdir(tmp_path)
    argv = ["--preset", "tiny", "--dataset", "images", "--num-tasks", "2", "--ways", "2", "--epochs-per-task", "1"]
    argv += ["--base-classes", "0-3", "--open-world-classes", "4", "--novel-classes", "5"]
    argv += ["--images-per-class", "16", "--test-per-class", "6", "--output-dir", "run", "--no-progress", "--quiet"]
    script = _script("train_collective", monkeypatch)
    with pytest.raises(SystemExit) as done:
        script.run_script(script.main, argv)
    assert done.value.code == 0
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert report["dataset"]["source"] == str(folder.resolve())
    assert (report["dataset"]["image_column"], report["dataset"]["label_column"]) == ("image", "label")
    saved = json.loads((tmp_path / "run" / "model" / "config.json").read_text())
    newest = report["task_stream"][-1]
    assert saved["id2label"] == {str(i): NAMES[c] for i, c in enumerate(newest)}

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # the run folder works from any working directory
    inheritor = Inheritor.from_run(tmp_path / "run")
    assert inheritor.probe_data.class_names == NAMES
