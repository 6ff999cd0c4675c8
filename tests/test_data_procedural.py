"""The embedded procedural dataset: schema, determinism, cache, class definitions."""

from __future__ import annotations

import hashlib

import datasets
import numpy as np
import pytest

from learngene_hf.data import load_tensors, make_procedural_dataset
from learngene_hf.data.procedural import (
    BACKGROUNDS,
    FILLS,
    PALETTES,
    SHAPES,
    class_definitions,
    generate_arrays,
    generation_key,
)
from learngene_hf.errors import ConfigError, DataError

SMALL = dict(num_classes=6, train_per_class=12, test_per_class=4, image_size=16)


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LEARNGENE_HF_CACHE", str(tmp_path / "cache"))


def _digest(arrays):
    h = hashlib.sha256()
    for key in ("train_images", "train_labels", "test_images", "test_labels"):
        h.update(np.ascontiguousarray(arrays[key]).tobytes())
    return h.hexdigest()


def test_same_seed_gives_same_bytes_and_other_seed_differs():
    a = generate_arrays(seed=3, **SMALL)
    b = generate_arrays(seed=3, **SMALL)
    c = generate_arrays(seed=4, **SMALL)
    assert _digest(a) == _digest(b)
    assert _digest(a) != _digest(c)
    assert a["class_names"] == b["class_names"]


def test_dataset_has_cifar100_schema(tmp_path):
    dsd = make_procedural_dataset(seed=0, cache_dir=tmp_path, **SMALL)
    assert set(dsd) == {"train", "test"}
    assert isinstance(dsd["train"].features["img"], datasets.Image)
    label = dsd["train"].features["fine_label"]
    assert isinstance(label, datasets.ClassLabel) and label.num_classes == 6
    assert len(set(label.names)) == 6 and all("_on_" in n for n in label.names)
    assert dsd.num_rows == {"train": 72, "test": 24}
    img = dsd["test"][0]["img"]
    assert img.mode == "RGB" and img.size == (16, 16)
    assert sorted(set(dsd["train"]["fine_label"])) == list(range(6))


def test_default_shape_is_100_classes_of_32px_with_cifar_counts():
    defs = class_definitions(100, seed=0)
    assert len({d.name for d in defs}) == 100
    # Building blocks are shared: every shape, fill, palette and background occurs in several classes.
    for attr, values in (("shape", SHAPES), ("fill", FILLS), ("palette", PALETTES), ("background", BACKGROUNDS)):
        counts = np.bincount([getattr(d, attr) for d in defs], minlength=len(values))
        assert counts.min() >= 100 // len(values) and counts.max() <= -(-100 // len(values))
    arrays = generate_arrays(seed=0, num_classes=2, train_per_class=3, test_per_class=1)
    assert arrays["train_images"].shape == (6, 32, 32, 3) and arrays["train_images"].dtype == np.uint8


def test_images_of_one_class_vary_and_use_the_full_range():
    arrays = generate_arrays(seed=0, num_classes=2, train_per_class=20, test_per_class=0, image_size=32)
    imgs = arrays["train_images"][:20].astype(np.float32)
    # No two images of a class are the same, and per-pixel std over the class is large.
    assert len({im.tobytes() for im in arrays["train_images"][:20]}) == 20
    assert imgs.std(axis=0).mean() > 30
    assert arrays["train_images"].min() < 30 and arrays["train_images"].max() > 225


def test_dataset_is_cached_on_disk_and_reloaded(tmp_path):
    first = make_procedural_dataset(seed=1, cache_dir=tmp_path, **SMALL)
    key = generation_key(1, 6, 12, 4, 16)
    folder = tmp_path / "procedural" / key
    assert (folder / "dataset" / "dataset_dict.json").is_file()
    assert (folder / "arrays.safetensors").is_file()
    assert not [p for p in folder.rglob("*.tmp")]
    second = make_procedural_dataset(seed=1, cache_dir=tmp_path, **SMALL)
    assert second["train"].cache_files, "the second call should memory-map the saved dataset"
    assert first["train"][5]["img"].tobytes() == second["train"][5]["img"].tobytes()


def test_cache_key_depends_on_every_argument():
    base = generation_key(0, 100, 600, 100, 32)
    others = [
        generation_key(1, 100, 600, 100, 32),
        generation_key(0, 99, 600, 100, 32),
        generation_key(0, 100, 500, 100, 32),
        generation_key(0, 100, 600, 50, 32),
        generation_key(0, 100, 600, 100, 64),
    ]
    assert len({base, *others}) == 6


def test_load_tensors_embedded_matches_dataset_pixels(tmp_path):
    dsd = make_procedural_dataset(seed=2, cache_dir=tmp_path, **SMALL)
    train, test = load_tensors(None, seed=2, cache_dir=tmp_path, **SMALL)
    assert train.images.shape == (72, 3, 16, 16) and test.images.shape == (24, 3, 16, 16)
    assert train.class_names == dsd["train"].features["fine_label"].names
    np.testing.assert_array_equal(np.asarray(dsd["test"][7]["img"]), test.images[7].permute(1, 2, 0).numpy())
    assert test.labels[7].item() == dsd["test"][7]["fine_label"]


@pytest.mark.parametrize(
    "kwargs, word",
    [
        (dict(num_classes=0), "num_classes"),
        (dict(train_per_class=0), "train_per_class"),
        (dict(image_size=4), "image_size"),
        (dict(num_classes=10_000), "num_classes"),
    ],
)
def test_bad_generation_arguments_are_named(kwargs, word):
    with pytest.raises(ConfigError, match=word):
        generate_arrays(**{**SMALL, **kwargs})


def test_unknown_embedded_option_is_a_clear_error():
    with pytest.raises(DataError, match="images_per_class"):
        load_tensors(None, images_per_class=3)
