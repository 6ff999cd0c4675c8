"""Loading real data through datasets: parquet, imagefolder, save_to_disk; column validation."""

from __future__ import annotations

import datasets
import numpy as np
import pytest
import torch
from PIL import Image

from learngene_hf.data import (
    IMAGE_MEAN,
    IMAGE_STD,
    ImageTensors,
    dataset_to_tensors,
    detect_columns,
    load_image_dataset,
    load_tensors,
    normalize,
    source_name,
)
from learngene_hf.errors import DataError

NAMES = ["apple", "bee", "cat", "dog"]


def _images(n: int, size: int = 8, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, size=(size, size, 3), dtype=np.uint8) for _ in range(n)]


def _cifar_like(n_per_class: int = 5, seed: int = 0) -> datasets.Dataset:
    labels = [c for c in range(len(NAMES)) for _ in range(n_per_class)]
    features = datasets.Features(
        {
            "img": datasets.Image(),
            "fine_label": datasets.ClassLabel(names=NAMES),
            "coarse_label": datasets.ClassLabel(num_classes=2),
        }
    )
    return datasets.Dataset.from_dict(
        {"img": _images(len(labels), seed=seed), "fine_label": labels, "coarse_label": [c % 2 for c in labels]},
        features=features,
    )


@pytest.fixture
def parquet_dir(tmp_path):
    folder = tmp_path / "pq"
    folder.mkdir()
    _cifar_like(5, seed=0).to_parquet(str(folder / "train.parquet"))
    _cifar_like(2, seed=1).to_parquet(str(folder / "test.parquet"))
    return folder


def test_parquet_folder_loads_with_cifar_schema_and_pixels(parquet_dir):
    dsd = load_image_dataset(str(parquet_dir))
    assert dsd.num_rows == {"train": 20, "test": 8}
    assert dsd["train"].features["fine_label"].names == NAMES
    train, test = load_tensors(str(parquet_dir))
    assert train.images.shape == (20, 3, 8, 8) and train.images.dtype == torch.uint8
    assert train.labels.tolist() == [c for c in range(4) for _ in range(5)]
    assert train.class_names == NAMES and test.class_counts() == {0: 2, 1: 2, 2: 2, 3: 2}
    expected = _images(20, seed=0)[7]
    np.testing.assert_array_equal(train.images[7].permute(1, 2, 0).numpy(), expected)


def test_single_parquet_file_gets_a_seeded_per_class_split(parquet_dir):
    one = str(parquet_dir / "train.parquet")
    a = load_image_dataset(one, test_fraction=0.2, split_seed=3)
    b = load_image_dataset(one, test_fraction=0.2, split_seed=3)
    assert a.num_rows == {"train": 16, "test": 4}
    assert sorted(a["test"]["fine_label"]) == [0, 1, 2, 3]  # one test image per class
    assert a["test"]["img"][0].tobytes() == b["test"]["img"][0].tobytes()
    train, test = load_tensors(one, test_fraction=0.2, split_seed=3)
    assert train.class_counts() == {0: 4, 1: 4, 2: 4, 3: 4}
    assert len(test) == 4


def test_imagefolder_loads_with_its_columns_found_and_resizing(tmp_path):
    root = tmp_path / "folder"
    for split, count in (("train", 3), ("test", 1)):
        for c, name in enumerate(NAMES[:3]):
            (root / split / name).mkdir(parents=True)
            for i, arr in enumerate(_images(count, size=10 + c, seed=c)):
                Image.fromarray(arr).save(root / split / name / f"{i}.png")
    with pytest.raises(DataError, match="'fine_label' not found.*label_column='label'"):
        load_image_dataset(str(root), label_column="fine_label")
    train, test = load_tensors(str(root), image_size=12)  # image / label found from the features
    assert train.source == {"source": str(root.resolve()), "image_column": "image", "label_column": "label"}
    assert train.images.shape == (9, 3, 12, 12) and test.images.shape == (3, 3, 12, 12)
    assert train.class_names == NAMES[:3]
    assert train.class_counts() == {0: 3, 1: 3, 2: 3}
    # Images of different sizes without image_size: a clear error asking for it.
    dsd = load_image_dataset(str(root), image_column="image", label_column="label")
    with pytest.raises(DataError, match="image_size"):
        dataset_to_tensors(dsd["train"], "image", "label")


def test_save_to_disk_folder_and_split_names(tmp_path):
    dsd = datasets.DatasetDict({"training": _cifar_like(3), "validation": _cifar_like(1, seed=2)})
    dsd.save_to_disk(str(tmp_path / "saved"))
    with pytest.raises(DataError, match="split 'train' not found.*training"):
        load_image_dataset(str(tmp_path / "saved"))
    out = load_image_dataset(str(tmp_path / "saved"), train_split="training", test_split="validation")
    assert out.num_rows == {"train": 12, "test": 4}


def test_missing_image_column_names_column_and_available_columns(parquet_dir):
    with pytest.raises(DataError, match=r"image column 'picture' not found.*img \(Image\).*fine_label"):
        load_image_dataset(str(parquet_dir), image_column="picture")


