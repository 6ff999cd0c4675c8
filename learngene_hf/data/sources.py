"""Loading image-classification data: the embedded dataset, Hub ids, folders, parquet, save_to_disk."""

from __future__ import annotations

import glob
import io
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from ..errors import DataError
from .digits import DIGITS, digits_tensors, make_digits_dataset
from .procedural import load_or_generate_arrays, make_procedural_dataset
from .tensors import ImageTensors

EMBEDDED = "embedded"
#: How a run records data that was passed as a ``datasets`` object (it cannot be reloaded).
IN_MEMORY = "in-memory"
#: Names under which run reports refer to the embedded dataset (training writes "embedded:procedural").
EMBEDDED_SOURCES = (None, EMBEDDED, "embedded:procedural")


def _describe_columns(ds: "datasets.Dataset") -> str:  # noqa: F821
    return ", ".join(f"{name} ({type(feat).__name__})" for name, feat in ds.features.items())


def _suggest(ds: "datasets.Dataset", want: str) -> str:  # noqa: F821
    import datasets

    if want == "image":
        cands = [n for n, f in ds.features.items() if isinstance(f, datasets.Image)]
        return f" Pass image_column={cands[0]!r} (--image-column {cands[0]})." if cands else ""
    cands = [n for n, f in ds.features.items() if isinstance(f, datasets.ClassLabel)]
    return f" Pass label_column={cands[0]!r} (--label-column {cands[0]})." if cands else ""


def validate_columns(
    ds: "datasets.Dataset",  # noqa: F821
    image_column: str,
    label_column: str,
    split: str = "",
) -> None:
    """Check that ``ds`` has an image column and an integer / ``ClassLabel`` label column.

    Raises :class:`DataError` naming the missing or wrongly typed column and the columns ``ds`` has.
    """
    import datasets

    where = f" in split {split!r}" if split else ""
    problems, hints = [], []
    if image_column not in ds.features:
        problems.append(f"image column {image_column!r} not found")
        hints.append(_suggest(ds, "image"))
    if label_column not in ds.features:
        problems.append(f"label column {label_column!r} not found")
        hints.append(_suggest(ds, "label"))
    if problems:
        raise DataError(
            f"{' and '.join(problems)}{where}; the dataset has columns: {_describe_columns(ds)}.{''.join(hints)}"
        )
    img = ds.features[image_column]
    if not isinstance(img, datasets.Image):
        raise DataError(
            f"column {image_column!r}{where} is {img!r}, not an Image feature; choose the "
            f"image column with image_column=... (columns: {_describe_columns(ds)}), or cast it "
            f"with ds.cast_column({image_column!r}, datasets.Image())."
        )
    lab = ds.features[label_column]
    is_int = isinstance(lab, datasets.Value) and lab.dtype.startswith(("int", "uint"))
    if not (isinstance(lab, datasets.ClassLabel) or is_int):
        raise DataError(
            f"label column {label_column!r}{where} has type {lab!r}; it must be integer or "
            f"ClassLabel. Encode it first, e.g. ds = ds.class_encode_column({label_column!r}), "
            f"or choose another column with label_column=... (columns: {_describe_columns(ds)})."
        )


#: Names tried first when a dataset has several Image / ClassLabel columns (CIFAR-100's among them).
PREFERRED_IMAGE_COLUMNS = ("img", "image", "images", "pixel_values")
PREFERRED_LABEL_COLUMNS = ("fine_label", "label", "labels")


