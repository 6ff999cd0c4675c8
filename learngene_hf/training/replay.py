"""A replay memory for continual learning: a fixed number of exemplars per seen class.

After each task, :meth:`ReplayMemory.add_task` keeps ``per_class`` training images of every class
of that task, chosen at random or by herding (iCaRL, Rebuffi et al. 2017: greedily pick the
images whose running mean embedding stays closest to the class mean). While later tasks train,
:meth:`ReplayMemory.sample` draws a batch of stored images with their task id and local label,
and the trainer adds their loss through each image's own (frozen) task head - experience replay
(Chaudhry et al. 2019) for a multi-head model.

The memory is plain tensors (images in their stored dtype, usually uint8) and round-trips through
:meth:`state_tensors` / :meth:`load_state_tensors`, so a checkpoint holds it and a resumed run
replays exactly the same images. The selection names, :data:`REPLAY_SELECTIONS`, live in the light
:mod:`learngene_hf.training.config`; the trainer's replay loss is
:func:`learngene_hf.training.trainer.replay_loss`.
"""

from __future__ import annotations

import torch

from ..errors import ConfigError, DataError
from .config import REPLAY_SELECTIONS


def herding(features: torch.Tensor, count: int) -> torch.Tensor:
    """Indices of ``count`` rows of ``features`` [N, D] picked by iCaRL herding (in pick order).

    Features are L2-normalised; each step adds the row that brings the mean of the picked rows
    closest to the mean of all rows.
    """
    feats = torch.nn.functional.normalize(features.detach().double(), dim=1)
    target = feats.mean(0)
    count = min(int(count), len(feats))
    picked: list[int] = []
    running = torch.zeros_like(target)
    available = torch.ones(len(feats), dtype=torch.bool)
    for k in range(1, count + 1):
        candidate = (running.unsqueeze(0) + feats) / k
        dist = (candidate - target).square().sum(1)
        dist[~available] = float("inf")
        index = int(dist.argmin())
        picked.append(index)
        available[index] = False
        running += feats[index]
    return torch.tensor(picked, dtype=torch.int64)


class ReplayMemory:
    """Exemplars of every class seen so far, ``per_class`` of each (fewer if a class has fewer).

    Attributes (all of length N, the number of stored images):
        images: [N, C, H, W] stored images; labels: [N] local label within their task;
        tasks: [N] the task id whose head classifies them; classes: [N] global class ids.

    Args:
        per_class: exemplars kept per class and task (> 0).
        selection: "random" or "herding" (needs features in :meth:`add_task`).
    """

    def __init__(self, per_class: int, selection: str = "herding"):
        if not isinstance(per_class, int) or per_class <= 0:
            raise ConfigError(f"replay per_class must be a positive integer, got {per_class!r}.")
        if selection not in REPLAY_SELECTIONS:
            raise ConfigError(f"replay selection must be one of {REPLAY_SELECTIONS}, got {selection!r}.")
        self.per_class = per_class
        self.selection = selection
        self.images: torch.Tensor | None = None
        self.labels = torch.zeros(0, dtype=torch.int64)
        self.tasks = torch.zeros(0, dtype=torch.int64)
        self.classes = torch.zeros(0, dtype=torch.int64)

    def __len__(self) -> int:
        return int(self.labels.numel())

    def add_task(
        self,
        task_id: int,
        images: torch.Tensor,
        labels: torch.Tensor,
        classes: list[int],
        features: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> None:
        """Store ``per_class`` exemplars of each local label of task ``task_id``.

        Args:
            images: [N, C, H, W] the task's training images; labels: [N] local ids.
            classes: global class id of each local id.
            features: [N, D] embeddings of ``images`` (required for herding).
            generator: makes the random choice reproducible.
        """
        if len(images) != len(labels):
            raise DataError(f"add_task got {len(images)} images but {len(labels)} labels.")
        if self.selection == "herding" and (features is None or len(features) != len(images)):
            raise DataError("Herding selection needs the embeddings of the task's images (features [N, D]).")
        keep = []
        for local in labels.unique(sorted=True).tolist():
            rows = torch.nonzero(labels == local).flatten()
            if self.selection == "herding":
                keep.append(rows[herding(features[rows], self.per_class)])
            else:
                keep.append(rows[torch.randperm(len(rows), generator=generator)[: self.per_class]])
        index = torch.cat(keep)
        chosen = images[index].detach().cpu().clone()
        local = labels[index].detach().cpu().long()
        self.images = chosen if self.images is None else torch.cat([self.images, chosen])
        self.labels = torch.cat([self.labels, local])
        self.tasks = torch.cat([self.tasks, torch.full_like(local, int(task_id))])
        self.classes = torch.cat([self.classes, torch.tensor(classes, dtype=torch.int64)[local]])

    def sample(self, count: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``count`` stored (images, local labels, task ids), drawn uniformly with replacement."""
        if not len(self):
            raise DataError("The replay memory is empty: sample only after a task was added.")
        index = torch.randint(len(self), (int(count),), generator=generator)
        return self.images[index], self.labels[index], self.tasks[index]

    # ------------------------------------------------------------------ checkpointing
    def state_tensors(self) -> dict[str, torch.Tensor]:
        """Flat tensors for safetensors (empty when nothing is stored)."""
        if self.images is None:
            return {}
        return {
            "replay/images": self.images.contiguous(),
            "replay/labels": self.labels.contiguous(),
            "replay/tasks": self.tasks.contiguous(),
            "replay/classes": self.classes.contiguous(),
        }

    def load_state_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        """Inverse of :meth:`state_tensors`."""
        if "replay/images" not in tensors:
            return
        self.images = tensors["replay/images"]
        self.labels = tensors["replay/labels"].long()
        self.tasks = tensors["replay/tasks"].long()
        self.classes = tensors["replay/classes"].long()