def test_string_label_column_is_rejected_with_fix(tmp_path):
    ds = datasets.Dataset.from_dict(
        {"img": _images(4), "fine_label": ["a", "b", "a", "b"]},
        features=datasets.Features({"img": datasets.Image(), "fine_label": datasets.Value("string")}),
    )
    ds.save_to_disk(str(tmp_path / "s"))
    with pytest.raises(DataError, match="'fine_label'.*integer or ClassLabel.*class_encode_column"):
        load_image_dataset(str(tmp_path / "s"))


def test_integer_labels_and_select_views_convert(parquet_dir):
    ds = datasets.load_dataset("parquet", data_files=str(parquet_dir / "train.parquet"))["train"]
    ds = ds.cast_column("fine_label", datasets.Value("int64"))
    view = ds.select([19, 0, 6])
    data = dataset_to_tensors(view)
    assert data.labels.tolist() == [3, 0, 1]
    assert data.class_names == ["0", "1", "2", "3"]
    np.testing.assert_array_equal(data.images[0].permute(1, 2, 0).numpy(), _images(20)[19])


def test_missing_path_and_unloadable_source_are_data_errors(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_image_dataset(str(tmp_path / "nope"))
    (tmp_path / "x.txt").write_text("hello")
    with pytest.raises(DataError, match="not a .parquet file"):
        load_image_dataset(str(tmp_path / "x.txt"))


def test_normalize_uses_the_shared_constants_and_rejects_floats():
    assert IMAGE_MEAN == (0.5, 0.5, 0.5) and IMAGE_STD == (0.5, 0.5, 0.5)
    x = torch.tensor([0, 255, 51], dtype=torch.uint8).view(1, 3, 1, 1).expand(2, 3, 2, 2)
    y = normalize(x)
    assert y.dtype == torch.float32 and y.shape == (2, 3, 2, 2)
    assert torch.allclose(y[0, :, 0, 0], torch.tensor([-1.0, 1.0, 0.2 / 0.5 - 1.0]))
    with pytest.raises(DataError, match="uint8"):
        normalize(y)


def test_image_tensors_select_and_counts():
    data = ImageTensors(torch.zeros(6, 3, 4, 4, dtype=torch.uint8), torch.tensor([0, 1, 2, 1, 0, 2]), NAMES)
    assert data.num_classes == 4 and len(data) == 6
    assert data.class_counts() == {0: 2, 1: 2, 2: 2}
    sub = data.select([2, 0])
    assert sub.labels.tolist() == [0, 2, 0, 2] and sub.class_names == NAMES
    with pytest.raises(DataError, match="do not exist"):
        data.select([7])
    with pytest.raises(DataError, match="labels must lie"):
        ImageTensors(torch.zeros(1, 3, 4, 4, dtype=torch.uint8), torch.tensor([9]), NAMES)


def test_columns_are_found_from_the_features_and_cifar_names_win_a_tie():
    assert detect_columns(_cifar_like(1)) == ("img", "fine_label")  # two ClassLabel columns: fine_label
    renamed = _cifar_like(1).rename_columns({"img": "photo", "fine_label": "kind", "coarse_label": "group"})
    with pytest.raises(DataError, match=r"several ClassLabel columns \(kind, group\).*label_column=\.\.\."):
        detect_columns(renamed)
    assert detect_columns(renamed, label_column="kind") == ("photo", "kind")
    ints = datasets.Dataset.from_dict(
        {"image": _images(2), "label": [0, 1]},
        features=datasets.Features({"image": datasets.Image(), "label": datasets.Value("int64")}),
    )
    assert detect_columns(ints) == ("image", "label")
    no_image = datasets.Dataset.from_dict({"path": ["a.png"], "label": [0]})
    with pytest.raises(DataError, match="no image column found.*--image-column NAME"):
        detect_columns(no_image)


def test_in_memory_dataset_and_dataset_dict_load_where_a_path_does(parquet_dir):
    dsd = datasets.DatasetDict({"train": _cifar_like(5), "test": _cifar_like(2, seed=1)})
    train, test = load_tensors(dsd)
    assert train.class_names == NAMES and len(test) == 8
    assert train.source == {"source": "in-memory", "image_column": "img", "label_column": "fine_label"}
    one, held_out = load_tensors(_cifar_like(7), test_fraction=2 / 7)  # one split: a seeded per-class split
    assert one.class_counts() == {0: 5, 1: 5, 2: 5, 3: 5} and len(held_out) == 8
    with pytest.raises(DataError, match="cannot load a dataset from a list"):
        load_tensors([1, 2])


def test_relative_paths_are_recorded_absolute(parquet_dir, monkeypatch):
    monkeypatch.chdir(parquet_dir.parent)
    train, _ = load_tensors("pq")
    assert train.source["source"] == str(parquet_dir.resolve())
    assert source_name("uoft-cs/cifar100") == "uoft-cs/cifar100" and source_name(None) is None
    assert source_name("pq/*.parquet") == str(parquet_dir.parent.resolve() / "pq" / "*.parquet")


def test_image_tensors_name_the_classes_of_a_head():
    data = ImageTensors(torch.zeros(2, 3, 4, 4, dtype=torch.uint8), torch.tensor([0, 3]), list(NAMES))
    assert data.id2label([3, 1]) == {0: "dog", 1: "bee"}
    assert data.id2label() == dict(enumerate(NAMES))