def _pick(ds: "datasets.Dataset", kind: type, preferred: Sequence[str], what: str, flag: str) -> str:  # noqa: F821
    def usable(feature: Any) -> bool:
        is_int = kind.__name__ == "ClassLabel" and str(getattr(feature, "dtype", "")).startswith(("int", "uint"))
        return isinstance(feature, kind) or is_int

    for name in preferred:  # the usual names first (CIFAR-100's img / fine_label, then image / label)
        if name in ds.features and usable(ds.features[name]):
            return name
    found = [name for name, feature in ds.features.items() if isinstance(feature, kind)]
    if len(found) == 1:
        return found[0]
    named = [name for name in preferred if name in ds.features]
    if not found and named:  # a usual name of the wrong type: validate_columns explains how to fix it
        return named[0]
    name_it = f"{flag[2:].replace('-', '_')}=... ({flag} NAME)"
    if found:
        raise DataError(f"the dataset has several {kind.__name__} columns ({', '.join(found)}); pass {name_it}.")
    convert = "encode the labels with ds.class_encode_column(NAME)" if what == "label" else "cast it to Image()"
    raise DataError(
        f"no {what} column found: the dataset has no {kind.__name__} column (columns: {_describe_columns(ds)}); "
        f"pass {name_it}, or {convert}."
    )


def detect_columns(
    ds: "datasets.Dataset",  # noqa: F821
    image_column: str | None = None,
    label_column: str | None = None,
) -> tuple[str, str]:
    """``(image_column, label_column)`` of ``ds``: the names given, else found from its features.

    The usual names come first when their type fits (:data:`PREFERRED_IMAGE_COLUMNS`: CIFAR-100's
    ``img``, then ``image``...; :data:`PREFERRED_LABEL_COLUMNS`: ``fine_label``, ``label``...,
    ``ClassLabel`` or integer), else the one ``Image`` feature and the one ``ClassLabel``
    feature. Raises :class:`DataError` naming the columns when the choice is missing or
    ambiguous.
    """
    import datasets

    image = image_column or _pick(ds, datasets.Image, PREFERRED_IMAGE_COLUMNS, "image", "--image-column")
    label = label_column or _pick(ds, datasets.ClassLabel, PREFERRED_LABEL_COLUMNS, "label", "--label-column")
    return image, label


def source_name(source: Any) -> str | None:
    """How a run records a dataset source so that it reloads from any working directory: an
    existing local path becomes absolute, an in-memory ``datasets`` object ``"in-memory"``, a Hub
    id (or ``None``, the embedded dataset) stays as it is."""
    if source is None or isinstance(source, str) and source in (EMBEDDED, DIGITS):
        return source
    if not isinstance(source, (str, os.PathLike)):
        return IN_MEMORY
    text = os.fspath(source)
    if any(ch in text for ch in "*?["):
        directory, pattern = os.path.split(text)
        return os.path.join(os.path.abspath(os.path.expanduser(directory or ".")), pattern)
    path = Path(text).expanduser()
    return str(path.resolve()) if path.exists() else text


def _is_save_to_disk_dir(path: Path) -> bool:
    return (path / "dataset_dict.json").is_file() or (path / "state.json").is_file()


def _load_raw(source: Any) -> "datasets.Dataset | datasets.DatasetDict":  # noqa: F821
    import datasets

    if isinstance(source, (datasets.Dataset, datasets.DatasetDict)):
        return source
    if not isinstance(source, (str, os.PathLike)):
        raise DataError(
            f"cannot load a dataset from a {type(source).__name__}; pass a Hub dataset id, a folder or file path, "
            "'embedded', 'digits', or a datasets.Dataset / DatasetDict."
        )
    source = os.fspath(source)
    path = Path(source).expanduser()
    try:
        if path.is_dir() and _is_save_to_disk_dir(path):
            return datasets.load_from_disk(str(path))
        if path.is_file() and path.suffix == ".parquet":
            return datasets.load_dataset("parquet", data_files=str(path))
        if any(ch in source for ch in "*?[") and glob.glob(source):
            return datasets.load_dataset("parquet" if source.endswith(".parquet") else "imagefolder", data_files=source)
        if path.is_dir():
            # datasets infers the builder (parquet, imagefolder, ...) and the splits from file names.
            return datasets.load_dataset(str(path))
        if path.exists():
            raise DataError(
                f"{source} is a file but not a .parquet file; pass a parquet file, a folder "
                "(imagefolder / parquet / save_to_disk) or a Hub dataset id."
            )
        if source.startswith((".", "/", "~")) or os.sep in source.strip("/").split("/", 1)[-1]:
            raise DataError(
                f"{source} does not exist. Pass an existing folder or file, a Hub dataset id "
                "like 'uoft-cs/cifar100', or 'embedded'."
            )
        return datasets.load_dataset(source)
    except DataError:
        raise
    except Exception as err:  # datasets raises many types (FileNotFoundError, ConnectionError, ...)
        raise DataError(
            f"could not load dataset {source!r}: {type(err).__name__}: {err}. Check the id or "
            "path; for a Hub id without a network connection, download it once while online "
            "(it is then cached) or pass a local copy."
        ) from err


