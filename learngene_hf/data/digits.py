"""scikit-learn's handwritten digits as a second, real dataset that needs no download.

``sklearn.datasets.load_digits`` ships 1,797 real 8x8 grey images of the digits 0-9 (about 180 per
class) inside the scikit-learn package. Here they become a source of the usual ``--dataset`` path
(``--dataset digits``): grey levels 0..16 scaled to 0..255, upscaled (bilinear) to the model's
input side, grey replicated to RGB, in the CIFAR-100 schema (``img``, ``fine_label``) like the
embedded dataset. :func:`export_digits` writes the same images as parquet files that
``datasets.load_dataset`` (and so ``--dataset FOLDER``) reads.

Class split (:data:`DIGITS_SPLIT`, 10 classes): base 0-3 (for a collective model trained on
digits), open-world 4-6 (tuning), novel 7-9 (evaluation); so episodes on the novel classes are at
most 3-way. Train/test: a seeded per-class split with 1/7 of every class in ``test``.

scikit-learn is an optional dependency: ``pip install "learngene-hf[digits]"``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import DataError
from .splits import ClassSplit
from .tensors import ImageTensors

DIGITS = "digits"
#: Base / open-world / novel classes of the digits dataset.
DIGITS_SPLIT = ClassSplit(base=[0, 1, 2, 3], open_world=[4, 5, 6], novel=[7, 8, 9])
DIGITS_TEST_FRACTION = 1 / 7
DEFAULT_DIGITS_IMAGE_SIZE = 32


def _load_sklearn_digits() -> tuple[np.ndarray, np.ndarray]:
    try:
        from sklearn.datasets import load_digits
    except ImportError as err:
        raise DataError(
            'The digits dataset comes from scikit-learn, which is not installed: pip install "learngene-hf[digits]" '
            "(or pip install scikit-learn)."
        ) from err
    bunch = load_digits()
    return np.asarray(bunch.images, dtype=np.float64), np.asarray(bunch.target, dtype=np.int64)


def digits_arrays(image_size: int = DEFAULT_DIGITS_IMAGE_SIZE) -> tuple[np.ndarray, np.ndarray]:
    """All 1,797 digits as ``(uint8 [N, image_size, image_size, 3], int64 labels [N])``.

    Grey levels 0..16 become 0..255, each image is resized (bilinear) from 8x8 to ``image_size``
    and the grey channel is repeated three times.
    """
    if not isinstance(image_size, int) or image_size < 8:
        raise DataError(f"image_size={image_size!r}: the digits are 8x8, give an integer side of at least 8.")
    images, labels = _load_sklearn_digits()
    grey = torch.from_numpy(images * (255.0 / 16.0)).float().unsqueeze(1)  # [N, 1, 8, 8]
    if image_size != grey.shape[-1]:
        grey = torch.nn.functional.interpolate(
            grey, size=(image_size, image_size), mode="bilinear", align_corners=False
        )
    grey = grey.round().clamp(0, 255).to(torch.uint8)
    rgb = grey.expand(-1, 3, -1, -1).permute(0, 2, 3, 1).contiguous().numpy()
    return rgb, labels


def digits_split_indices(labels: np.ndarray, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``(train, test)`` indices: a seeded per-class split, ``round(n / 7)`` images of every class in test."""
    rng = np.random.default_rng([seed, 1797])
    train, test = [], []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        idx = idx[rng.permutation(len(idx))]
        n_test = int(round(DIGITS_TEST_FRACTION * len(idx)))
        test.extend(idx[:n_test].tolist())
        train.extend(idx[n_test:].tolist())
    return np.asarray(sorted(train)), np.asarray(sorted(test))


def digits_tensors(image_size: int | None = None, seed: int = 0) -> tuple[ImageTensors, ImageTensors]:
    """``(train, test)`` :class:`ImageTensors` of the digits (uint8 [N, 3, S, S], S = ``image_size`` or 32)."""
    images, labels = digits_arrays(image_size or DEFAULT_DIGITS_IMAGE_SIZE)
    names = [str(d) for d in range(10)]
    out = []
    for idx in digits_split_indices(labels, seed):
        tensor = torch.from_numpy(images[idx]).permute(0, 3, 1, 2).contiguous()
        out.append(ImageTensors(tensor, torch.from_numpy(labels[idx].copy()), names))
    return out[0], out[1]


def make_digits_dataset(image_size: int | None = None, seed: int = 0) -> "datasets.DatasetDict":  # noqa: F821
    """The digits as a ``datasets.DatasetDict`` (``train`` / ``test``; columns ``img`` (PNG Image) and
    ``fine_label`` (``ClassLabel`` "0".."9")), the same pixels as :func:`digits_tensors`."""
    import io

    import datasets
    from PIL import Image

    images, labels = digits_arrays(image_size or DEFAULT_DIGITS_IMAGE_SIZE)
    features = datasets.Features(
        {"img": datasets.Image(), "fine_label": datasets.ClassLabel(names=[str(d) for d in range(10)])}
    )
    splits = {}
    for name, idx in zip(("train", "test"), digits_split_indices(labels, seed)):
        encoded = []
        for i in idx:
            buffer = io.BytesIO()
            Image.fromarray(images[i]).save(buffer, format="PNG")
            encoded.append({"bytes": buffer.getvalue(), "path": None})
        splits[name] = datasets.Dataset.from_dict(
            {"img": encoded, "fine_label": labels[idx].tolist()}, features=features
        )
    return datasets.DatasetDict(splits)


def export_digits(folder: str | Path, image_size: int | None = None, seed: int = 0) -> Path:
    """Write the digits to ``folder/train.parquet`` and ``folder/test.parquet`` (then
    ``--dataset FOLDER`` or ``datasets.load_dataset(FOLDER)`` reads them); returns ``folder``."""
    from ..io import atomic_path

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for name, split in make_digits_dataset(image_size, seed).items():
        with atomic_path(folder / f"{name}.parquet") as tmp:
            split.to_parquet(str(tmp))
    return folder


def builtin_split(source: Any) -> ClassSplit | None:
    """The documented class split of a built-in source (``"digits"``), ``None`` for others."""
    return ClassSplit.from_dict(DIGITS_SPLIT.to_dict()) if source == DIGITS else None
