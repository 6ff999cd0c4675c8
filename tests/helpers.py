"""Builders shared by several test files: the small embedded dataset, its class split, a tiny
learngene whose task stream names them, and two synthetic image sets that a few epochs can learn
(import with ``from helpers import ...``; pytest puts this folder on ``sys.path``)."""

from __future__ import annotations

from typing import Any, Sequence

import torch

from learngene_hf.artifact.learngene import Learngene
from learngene_hf.data import ImageTensors
from learngene_hf.models.collective import CollectiveConfig, CollectiveModel

#: A 10-class embedded dataset of 16x16 images, small enough for every test.
EMBEDDED = {"num_classes": 10, "train_per_class": 12, "test_per_class": 2, "image_size": 16}
#: Its class split: 5 base, 2 open-world and 3 novel classes.
SPLIT = {"base": [0, 1, 2, 3, 4], "open_world": [5, 6], "novel": [7, 8, 9]}


def tiny_learngene(
    layers: Sequence[int] = (2, 3),
    *,
    model: CollectiveModel | None = None,
    embedded: dict[str, Any] = EMBEDDED,
    perturb_bn: bool = False,
) -> Learngene:
    """A learngene of ``layers`` of ``model`` (default: a fresh "tiny" collective model with one
    3-way task, built under seed 0), with a task stream on the ``embedded`` dataset and SPLIT.
    ``perturb_bn`` draws the default model's BatchNorm running means from U(-1, 1), so that a
    test can tell inherited statistics from fresh ones."""
    if model is None:
        torch.manual_seed(0)
        model = CollectiveModel(CollectiveConfig(preset="tiny", task_num_labels=[3]))
        if perturb_bn:
            for block in model.blocks:
                block.bn.running_mean.uniform_(-1, 1)
    stream = {
        "dataset": {"source": "embedded:procedural", "embedded": dict(embedded), "num_classes": 10},
        "split": dict(SPLIT),
        "num_tasks": 1,
        "ways": 3,
        "classes": [0, 1, 2],
    }
    return Learngene.from_collective(
        model, list(layers), task_stream=stream, preprocessing={"image_size": 16, "mean": [0.5] * 3, "std": [0.5] * 3}
    )


def color_data(n_classes: int = 12, per: int = 24, test: int = 10, size: int = 16) -> tuple[ImageTensors, ImageTensors]:
    """(train, test) uint8 images, one flat random colour per class plus noise: ``per`` / ``test``
    images per class of ``size`` x ``size`` (seed 0)."""
    g = torch.Generator().manual_seed(0)
    colors = torch.rand(n_classes, 3, 1, 1, generator=g) * 200

    def make(k: int) -> ImageTensors:
        labels = torch.arange(n_classes).repeat_interleave(k)
        images = colors[labels] + torch.rand(len(labels), 3, size, size, generator=g) * 55
        return ImageTensors(images.clamp(0, 255).to(torch.uint8), labels, [f"c{i}" for i in range(n_classes)])

    return make(per), make(test)


def striped_data(
    n_classes: int = 15, per: int = 40, test: int = 20, size: int = 16
) -> tuple[ImageTensors, ImageTensors]:
    """(train, test) uint8 images of horizontal stripes, a colour and a stripe frequency per class
    (random phase, plus noise): a task stream on which forgetting shows (seed 0)."""
    g = torch.Generator().manual_seed(0)
    colors = torch.rand(n_classes, 3, 1, 1, generator=g)
    freq = torch.randint(1, 4, (n_classes,), generator=g).float()

    def make(k: int) -> ImageTensors:
        labels = torch.arange(n_classes).repeat_interleave(k)
        rows = torch.arange(size).float().view(1, 1, size, 1)
        phase = torch.rand(len(labels), 1, 1, 1, generator=g) * 6
        stripes = (torch.sin(rows * freq[labels].view(-1, 1, 1, 1) + phase) > 0).float()
        images = colors[labels] * 220 + stripes * 30 + torch.rand(len(labels), 3, size, size, generator=g) * 30
        return ImageTensors(
            images.clamp(0, 255).to(torch.uint8).contiguous(), labels, [f"c{i}" for i in range(n_classes)]
        )

    return make(per), make(test)