def _labels(ds: "datasets.Dataset", label_column: str) -> np.ndarray:  # noqa: F821
    """The label column as int64 numpy (respects a .select()/.filter() indices mapping)."""
    if getattr(ds, "_indices", None) is not None:
        return np.asarray(list(ds[label_column]), dtype=np.int64)
    return np.asarray(ds.data.column(label_column).to_numpy(zero_copy_only=False), dtype=np.int64)


EMBEDDED_OPTIONS = frozenset({"seed", "num_classes", "train_per_class", "test_per_class", "image_size", "cache_dir"})


def _check_embedded_options(kwargs: dict) -> None:
    unknown = sorted(set(kwargs) - EMBEDDED_OPTIONS)
    if unknown:
        raise DataError(f"unknown options {unknown} for the embedded dataset; it accepts {sorted(EMBEDDED_OPTIONS)}.")


def _split_per_class(
    ds: "datasets.Dataset",  # noqa: F821
    label_column: str,
    test_fraction: float,
    seed: int,
) -> "datasets.DatasetDict":  # noqa: F821
    """Seeded per-class train/test split: every class keeps ``round(test_fraction * n)`` (>= 1) test images."""
    import datasets

    labels = _labels(ds, label_column)
    rng = np.random.default_rng([seed, 2718])
    train_idx, test_idx = [], []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        idx = idx[rng.permutation(len(idx))]
        n_test = min(max(1, int(round(test_fraction * len(idx)))), len(idx) - 1) if len(idx) > 1 else 0
        test_idx.extend(idx[:n_test].tolist())
        train_idx.extend(idx[n_test:].tolist())
    return datasets.DatasetDict({"train": ds.select(sorted(train_idx)), "test": ds.select(sorted(test_idx))})


def load_image_dataset(
    source: Any = None,
    *,
    image_column: str | None = None,
    label_column: str | None = None,
    train_split: str = "train",
    test_split: str = "test",
    test_fraction: float = 1 / 7,
    split_seed: int = 0,
    **embedded_kwargs: Any,
) -> "datasets.DatasetDict":  # noqa: F821
    """Load an image-classification dataset as a ``DatasetDict`` with ``train`` and ``test`` splits.

    Args:
        source: ``None`` or ``"embedded"`` for the procedural dataset (``embedded_kwargs`` go to
            :func:`make_procedural_dataset`); ``"digits"`` for scikit-learn's handwritten digits
            (:mod:`learngene_hf.data.digits`; ``image_size`` sets their side); otherwise a Hub dataset
            id (``"uoft-cs/cifar100"``), an imagefolder or parquet folder, a parquet file or glob, a
            ``save_to_disk`` folder, or a ``datasets.Dataset`` / ``DatasetDict`` in memory.
        image_column / label_column: column names (the label must be integer or ``ClassLabel``);
            ``None`` finds them from the features (:func:`detect_columns`).
        train_split / test_split: split names in the source; they become ``train`` / ``test``.
        test_fraction / split_seed: when the source has a single split (or no ``test_split``),
            a seeded per-class split with this fraction of every class in ``test``.

    Raises:
        DataError: the source cannot be loaded, or a column is missing or has the wrong type.
    """
    import datasets

    if source is None or source == EMBEDDED:
        _check_embedded_options(embedded_kwargs)
        dsd = make_procedural_dataset(**embedded_kwargs)
        source_name = EMBEDDED
    elif source == DIGITS:
        unknown = sorted(set(embedded_kwargs) - {"image_size"})
        if unknown:
            raise DataError(f"options {unknown} do not apply to the digits dataset; it only takes image_size.")
        dsd = make_digits_dataset(embedded_kwargs.get("image_size"))
        source_name = DIGITS
    else:
        if embedded_kwargs:
            raise DataError(
                f"options {sorted(embedded_kwargs)} only apply to the embedded dataset, not to {source!r}; remove them."
            )
        dsd = _load_raw(source)
        source_name = source if isinstance(source, (str, os.PathLike)) else IN_MEMORY
    if isinstance(dsd, datasets.Dataset):
        dsd = datasets.DatasetDict({train_split: dsd})
    if train_split not in dsd:
        if len(dsd) == 1:
            train_split = next(iter(dsd))
        else:
            raise DataError(
                f"split {train_split!r} not found in {source_name!r}; it has splits "
                f"{list(dsd)}. Pass train_split=... (--train-split)."
            )
    image_column, label_column = detect_columns(dsd[train_split], image_column, label_column)
    for name in (train_split, test_split):
        if name in dsd:
            validate_columns(dsd[name], image_column, label_column, split=name)
    if test_split in dsd and test_split != train_split:
        return datasets.DatasetDict({"train": dsd[train_split], "test": dsd[test_split]})
    if not 0.0 < test_fraction < 1.0:
        raise DataError(f"test_fraction={test_fraction} must be between 0 and 1 (exclusive).")
    return _split_per_class(dsd[train_split], label_column, test_fraction, split_seed)


