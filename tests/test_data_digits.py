"""scikit-learn's handwritten digits as an offline source of the --dataset path."""

from __future__ import annotations

import torch

from learngene_hf.data import DIGITS_SPLIT, digits_tensors, export_digits, load_tensors


def test_digits_load_as_rgb_tensors_with_a_per_class_split():
    train, test = digits_tensors(16)
    assert len(train) + len(test) == 1797 and train.images.shape[1:] == (3, 16, 16)
    assert train.images.dtype == torch.uint8 and int(train.images.max()) > 200
    assert torch.equal(train.images[:, 0], train.images[:, 2])  # grey replicated to RGB
    counts = torch.bincount(test.labels, minlength=10)
    assert counts.min() >= 24 and counts.max() <= 27 and train.class_names == [str(d) for d in range(10)]
    again, _ = load_tensors("digits", image_size=16)
    assert torch.equal(again.images, train.images) and torch.equal(again.labels, train.labels)
    assert (
        DIGITS_SPLIT.novel == [7, 8, 9] and DIGITS_SPLIT.open_world == [4, 5, 6] and DIGITS_SPLIT.base == [0, 1, 2, 3]
    )


def test_exported_digits_come_back_through_the_folder_path(tmp_path):
    folder = export_digits(tmp_path / "digits", image_size=12)
    train, test = load_tensors(str(folder))
    ref_train, ref_test = digits_tensors(12)
    assert torch.equal(train.images, ref_train.images) and torch.equal(test.labels, ref_test.labels)


def test_few_shot_data_on_digits_uses_their_split_at_the_learngenes_size():
    from types import SimpleNamespace

    from learngene_hf.fewshot.loading import load_fewshot_data

    learngene = SimpleNamespace(
        config=SimpleNamespace(
            task_stream={"split": {"base": [0], "novel": [90, 91]}}, preprocessing={"image_size": 20}
        )
    )
    images, novel, open_world = load_fewshot_data(learngene, "digits")
    assert novel == [7, 8, 9] and open_world == [4, 5, 6] and images.image_size == (20, 20)
