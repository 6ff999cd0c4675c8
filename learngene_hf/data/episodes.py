"""Seeded task streams (collective model) and N-way K-shot episodes (individual models)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..errors import ConfigError, DataError
from .splits import check_ways
from .tensors import ImageTensors


def _positive(name: str, value: Any, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ConfigError(f"{name}={value!r} must be an integer >= {minimum}.")
    return int(value)


def _check_counts(data: ImageTensors, classes: list[int], needed: int, what: str, split: str = "") -> None:
    """DataError naming every class of ``classes`` with fewer than ``needed`` images in ``data``."""
    counts = data.class_counts()
    short = [(c, counts.get(c, 0)) for c in classes if counts.get(c, 0) < needed]
    if short:

        def name(c: int) -> str:
            return f"class {c} ({data.class_names[c]!r})" if 0 <= c < data.num_classes else f"class {c}"

        listed = "; ".join(f"{name(c)} has {n}" for c, n in short[:10])
        more = f" (and {len(short) - 10} more)" if len(short) > 10 else ""
        where = f" in the {split} split" if split else ""
        raise DataError(
            f"{what} needs {needed} images per class{where}, but {listed}{more}. Lower the "
            "per-class numbers (shots/queries/images per class) or leave those classes out of "
            "the split."
        )


@dataclass(eq=False)
class Task:
    """One task of the stream: ``ways`` classes with their train and test images.

    ``train_labels`` / ``test_labels`` are local ids ``0..ways-1`` in the order of ``classes``
    (global ids). Images are ``uint8 [n, 3, H, W]``, gathered from the source tensors on access
    (a task stores only indices, so a 50-task stream costs no extra memory).
    """

    task_id: int
    classes: list[int]
    train_indices: torch.Tensor
    test_indices: torch.Tensor
    _train: ImageTensors
    _test: ImageTensors

    @property
    def ways(self) -> int:
        return len(self.classes)

    @property
    def id2label(self) -> dict[int, str]:
        """``{local id: class name}`` of the task's classes (the ``id2label`` of its head)."""
        return self._train.id2label(self.classes)

    def _local(self, data: ImageTensors, idx: torch.Tensor) -> torch.Tensor:
        lookup = torch.full((data.num_classes,), -1, dtype=torch.int64)
        lookup[torch.tensor(self.classes, dtype=torch.int64)] = torch.arange(self.ways)
        return lookup[data.labels[idx]]

    @property
    def train_images(self) -> torch.Tensor:
        """uint8 ``[ways * train_per_class, 3, H, W]``."""
        return self._train.images[self.train_indices]

    @property
    def train_labels(self) -> torch.Tensor:
        """int64 ``[ways * train_per_class]``, local ids."""
        return self._local(self._train, self.train_indices)

    @property
    def test_images(self) -> torch.Tensor:
        """uint8 ``[ways * test_per_class, 3, H, W]``."""
        return self._test.images[self.test_indices]

    @property
    def test_labels(self) -> torch.Tensor:
        """int64 ``[ways * test_per_class]``, local ids."""
        return self._local(self._test, self.test_indices)

    @property
    def class_names(self) -> list[str]:
        return [self._train.class_names[c] for c in self.classes]

    def to_dict(self) -> dict[str, Any]:
        """Record of the task (JSON-ready): id, classes, class names and image counts."""
        return {
            "task_id": self.task_id,
            "classes": list(self.classes),
            "class_names": self.class_names,
            "num_train": int(len(self.train_indices)),
            "num_test": int(len(self.test_indices)),
        }

    def __repr__(self) -> str:
        return (
            f"Task(task_id={self.task_id}, classes={self.classes}, train={len(self.train_indices)}, "
            f"test={len(self.test_indices)})"
        )


def _draw_task_classes(classes: list[int], num_tasks: int, ways: int, rng: np.random.Generator) -> list[list[int]]:
    """Walk through seeded permutations of ``classes``: every class is used before any repeats,
    and the classes within one task are distinct."""
    out: list[list[int]] = []
    pool: list[int] = []
    for _ in range(num_tasks):
        task: list[int] = []
        while len(task) < ways:
            if not pool:
                pool = [classes[i] for i in rng.permutation(len(classes))]
            # take the first pool class not already in this task
            for j, c in enumerate(pool):
                if c not in task:
                    task.append(pool.pop(j))
                    break
            else:  # every remaining pool class is in the task already: start a fresh permutation
                pool = [classes[i] for i in rng.permutation(len(classes))] + pool
        out.append(task)
    return out


def _subsample(by_class: dict[int, torch.Tensor], c: int, count: int | None, rng: np.random.Generator) -> torch.Tensor:
    idx = by_class.get(c, torch.zeros(0, dtype=torch.int64))
    if count is None or count >= len(idx):
        return idx
    pick = np.sort(rng.choice(len(idx), size=count, replace=False))
    return idx[torch.from_numpy(pick)]


