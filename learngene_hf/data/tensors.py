"""In-memory image tensors and normalization shared by every training loop."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable

import torch

from ..errors import DataError

#: Per-channel mean and std used everywhere to normalize ``uint8`` images (``x/255``).
IMAGE_MEAN: tuple[float, float, float] = (0.5, 0.5, 0.5)
IMAGE_STD: tuple[float, float, float] = (0.5, 0.5, 0.5)


def normalize(images: torch.Tensor) -> torch.Tensor:
    """uint8 images ``[..., 3, H, W]`` -> float32 ``(x/255 - IMAGE_MEAN) / IMAGE_STD`` on the same device."""
    if not isinstance(images, torch.Tensor):
        raise DataError(f"normalize expects a torch.Tensor of uint8 images, got {type(images).__name__}.")
    if images.dtype != torch.uint8:
        raise DataError(
            f"normalize expects uint8 images (0..255), got dtype {images.dtype}; normalize the raw "
            "uint8 tensors once (normalizing twice would silently shift the inputs)."
        )
    if images.dim() < 3 or images.shape[-3] != 3:
        raise DataError(f"normalize expects images shaped [..., 3, H, W], got {tuple(images.shape)}.")
    mean = torch.tensor(IMAGE_MEAN, dtype=torch.float32, device=images.device).view(3, 1, 1)
    std = torch.tensor(IMAGE_STD, dtype=torch.float32, device=images.device).view(3, 1, 1)
    return (images.to(torch.float32) / 255.0 - mean) / std


@dataclass
class ImageTensors:
    """A labelled image set held as tensors.

    Attributes:
        images: ``torch.uint8 [N, 3, H, W]``.
        labels: ``torch.int64 [N]``, global class ids (indices into ``class_names``).
        class_names: name of every class id of the source dataset (also of classes absent here).
        source: where the images were loaded from, as :func:`~learngene_hf.data.load_tensors`
            found it: ``source`` (a Hub id, an absolute path or ``"in-memory"``), ``image_column``
            and ``label_column``; empty for images made in memory.
    """

    images: torch.Tensor
    labels: torch.Tensor
    class_names: list[str]
    source: dict = field(default_factory=dict, compare=False, repr=False)
    _by_class: dict[int, torch.Tensor] | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.dim() != 4 or self.images.shape[1] != 3:
            raise DataError(
                f"ImageTensors.images must be uint8 [N, 3, H, W], got {self.images.dtype} {tuple(self.images.shape)}."
            )
        if self.labels.dtype != torch.int64 or self.labels.dim() != 1 or len(self.labels) != len(self.images):
            raise DataError(
                f"ImageTensors.labels must be int64 [N] with N={len(self.images)}, got "
                f"{self.labels.dtype} {tuple(self.labels.shape)}."
            )
        if len(self.labels) and (int(self.labels.min()) < 0 or int(self.labels.max()) >= len(self.class_names)):
            raise DataError(
                f"labels must lie in 0..{len(self.class_names) - 1} (one per class name); got "
                f"{int(self.labels.min())}..{int(self.labels.max())}."
            )

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def num_classes(self) -> int:
        """Number of classes of the source dataset (``len(class_names)``), present or not."""
        return len(self.class_names)

    @property
    def image_size(self) -> tuple[int, int]:
        """``(H, W)`` of the images."""
        return int(self.images.shape[2]), int(self.images.shape[3])

    def id2label(self, classes: Iterable[int] | None = None) -> dict[int, str]:
        """``{i: name}`` for the ``i``-th of ``classes`` (global class ids, default every class):
        the ``id2label`` of a model whose label ``i`` is that class (e.g. a task head or an
        episode's classifier), so that ``pipeline()`` names the classes."""
        chosen = range(self.num_classes) if classes is None else [int(c) for c in classes]
        return {i: str(self.class_names[c]) for i, c in enumerate(chosen)}

    def class_counts(self) -> dict[int, int]:
        """Number of images of every class id that occurs, ``{class_id: count}`` sorted by id."""
        ids, counts = torch.unique(self.labels, return_counts=True)
        return {int(i): int(c) for i, c in zip(ids, counts)}

    def indices_by_class(self) -> dict[int, torch.Tensor]:
        """``{class_id: int64 indices into images}`` in ascending index order (computed once)."""
        if self._by_class is None:
            order = torch.argsort(self.labels, stable=True)
            ids, counts = torch.unique_consecutive(self.labels[order], return_counts=True)
            self._by_class = {int(i): part for i, part in zip(ids, torch.split(order, counts.tolist()))}
        return self._by_class

    def select(self, classes: Iterable[int]) -> "ImageTensors":
        """Only the images of ``classes`` (labels stay global ids; order of the original kept)."""
        wanted = sorted({int(c) for c in classes})
        bad = [c for c in wanted if not 0 <= c < self.num_classes]
        if bad:
            raise DataError(f"class ids {bad} do not exist: this dataset has classes 0..{self.num_classes - 1}.")
        keep = torch.isin(self.labels, torch.tensor(wanted, dtype=torch.int64))
        return ImageTensors(self.images[keep], self.labels[keep], list(self.class_names))