def _class_names(ds: "datasets.Dataset", label_column: str, labels: np.ndarray) -> list[str]:  # noqa: F821
    import datasets

    feat = ds.features[label_column]
    if isinstance(feat, datasets.ClassLabel):
        return list(feat.names)
    if len(labels) and labels.min() < 0:
        raise DataError(
            f"label column {label_column!r} holds negative values (e.g. {int(labels.min())}); "
            "labels must be class ids 0..C-1. Drop unlabelled rows first (ds.filter(...))."
        )
    count = int(labels.max()) + 1 if len(labels) else 0
    return [str(i) for i in range(count)]


def dataset_to_tensors(
    ds: "datasets.Dataset",  # noqa: F821
    image_column: str | None = None,
    label_column: str | None = None,
    image_size: int | None = None,
) -> ImageTensors:
    """Decode a ``datasets.Dataset`` into :class:`ImageTensors` (uint8 ``[N, 3, H, W]``, int64 labels;
    ``class_names`` from a ``ClassLabel`` column's names).

    Images are converted to RGB; with ``image_size`` every image is resized (bilinear, antialiased)
    to ``image_size`` x ``image_size``. Without it all images must already share one size. The
    columns are found from the features when not given (:func:`detect_columns`).
    """
    import datasets
    from PIL import Image as PILImage

    image_column, label_column = detect_columns(ds, image_column, label_column)
    validate_columns(ds, image_column, label_column)
    labels = _labels(ds, label_column)
    names = _class_names(ds, label_column, labels)
    raw = ds.cast_column(image_column, datasets.Image(decode=False))
    arrays: list[np.ndarray] = []
    first_size: tuple[int, int] | None = None
    for row, item in enumerate(raw[image_column]):
        data = item.get("bytes") if isinstance(item, dict) else None
        path = item.get("path") if isinstance(item, dict) else None
        try:
            img = PILImage.open(io.BytesIO(data) if data is not None else path)
            img = img.convert("RGB")
        except Exception as err:
            raise DataError(
                f"image {row} of column {image_column!r} cannot be decoded ({err}); remove or fix that row."
            ) from err
        if image_size is not None and img.size != (image_size, image_size):
            img = img.resize((image_size, image_size), PILImage.BILINEAR, reducing_gap=None)
        elif image_size is None:
            if first_size is None:
                first_size = img.size
            elif img.size != first_size:
                raise DataError(
                    f"images have different sizes ({first_size} and {img.size} at row {row}); "
                    "pass image_size=... (--image-size) to resize them all."
                )
        arrays.append(np.asarray(img, dtype=np.uint8))
    if arrays:
        images = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()
    else:
        size = image_size or 32
        images = torch.zeros((0, 3, size, size), dtype=torch.uint8)
    columns = {"image_column": image_column, "label_column": label_column}
    return ImageTensors(images, torch.from_numpy(labels.copy()), names, source=columns)