def make_task_stream(
    train: ImageTensors,
    test: ImageTensors,
    classes: list[int],
    num_tasks: int,
    ways: int = 5,
    seed: int = 0,
    train_per_class: int | None = None,
    test_per_class: int | None = None,
) -> list[Task]:
    """A seeded sequence of ``num_tasks`` ``ways``-way tasks drawn from ``classes``.

    Every class is used once before any class repeats (classes repeat across tasks when
    ``num_tasks * ways > len(classes)``); a task's classes are distinct. ``train_per_class`` /
    ``test_per_class`` subsample each class's images (seeded per task); ``None`` keeps all.
    """
    classes = [int(c) for c in classes]
    check_ways(classes, ways, "base" if classes else "the given")
    num_tasks = _positive("num_tasks", num_tasks)
    if train_per_class is not None:
        _positive("train_per_class", train_per_class)
    if test_per_class is not None:
        _positive("test_per_class", test_per_class)
    if len(set(classes)) != len(classes):
        raise ConfigError(f"the class list {classes} has duplicates; list every class once.")
    _check_counts(train, classes, train_per_class or 1, "the task stream", "train")
    _check_counts(test, classes, test_per_class or 1, "the task stream", "test")
    task_classes = _draw_task_classes(classes, num_tasks, ways, np.random.default_rng([seed, 4242]))
    train_by, test_by = train.indices_by_class(), test.indices_by_class()
    tasks = []
    for t, cls in enumerate(task_classes):
        rng = np.random.default_rng([seed, t, 4243])
        tr = torch.cat([_subsample(train_by, c, train_per_class, rng) for c in cls])
        te = torch.cat([_subsample(test_by, c, test_per_class, rng) for c in cls])
        tasks.append(Task(t, cls, tr, te, train, test))
    return tasks


@dataclass(eq=False)
class Episode:
    """One N-way K-shot episode.

    ``support_images`` uint8 ``[ways*shots, 3, H, W]`` with ``support_labels`` int64 ``[ways*shots]``
    (local ids ``0..ways-1`` in the order of ``classes``, global ids); ``query_images``
    ``[ways*queries, 3, H, W]`` and ``query_labels``. ``support_indices`` / ``query_indices`` are the
    rows of the source :class:`ImageTensors` (disjoint), for records and identity checks.
    """

    index: int
    seed: int
    classes: list[int]
    support_images: torch.Tensor
    support_labels: torch.Tensor
    query_images: torch.Tensor
    query_labels: torch.Tensor
    support_indices: torch.Tensor
    query_indices: torch.Tensor

    @property
    def ways(self) -> int:
        return len(self.classes)

    @property
    def id2label(self) -> dict[int, str]:
        """``{local id: class name}`` of the task's classes (the ``id2label`` of its head)."""
        return self._train.id2label(self.classes)

    def to_dict(self) -> dict[str, Any]:
        """Record of the episode (JSON-ready): index, seed, classes and the rows used."""
        return {
            "index": self.index,
            "seed": self.seed,
            "classes": list(self.classes),
            "support_indices": self.support_indices.tolist(),
            "query_indices": self.query_indices.tolist(),
        }


def _validate_episode_args(
    data: ImageTensors, classes: list[int], ways: int, shots: int, queries: int, role: str = "novel"
) -> list[int]:
    classes = sorted(int(c) for c in classes)
    if len(set(classes)) != len(classes):
        raise ConfigError(f"the class list {classes} has duplicates; list every class once.")
    check_ways(classes, ways, role if classes else "the given")
    _positive("shots", shots)
    _positive("queries", queries, 0)
    _check_counts(data, classes, shots + queries, f"a {ways}-way {shots}-shot episode with {queries} queries")
    return classes


def _build_episode(
    data: ImageTensors, classes: list[int], index: int, ways: int, shots: int, queries: int, seed: int
) -> Episode:
    rng = np.random.default_rng([seed, index, 9973])
    chosen = sorted(classes[i] for i in rng.choice(len(classes), size=ways, replace=False))
    by_class = data.indices_by_class()
    support, query = [], []
    for c in chosen:
        idx = by_class[c]
        pick = torch.from_numpy(rng.choice(len(idx), size=shots + queries, replace=False))
        support.append(idx[pick[:shots]])
        query.append(idx[pick[shots:]])
    s_idx, q_idx = torch.cat(support), torch.cat(query)
    return Episode(
        index=index,
        seed=seed,
        classes=chosen,
        support_images=data.images[s_idx],
        support_labels=torch.arange(ways).repeat_interleave(shots),
        query_images=data.images[q_idx],
        query_labels=torch.arange(ways).repeat_interleave(queries),
        support_indices=s_idx,
        query_indices=q_idx,
    )


def episode(
    data: ImageTensors, classes: list[int], index: int, ways: int = 5, shots: int = 5, queries: int = 15, seed: int = 0
) -> Episode:
    """Episode number ``index``: depends only on ``(data, sorted(classes), ways, shots, queries, seed, index)``.

    Raises DataError naming any class of ``classes`` with fewer than ``shots + queries`` images,
    and ConfigError when ``ways`` exceeds the number of classes.
    """
    classes = _validate_episode_args(data, classes, ways, shots, queries)
    return _build_episode(data, classes, _positive("index", index, 0), ways, shots, queries, seed)


def sample_episodes(
    data: ImageTensors,
    classes: list[int],
    num_episodes: int,
    ways: int = 5,
    shots: int = 5,
    queries: int = 15,
    seed: int = 0,
    *,
    role: str = "novel",
) -> list[Episode]:
    """Episodes ``0..num_episodes-1`` (see :func:`episode`); identical for every method compared.

    Episode ``i`` depends only on ``(seed, i)`` (and the data and arguments), so spreading the
    indices over processes gives the same episodes as one process. ``role`` names the classes in
    error messages ("novel", "open_world").
    """
    classes = _validate_episode_args(data, classes, ways, shots, queries, role)
    return [
        _build_episode(data, classes, i, ways, shots, queries, seed)
        for i in range(_positive("num_episodes", num_episodes))
    ]
