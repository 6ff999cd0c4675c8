"""Data layer of learngene-hf.

* :func:`make_procedural_dataset`: the embedded default dataset (CIFAR-100 schema, rendered from a seed).
* ``"digits"`` (:func:`digits_tensors`, :func:`export_digits`): scikit-learn's real handwritten
  digits, offline, with the class split :data:`DIGITS_SPLIT` (base 0-3, open-world 4-6, novel 7-9).
* :func:`load_image_dataset` / :func:`load_tensors` / :func:`dataset_to_tensors`: any image
  classification dataset that ``datasets`` loads (Hub id, imagefolder, parquet, ``save_to_disk``,
  a ``Dataset`` / ``DatasetDict`` in memory), its image and label columns found from the features
  (:func:`detect_columns`).
* :class:`ClassSplit` / :func:`split_classes`: base / open-world / novel classes (64/16/20 by default).
* :func:`make_task_stream`: the seeded N-way task stream of the collective model.
* :func:`sample_episodes` / :func:`episode`: seeded N-way K-shot episodes for individual models.
"""

from .digits import DIGITS, DIGITS_SPLIT, builtin_split, digits_tensors, export_digits, make_digits_dataset
from .episodes import Episode, Task, episode, make_task_stream, sample_episodes
from .procedural import GENERATOR_VERSION, class_names, default_cache_dir, make_procedural_dataset
from .sources import (
    EMBEDDED_SOURCES,
    IN_MEMORY,
    dataset_to_tensors,
    detect_columns,
    load_arguments,
    load_image_dataset,
    load_tensors,
    source_name,
    validate_columns,
)
from .splits import ClassSplit, add_split_arguments, check_ways, parse_class_list, split_classes, split_from_args
from .tensors import IMAGE_MEAN, IMAGE_STD, ImageTensors, normalize

__all__ = [
    "IMAGE_MEAN",
    "IMAGE_STD",
    "GENERATOR_VERSION",
    "make_procedural_dataset",
    "class_names",
    "default_cache_dir",
    "DIGITS",
    "DIGITS_SPLIT",
    "builtin_split",
    "digits_tensors",
    "export_digits",
    "make_digits_dataset",
    "load_image_dataset",
    "load_tensors",
    "load_arguments",
    "EMBEDDED_SOURCES",
    "IN_MEMORY",
    "dataset_to_tensors",
    "detect_columns",
    "source_name",
    "validate_columns",
    "ImageTensors",
    "normalize",
    "ClassSplit",
    "split_classes",
    "parse_class_list",
    "check_ways",
    "add_split_arguments",
    "split_from_args",
    "Task",
    "make_task_stream",
    "Episode",
    "sample_episodes",
    "episode",
]