def _embedded_tensors(image_size: int | None, **kwargs: Any) -> tuple[ImageTensors, ImageTensors]:
    kwargs = dict(kwargs)
    _check_embedded_options(kwargs)
    if image_size is not None:
        kwargs.setdefault("image_size", image_size)
    arrays = load_or_generate_arrays(**kwargs)
    out = []
    for split in ("train", "test"):
        images = torch.from_numpy(np.ascontiguousarray(arrays[f"{split}_images"])).permute(0, 3, 1, 2).contiguous()
        if image_size is not None and images.shape[-1] != image_size:
            images = torch.nn.functional.interpolate(
                images.float(), size=(image_size, image_size), mode="bilinear", antialias=True, align_corners=False
            )
            images = images.round().clamp(0, 255).to(torch.uint8)
        labels = torch.from_numpy(np.asarray(arrays[f"{split}_labels"], dtype=np.int64))
        out.append(ImageTensors(images, labels, list(arrays["class_names"])))
    return out[0], out[1]


def load_tensors(
    source: Any = None,
    *,
    image_column: str | None = None,
    label_column: str | None = None,
    image_size: int | None = None,
    train_split: str = "train",
    test_split: str = "test",
    **kwargs: Any,
) -> tuple[ImageTensors, ImageTensors]:
    """``(train, test)`` :class:`ImageTensors` of a source (see :func:`load_image_dataset`: a Hub
    id, a path, ``"embedded"``, ``"digits"`` or a ``datasets.Dataset`` / ``DatasetDict``).

    The image and label columns are found from the features when not given
    (:func:`detect_columns`); ``ImageTensors.source`` records the source as a run stores it
    (:func:`source_name`) and the columns used. For the embedded dataset the rendered pixels are
    cached on disk as safetensors, so a repeated run starts in about a second; ``image_size`` then
    renders at that size (unless ``image_size`` is also among the embedded options, in which case
    the rendered images are resized).
    """
    if source is None or source == EMBEDDED:
        return _embedded_tensors(image_size, **kwargs)
    if source == DIGITS:
        return digits_tensors(image_size)
    dsd = load_image_dataset(
        source,
        image_column=image_column,
        label_column=label_column,
        train_split=train_split,
        test_split=test_split,
        **kwargs,
    )
    image_column, label_column = detect_columns(dsd["train"], image_column, label_column)
    train = dataset_to_tensors(dsd["train"], image_column, label_column, image_size)
    test = dataset_to_tensors(dsd["test"], image_column, label_column, image_size)
    if train.image_size != test.image_size:
        raise DataError(
            f"train images are {train.image_size} but test images are {test.image_size}; pass "
            "image_size=... (--image-size) to resize both."
        )
    if len(test.class_names) != len(train.class_names):
        names = train.class_names if len(train.class_names) > len(test.class_names) else test.class_names
        train = ImageTensors(train.images, train.labels, list(names))
        test = ImageTensors(test.images, test.labels, list(names))
    described = {"source": source_name(source), "image_column": image_column, "label_column": label_column}
    train.source, test.source = dict(described), dict(described)
    return train, test


def load_arguments(description: dict[str, Any]) -> tuple[str | None, dict[str, Any]]:
    """``(source, kwargs)`` for :func:`load_tensors` that reload the dataset a run report describes.

    ``description`` is the ``dataset`` entry of a collective run's ``report.json`` (``source``,
    ``image_column``, ``label_column``, ``image_size``, ``embedded``). The embedded dataset comes back
    with the generation arguments it was made with; other sources with their column names.
    """
    source = description.get("source")
    kwargs: dict[str, Any] = {}
    if source in EMBEDDED_SOURCES:
        source = None
        kwargs.update(description.get("embedded") or {})
    else:
        kwargs.update(image_column=description.get("image_column"), label_column=description.get("label_column"))
    if description.get("image_size") is not None:
        kwargs["image_size"] = description["image_size"]
    return source, kwargs
