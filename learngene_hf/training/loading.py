"""Data loading of a collective training run: its dataset, batches and model inputs.

:func:`load_data` loads the train / test :class:`~learngene_hf.data.ImageTensors` a
:class:`~learngene_hf.training.config.CollectiveTrainingConfig` names (or takes the ones given) and
describes the dataset for the run's report; :func:`class_arg` reads a class-split option.
:func:`make_loader` is the (seeded) ``DataLoader`` over image tensors and :func:`model_inputs` the
float pixel values a model takes. The trainer is :mod:`learngene_hf.training.trainer`; the
evaluation helpers that use these are in :mod:`learngene_hf.training.evaluation`.
"""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader, TensorDataset

from ..data.sources import load_tensors
from ..data.splits import parse_class_list
from ..data.tensors import normalize
from ..errors import ConfigError
from .config import CollectiveTrainingConfig


def load_data(config: CollectiveTrainingConfig, data):
    """``(train, test, description)``: the run's images (``data`` = ``(train, test)`` when given,
    else loaded from ``config.dataset`` or the embedded generator) and the dataset description
    stored in ``run_config.json`` and the report."""
    if data is not None:
        train, test = data
        description = {
            "source": "in-memory",
            "image_column": None,
            "label_column": None,
            "num_classes": len(train.class_names),
        }
    else:
        embedded = dict(config.embedded)
        image_size = config.image_size
        if config.dataset is None:
            embedded.setdefault("train_per_class", config.train_per_class or 600)
            embedded.setdefault("test_per_class", config.test_per_class or 100)
            # for the embedded data, image_size is the rendering size: one value, from either place
            rendered = embedded.pop("image_size", None)
            if rendered is not None and image_size is not None and int(rendered) != int(image_size):
                raise ConfigError(
                    f"image_size={image_size} and embedded['image_size']={rendered} disagree; give the embedded "
                    "dataset's image size once."
                )
            image_size = image_size if image_size is not None else rendered
        train, test = load_tensors(
            config.dataset,
            image_column=config.image_column,
            label_column=config.label_column,
            image_size=image_size,
            **(embedded if config.dataset is None else {}),
        )
        found = train.source  # an existing local path made absolute, the columns found from the features
        description = {
            "source": found.get("source", config.dataset) if config.dataset is not None else "embedded:procedural",
            "image_column": found.get("image_column", config.image_column),
            "label_column": found.get("label_column", config.label_column),
            "image_size": image_size,
            "embedded": embedded if config.dataset is None else None,
            "num_classes": len(train.class_names),
        }
    description["class_names"] = list(train.class_names)
    description["image_shape"] = list(train.images.shape[1:])
    return train, test, description


def class_arg(value):
    """A class-split option as :func:`~learngene_hf.data.split_classes` takes it ("0-5,8" strings
    become lists; counts, lists and None stay)."""
    return parse_class_list(value) if isinstance(value, str) else value


def make_loader(
    images: torch.Tensor, labels: torch.Tensor, batch_size: int, shuffle: bool, seed: int | None = None
) -> DataLoader:
    """A ``DataLoader`` over ``images`` [N,C,H,W] / ``labels`` [N]; shuffled with a generator seeded
    by ``seed`` when ``shuffle``."""
    generator = torch.Generator().manual_seed(seed) if shuffle else None
    return DataLoader(TensorDataset(images, labels), batch_size=batch_size, shuffle=shuffle, generator=generator)


def model_inputs(images: torch.Tensor) -> torch.Tensor:
    """The float pixel values a model takes: uint8 images normalised, others cast to float."""
    return normalize(images) if images.dtype == torch.uint8 else images.float()
