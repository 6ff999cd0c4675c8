"""Collective training: a :class:`~learngene_hf.CollectiveModel` learns a stream of tasks with
``accelerate``, grows on a schedule, optionally consolidates with EWC, records its gradients,
scores the open world before every task, checkpoints after every task and resumes.

Entry points: :func:`train_collective` and :func:`load_run`. A run folder holds::

    model/                 save_pretrained of the final collective model
    gradient_record.json   the GradientRecord
    heatmap.png            layers x tasks heat map of the record
    report.json            class split, task stream, accuracies, open-world AUROC, images/s, dataset
    report.md              a short human-readable summary
    run_config.json        the training config, class split and dataset description
    open_world.safetensors class means and shared scatter of the embedding (Mahalanobis score,
                           gaussians/*) and the bank of normalised training embeddings (knn
                           score, knn/bank [M,D], knn/components [M], knn/per_class)
    checkpoint/            the state after the last finished task (used by resume): model/,
                           state.json, ewc.safetensors (Fisher and anchors, when EWC is on),
                           replay.safetensors (the replay memory, when on) and
                           open_world.safetensors

Determinism: every task starts by re-seeding all generators from ``(seed, task)`` and builds a fresh
optimizer (it has a new head anyway), so a run stopped after any task and resumed ends with the
same weights and record as an uninterrupted run.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import shutil
import time
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from .collective import COLLECTIVE_PRESETS, CollectiveConfig, CollectiveModel
from .vit import VIT_PRESETS, ViTCollectiveConfig, ViTCollectiveModel
from .errors import ArtifactError, ConfigError, DataError
from .ewc import EWC, sgd_max_curvature
from .io import follow_umask, read_json, write_json_atomic, write_text_atomic
from .logs import get_logger
from .openworld import OPEN_WORLD_SCORES, ClassGaussians, FeatureBank, auroc, unknown_scores
from .record import DEFAULT_THRESHOLDS, GradientRecord, GradientRecorder
from .replay import REPLAY_SELECTIONS, ReplayMemory

logger = get_logger(__name__)

RUN_FORMAT = "learngene-hf/collective-run"
RUN_VERSION = 1

#: Defaults per model preset used by :meth:`CollectiveTrainingConfig.for_preset` and the example.
#: "paper" is the paper's setting (50 five-way tasks, all 600 images per class, lr 1e-3);
#: "small" takes about 15 minutes on 2 CPU cores (replay included); "tiny" is for tests.
PRESET_TRAINING_DEFAULTS: dict[str, dict[str, Any]] = {
    "paper": {"num_tasks": 50, "epochs_per_task": 10, "lr": 1e-3, "train_per_class": None, "test_per_class": None},
    # replay 20/class: mean forgetting 0.57 -> 0.01 on this stream for 1.23x the CPU training time
    "small": {"num_tasks": 15, "epochs_per_task": 6, "lr": 0.03, "train_per_class": 300, "test_per_class": 40,
              "replay_per_class": 20},
    "tiny": {"num_tasks": 3, "epochs_per_task": 1, "lr": 0.05, "train_per_class": 20, "test_per_class": 10},
    # ViT collective models (linear expansion, TLEG); growth is not offered for them
    # (AdamW: with SGD at lr 0.01-0.03 a small ViT stayed at chance level on the first tasks)
    "vit-paper": {"num_tasks": 50, "epochs_per_task": 10, "lr": 5e-4, "train_per_class": None, "test_per_class": None,
                  "growth": "none", "optimizer": "adamw", "weight_decay": 0.05},
    "vit-small": {"num_tasks": 15, "epochs_per_task": 6, "lr": 1e-3, "train_per_class": 300, "test_per_class": 40,
                  "growth": "none", "optimizer": "adamw", "weight_decay": 0.05},
    "vit-tiny": {"num_tasks": 3, "epochs_per_task": 1, "lr": 1e-3, "train_per_class": 20, "test_per_class": 10,
                 "growth": "none", "optimizer": "adamw", "weight_decay": 0.05},
}

# fields that may differ between a run and its resumption
_RESUME_FREE_FIELDS = ("stop_after_task", "eval_batch_size")


@dataclass
class CollectiveTrainingConfig:
    """Everything that defines a collective training run (saved as ``run_config.json``).

    Model and stream: ``preset`` (a :data:`~learngene_hf.collective.COLLECTIVE_PRESETS` name),
    ``num_tasks`` tasks of ``ways`` classes drawn from the base classes, ``train_per_class`` /
    ``test_per_class`` images per class (``None``: all), ``epochs_per_task`` epochs each.

    Optimisation (the paper's SGD defaults): ``optimizer`` ("sgd" or "adamw"; the ViT presets use
    AdamW), ``batch_size``, ``lr``, ``momentum`` (SGD only), ``weight_decay``; ``mixed_precision`` "auto" (bf16 on GPUs that support it, else fp16; "no"
    on CPU), or "no" / "fp16" / "bf16".

    Growth: ``growth`` = "paper" (tasks 1..min(growth_until, num_tasks-1) widen one conv layer
    each, round robin over the last ``growth_layers`` layers, which end at ``growth_factor`` times
    their width), "none", or an explicit list of events ``{"task": t, "op": "widen", "layer":
    name-or-index, "width": w}`` / ``{"task": t, "op": "deepen", "layer": name-or-index}``
    applied at the start of task ``t`` (after its head is added).

    Forgetting control (off by default = the paper's setting, in every preset except "small", which
    keeps ``replay_per_class=20``; see the README's "Forgetting and the open world" for what each
    measured):

    - ``bn_freeze_after``: from this task on (0-based; 0 = never) every BatchNorm layer runs
      in eval mode while training, so its running statistics stop following the current task
      (the affine parameters still train);
    - ``ewc_weight`` (0 = off): EWC penalty weight; the Fisher is estimated at the end of each
      task on ``ewc_batches`` batches of its training images and added to a running sum.
      ``ewc_cap`` (on; SGD only) caps each parameter's penalty curvature ``ewc_weight * F`` at
      half of SGD's stability limit, ``(1 + momentum) / lr``, so a long stream cannot make the
      penalty diverge (:mod:`learngene_hf.ewc`);
    - ``replay_per_class`` (0 = off): exemplars kept per class of every finished task
      (``replay_selection`` "herding" or "random"); every training step adds the loss of
      ``replay_batch_size`` stored images through their own (frozen) task heads.

    Record: ``record_gradients``, ``thresholds``, ``heatmap_threshold`` (the threshold drawn).

    Open world: before each task t >= 1, every score of
    :data:`~learngene_hf.openworld.OPEN_WORLD_SCORES` ("energy", "msp", "mahalanobis", "knn")
    rates the new task's test images against up to ``open_world_known`` held-out test images of
    known classes (AUROC per score in the report); ``open_world_method`` is the one reported as
    ``open_world_auroc``. The "knn" score (deep nearest neighbours, Sun et al. 2022) is the
    distance of an image's normalised embedding to its ``open_world_knn_k``-th nearest neighbour
    among ``open_world_bank_per_class`` normalised training embeddings kept per learnt (task,
    class) (:class:`~learngene_hf.openworld.FeatureBank`). k defaults to 5 because the bank is
    small: the paper's k = 50 over CIFAR-10's 50,000 training images is 0.1% of its bank, about 4
    of a 75-class x 50 bank, and k must stay well below ``open_world_bank_per_class`` so that
    the k-th neighbour of a known image still lies in its own class. ``open_world_from_replay``
    (needs replay): after every task the Mahalanobis class means and scatter and the knn bank
    are recomputed from the replay exemplars through the current model, instead of being kept
    from the end of each class's own task (where the backbone has since moved).

    Data: ``dataset`` (None = the embedded procedural dataset, else anything
    ``learngene_hf.data.load_tensors`` accepts), ``image_column``, ``label_column``,
    ``image_size``, ``embedded`` (extra keyword arguments for the embedded generator),
    the class split (``split_seed`` and ``base`` / ``open_world`` / ``novel``: counts, class
    lists or "0-5,8" strings; None = the 64/16/20 proportions).

    ``stop_after_task``: stop (after checkpointing) once this many tasks are finished; for tests
    and time budgets. Running again with resume continues the stream.
    """

    preset: str = "paper"
    num_tasks: int = 50
    ways: int = 5
    epochs_per_task: int = 10
    batch_size: int = 64
    lr: float = 1e-3
    momentum: float = 0.9
    weight_decay: float = 5e-4
    optimizer: str = "sgd"
    train_per_class: int | None = None
    test_per_class: int | None = None
    growth: str | list = "paper"
    growth_until: int = 20
    growth_layers: int = 3
    growth_factor: float = 2.0
    ewc_weight: float = 0.0
    ewc_batches: int = 8
    ewc_cap: bool = True
    bn_freeze_after: int = 0
    replay_per_class: int = 0
    replay_selection: str = "herding"
    replay_batch_size: int = 16
    thresholds: list[float] = field(default_factory=lambda: list(DEFAULT_THRESHOLDS))
    heatmap_threshold: float = 5e-10
    record_gradients: bool = True
    seed: int = 0
    mixed_precision: str = "auto"
    dataset: str | None = None
    image_column: str = "img"
    label_column: str = "fine_label"
    image_size: int | None = None
    embedded: dict = field(default_factory=dict)
    split_seed: int = 0
    base: Any = None
    open_world: Any = None
    novel: Any = None
    open_world_method: str = "energy"
    open_world_known: int = 500
    open_world_from_replay: bool = False
    open_world_knn_k: int = 5
    open_world_bank_per_class: int = 50
    eval_batch_size: int = 256
    stop_after_task: int | None = None

    def __post_init__(self) -> None:
        self.thresholds = [float(t) for t in self.thresholds]
        self.validate()

    @classmethod
    def for_preset(cls, preset: str = "small", **overrides: Any) -> "CollectiveTrainingConfig":
        """A config with the defaults of ``preset`` (see :data:`PRESET_TRAINING_DEFAULTS`);
        ``overrides`` whose value is not None replace them."""
        if preset not in PRESET_TRAINING_DEFAULTS:
            raise ConfigError(f"Unknown preset {preset!r}; choose one of {sorted(PRESET_TRAINING_DEFAULTS)}.")
        values = dict(PRESET_TRAINING_DEFAULTS[preset], preset=preset)
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

    def validate(self) -> None:
        """Raise :class:`ConfigError` naming the first bad field and how to fix it."""
        if self.preset not in COLLECTIVE_PRESETS and self.preset not in VIT_PRESETS:
            raise ConfigError(f"preset={self.preset!r} is unknown; choose one of {sorted(COLLECTIVE_PRESETS) + sorted(VIT_PRESETS)}.")
        if self.preset in VIT_PRESETS and self.growth != "none":
            raise ConfigError(
                f"growth={self.growth!r} is not offered for the ViT preset {self.preset!r} (widen/deepen are VGG operations); "
                "use growth='none' (--growth none)."
            )
        for name in ("num_tasks", "ways", "epochs_per_task", "batch_size", "eval_batch_size", "ewc_batches", "growth_layers"):
            value = getattr(self, name)
            if not isinstance(value, int) or value <= 0:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}.")
        if self.ways < 2:
            raise ConfigError(f"ways must be at least 2 (a task needs two classes), got {self.ways}.")
        for name in ("train_per_class", "test_per_class"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value <= 0):
                raise ConfigError(f"{name} must be a positive integer or None (all images), got {value!r}.")
        if not self.lr > 0:
            raise ConfigError(f"lr must be > 0, got {self.lr}.")
        if not 0 <= self.momentum < 1:
            raise ConfigError(f"momentum must be in [0, 1), got {self.momentum}.")
        if self.weight_decay < 0 or self.ewc_weight < 0:
            raise ConfigError("weight_decay and ewc_weight must be >= 0.")
        if self.growth_factor < 1:
            raise ConfigError(f"growth_factor must be >= 1 (growth never shrinks a layer), got {self.growth_factor}.")
        if not (isinstance(self.growth, list) or self.growth in ("paper", "none")):
            raise ConfigError(f"growth must be 'paper', 'none' or a list of events, got {self.growth!r}.")
        if self.optimizer not in ("sgd", "adamw"):
            raise ConfigError(f"optimizer must be 'sgd' or 'adamw', got {self.optimizer!r}.")
        if self.mixed_precision not in ("auto", "no", "fp16", "bf16"):
            raise ConfigError(f"mixed_precision must be 'auto', 'no', 'fp16' or 'bf16', got {self.mixed_precision!r}.")
        if self.open_world_method not in OPEN_WORLD_SCORES:
            raise ConfigError(f"open_world_method must be one of {OPEN_WORLD_SCORES}, got {self.open_world_method!r}.")
        if not isinstance(self.bn_freeze_after, int) or self.bn_freeze_after < 0:
            raise ConfigError(
                f"bn_freeze_after must be a task index >= 1 (statistics of at least one task are kept) or 0 (never "
                f"freeze), got {self.bn_freeze_after!r}."
            )
        if not isinstance(self.replay_per_class, int) or self.replay_per_class < 0:
            raise ConfigError(f"replay_per_class must be an integer >= 0 (0 = no replay), got {self.replay_per_class!r}.")
        if not isinstance(self.replay_batch_size, int) or self.replay_batch_size <= 0:
            raise ConfigError(f"replay_batch_size must be a positive integer, got {self.replay_batch_size!r}.")
        if self.replay_selection not in REPLAY_SELECTIONS:
            raise ConfigError(f"replay_selection must be one of {REPLAY_SELECTIONS}, got {self.replay_selection!r}.")
        for name in ("open_world_knn_k", "open_world_bank_per_class"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}.")
        first_bank = self.ways * min(self.open_world_bank_per_class, self.train_per_class or self.open_world_bank_per_class)
        if self.open_world_knn_k > first_bank:
            raise ConfigError(
                f"open_world_knn_k={self.open_world_knn_k} is more than the {first_bank} embeddings the knn bank holds after "
                f"the first task (ways x min(open_world_bank_per_class, train_per_class)); lower open_world_knn_k or raise "
                "open_world_bank_per_class."
            )
        if self.open_world_from_replay and not self.replay_per_class:
            raise ConfigError("open_world_from_replay recomputes the class statistics from the replay memory; turn replay "
                              "on (replay_per_class > 0, --replay-per-class) or leave open_world_from_replay off.")
        if self.heatmap_threshold not in self.thresholds:
            raise ConfigError(f"heatmap_threshold {self.heatmap_threshold} must be one of thresholds {self.thresholds}.")
        if self.stop_after_task is not None and (not isinstance(self.stop_after_task, int) or self.stop_after_task <= 0):
            raise ConfigError(f"stop_after_task must be a positive number of tasks or None, got {self.stop_after_task!r}.")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict of every field."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "CollectiveTrainingConfig":
        """Inverse of :meth:`to_dict`; unknown keys raise :class:`ConfigError`."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"Unknown training config keys {unknown}; valid keys are {sorted(known)}.")
        return cls(**data)


@dataclass
class CollectiveRun:
    """A finished (or stopped) collective training run, as returned by :func:`train_collective`
    and :func:`load_run`."""

    model: CollectiveModel
    record: GradientRecord
    report: dict
    split: Any
    config: CollectiveTrainingConfig
    run_dir: Path


# ---------------------------------------------------------------------------------------------- helpers
def resolve_mixed_precision(value: str) -> str:
    """"auto" -> "bf16" on a CUDA GPU that supports it, "fp16" on other CUDA GPUs, else "no"."""
    if value != "auto":
        return value
    if torch.cuda.is_available():
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "no"


def task_seed(seed: int, task: int) -> int:
    """The seed every generator is reset to at the start of ``task``."""
    return (int(seed) * 1_000_003 + 7_919 * (int(task) + 1)) % (2**31 - 1)


def plan_growth(config: CollectiveTrainingConfig, layer_names: Sequence[str], widths: Sequence[int]) -> list[dict]:
    """The growth events of ``config`` for a model with ``layer_names`` / ``widths`` (initial).

    Returns a list of ``{"task", "op", "layer", "width"}`` (``layer`` a stable name or an index).
    """
    if isinstance(config.growth, list):
        events = []
        for event in config.growth:
            if not isinstance(event, dict) or event.get("op") not in ("widen", "deepen") or "layer" not in event:
                raise ConfigError(f"Growth event {event!r} needs 'task', 'op' ('widen'/'deepen') and 'layer'.")
            task = event.get("task")
            if not isinstance(task, int) or not 0 <= task < config.num_tasks:
                raise ConfigError(f"Growth event {event!r}: task must be in 0..{config.num_tasks - 1}.")
            if event["op"] == "widen" and not isinstance(event.get("width"), int):
                raise ConfigError(f"Growth event {event!r}: a widen event needs an integer 'width'.")
            events.append({"task": task, "op": event["op"], "layer": event["layer"], "width": event.get("width")})
        events = sorted(events, key=lambda e: e["task"])
        _check_growth_plan(events, layer_names)
        return events
    if config.growth == "none":
        return []
    count = min(config.growth_layers, len(layer_names))
    targets = list(range(len(layer_names) - count, len(layer_names)))
    tasks = list(range(1, min(config.growth_until, config.num_tasks - 1) + 1))
    assigned: dict[int, list[int]] = {i: [] for i in targets}
    for k, task in enumerate(tasks):
        assigned[targets[k % count]].append(task)
    events = []
    for index, layer_tasks in assigned.items():
        start = widths[index]
        for j, task in enumerate(layer_tasks, start=1):
            width = int(round(start + (config.growth_factor - 1.0) * start * j / len(layer_tasks)))
            events.append({"task": task, "op": "widen", "layer": layer_names[index], "width": width})
    return sorted(events, key=lambda e: e["task"])


def _check_growth_plan(events: Sequence[dict], layer_names: Sequence[str]) -> None:
    """Play ``events`` on the layer names (deepen inserts the name the model will give) and raise
    :class:`ConfigError` for an event naming a layer that will not exist, before any training."""
    names = list(layer_names)
    for event in events:
        layer = event["layer"]
        if isinstance(layer, str):
            if layer not in names:
                raise ConfigError(f"Growth event {event!r} names layer {layer!r}, which the model will not have at task "
                                  f"{event['task']} (its layers then: {names}); fix the growth plan (--growth).")
            index = names.index(layer)
        elif isinstance(layer, int) and not isinstance(layer, bool) and 0 <= layer < len(names):
            index = layer
        else:
            raise ConfigError(f"Growth event {event!r}: layer must be a name in {names} or an index in 0..{len(names) - 1} "
                              f"at task {event['task']}; fix the growth plan (--growth).")
        if event["op"] == "deepen":
            used = {int(n[4:]) for n in names if n.startswith("conv") and n[4:].isdigit()}
            names.insert(index + 1, f"conv{max(used, default=-1) + 1}")


def new_collective_model(preset: str, image_size: int):
    """A fresh collective model of ``preset``: a VGG-BN :class:`CollectiveModel` or, for a
    :data:`~learngene_hf.vit.VIT_PRESETS` name, a linear-expansion :class:`ViTCollectiveModel`."""
    if preset in VIT_PRESETS:
        return ViTCollectiveModel(ViTCollectiveConfig(preset=preset, image_size=image_size))
    return CollectiveModel(CollectiveConfig(preset=preset, image_size=image_size))


def _layer_index(model: CollectiveModel, layer: int | str) -> int:
    if isinstance(layer, str):
        if layer not in model.config.layer_names:
            raise ConfigError(f"Growth names layer {layer!r}, which the model does not have ({model.config.layer_names}).")
        return model.config.layer_names.index(layer)
    return layer


def apply_growth(model: CollectiveModel, events: Sequence[dict], task: int, generator: torch.Generator) -> list[dict]:
    """Apply the events of ``task`` to ``model``; returns the growth-log entries they produced."""
    before = len(model.config.growth_log)
    for event in events:
        if event["task"] != task:
            continue
        index = _layer_index(model, event["layer"])
        if event["op"] == "widen":
            if event["width"] > model.config.widths[index]:
                model.widen(index, event["width"], generator=generator)
        else:
            model.deepen(index)
    return [dict(e) for e in model.config.growth_log[before:]]


def _load_data(config: CollectiveTrainingConfig, data):
    from . import data as data_module

    if data is not None:
        train, test = data
        description = {"source": "in-memory", "image_column": None, "label_column": None, "num_classes": len(train.class_names)}
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
        train, test = data_module.load_tensors(
            config.dataset,
            image_column=config.image_column,
            label_column=config.label_column,
            image_size=image_size,
            **(embedded if config.dataset is None else {}),
        )
        description = {
            "source": config.dataset if config.dataset is not None else "embedded:procedural",
            "image_column": config.image_column,
            "label_column": config.label_column,
            "image_size": image_size,
            "embedded": embedded if config.dataset is None else None,
            "num_classes": len(train.class_names),
        }
    description["class_names"] = list(train.class_names)
    description["image_shape"] = list(train.images.shape[1:])
    return train, test, description


def _class_arg(value):
    from . import data as data_module

    return data_module.parse_class_list(value) if isinstance(value, str) else value


def _batches(images: torch.Tensor, labels: torch.Tensor, batch_size: int, shuffle: bool, seed: int | None = None) -> DataLoader:
    generator = torch.Generator().manual_seed(seed) if shuffle else None
    return DataLoader(TensorDataset(images, labels), batch_size=batch_size, shuffle=shuffle, generator=generator)


def _inputs(images: torch.Tensor) -> torch.Tensor:
    from .data import normalize

    return normalize(images) if images.dtype == torch.uint8 else images.float()


@torch.no_grad()
def _gathered(accelerator, model: CollectiveModel, images, labels, batch_size: int, fn) -> tuple[torch.Tensor, torch.Tensor]:
    loader = accelerator.prepare(_batches(images, labels, batch_size, shuffle=False))
    outputs, targets = [], []
    for x, y in loader:
        out = fn(model, _inputs(x))
        out, y = accelerator.gather_for_metrics((out.contiguous(), y.contiguous()))
        outputs.append(out.cpu())
        targets.append(y.cpu())
    return torch.cat(outputs), torch.cat(targets)


def evaluate_task(accelerator, model: CollectiveModel, images, labels, task_id: int, batch_size: int = 256) -> float:
    """Accuracy of head ``task_id`` on ``images`` [N,3,H,W] / ``labels`` [N] (local ids), gathered
    across processes."""
    was_training = model.training
    model.eval()
    try:
        preds, targets = _gathered(
            accelerator, model, images, labels, batch_size, lambda m, x: m(pixel_values=x, task_id=task_id).logits.argmax(1)
        )
    finally:
        model.train(was_training)
    return float((preds == targets).float().mean())


def open_world_aurocs(
    accelerator,
    model: CollectiveModel,
    unknown_images,
    known_images,
    gaussians: ClassGaussians | None = None,
    batch_size: int = 256,
    bank: FeatureBank | None = None,
    knn_k: int = 5,
) -> dict[str, float]:
    """AUROC of every open-world score (:func:`~learngene_hf.openworld.unknown_scores`)
    separating ``unknown_images`` [N_u,3,H,W] (classes not learnt) from ``known_images``
    [N_k,3,H,W] (held-out images of learnt classes). "mahalanobis" needs ``gaussians``, "knn"
    a non-empty ``bank`` (scored with its ``knn_k``-th nearest neighbour)."""
    was_training = model.training
    model.eval()
    precision = gaussians.precision() if gaussians is not None and len(gaussians) else None
    available = {"mahalanobis": precision is not None, "knn": bank is not None and len(bank) > 0}
    names = [m for m in OPEN_WORLD_SCORES if available.get(m, True)]

    def score(m, x):
        scores = unknown_scores(m, x, gaussians, precision, bank, knn_k)
        return torch.stack([scores[name] for name in names], 1)

    try:
        unknown, _ = _gathered(accelerator, model, unknown_images, torch.zeros(len(unknown_images), dtype=torch.long), batch_size, score)
        known, _ = _gathered(accelerator, model, known_images, torch.zeros(len(known_images), dtype=torch.long), batch_size, score)
    finally:
        model.train(was_training)
    return {name: auroc(unknown[:, i], known[:, i]) for i, name in enumerate(names)}


def open_world_auroc(accelerator, model: CollectiveModel, unknown_images, known_images, method: str = "energy", batch_size: int = 256) -> float:
    """AUROC of the logit score ``method`` ("energy" or "msp") separating ``unknown_images``
    from ``known_images`` (see :func:`open_world_aurocs` for every score at once)."""
    if method not in ("energy", "msp"):
        raise ConfigError(f"open_world_auroc takes 'energy' or 'msp' (got {method!r}); use open_world_aurocs for 'mahalanobis' and 'knn'.")
    return open_world_aurocs(accelerator, model, unknown_images, known_images, None, batch_size)[method]


@torch.no_grad()
def _embeddings(model: CollectiveModel, images: torch.Tensor, batch_size: int, device) -> torch.Tensor:
    """``model.embed`` of ``images`` in eval mode, [N, D] on the CPU (every process computes all)."""
    was_training = model.training
    model.eval()
    try:
        out = [model.embed(_inputs(images[i : i + batch_size].to(device))).float().cpu() for i in range(0, len(images), batch_size)]
    finally:
        model.train(was_training)
    return torch.cat(out)


def freeze_batchnorm_statistics(model: torch.nn.Module) -> int:
    """Put every BatchNorm layer of ``model`` in eval mode (running statistics stop updating, the
    affine parameters still train); returns how many layers it touched. Call after every
    ``model.train()``."""
    layers = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    for layer in layers:
        layer.eval()
    return len(layers)


def replay_loss(model: CollectiveModel, images: torch.Tensor, labels: torch.Tensor, tasks: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of replayed ``images`` [R,C,H,W] (local ``labels`` [R]) through the head
    of their own task (``tasks`` [R]); one pass through ``model.embed``."""
    embedding = model.embed(_inputs(images))
    total = torch.zeros((), device=embedding.device, dtype=torch.float32)
    for task in tasks.unique().tolist():
        rows = tasks == task
        logits = model.heads[task](embedding[rows]).float()
        total = total + nn.functional.cross_entropy(logits, labels[rows], reduction="sum")
    return total / len(labels)


def replay_open_world(
    model: CollectiveModel, replay: ReplayMemory, batch_size: int, device, bank_per_class: int,
    generator: torch.Generator | None = None,
) -> tuple[ClassGaussians, FeatureBank]:
    """The open-world statistics of the replay exemplars embedded by the current ``model``, one
    component per stored (task, local class) pair: :class:`ClassGaussians` (the within-class
    scatter pooled over them) and a :class:`FeatureBank` of up to ``bank_per_class`` exemplars
    per pair (a random subset drawn with ``generator`` when the memory keeps more)."""
    features = _embeddings(model, replay.images, batch_size, device)
    ways = int(replay.labels.max()) + 1
    components = replay.tasks * ways + replay.labels
    gaussians = ClassGaussians()
    gaussians.add(features, components)
    bank = FeatureBank(bank_per_class)
    bank.add(features, components, generator=generator)
    return gaussians, bank


# ---------------------------------------------------------------------------------------------- checkpoint
def _open_world_tensors(gaussians: ClassGaussians, bank: FeatureBank) -> dict[str, torch.Tensor]:
    """What ``open_world.safetensors`` holds: the Gaussians and the knn bank, whichever is filled."""
    tensors = dict(gaussians.state_tensors()) if len(gaussians) else {}
    if len(bank):
        tensors.update(bank.state_tensors())
    return tensors


def _save_checkpoint(
    run_dir: Path, model: CollectiveModel, state: dict, ewc: EWC, replay: ReplayMemory | None, gaussians: ClassGaussians,
    bank: FeatureBank,
) -> None:
    """Write ``checkpoint/`` atomically: a temp folder, then renames (old one removed last)."""
    from safetensors.torch import save_file

    final = run_dir / "checkpoint"
    tmp = run_dir / ".checkpoint.tmp"
    old = run_dir / ".checkpoint.old"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    _save_model(model, tmp / "model")
    tensors = ewc.state_tensors()
    if tensors:
        save_file(tensors, str(tmp / "ewc.safetensors"))
        follow_umask(tmp / "ewc.safetensors")
    if replay is not None and len(replay):
        save_file(replay.state_tensors(), str(tmp / "replay.safetensors"))
        follow_umask(tmp / "replay.safetensors")
    open_world = _open_world_tensors(gaussians, bank)
    if open_world:
        save_file(open_world, str(tmp / "open_world.safetensors"))
        follow_umask(tmp / "open_world.safetensors")
    write_json_atomic(tmp / "state.json", state)
    if old.exists():
        shutil.rmtree(old)
    if final.exists():
        os.replace(final, old)
    os.replace(tmp, final)
    if old.exists():
        shutil.rmtree(old)


def _checkpoint_dir(run_dir: Path) -> Path | None:
    for name in ("checkpoint", ".checkpoint.old"):  # .old survives a kill between the two renames
        folder = run_dir / name
        if (folder / "state.json").is_file():
            return folder
    return None


@contextlib.contextmanager
def _quiet_transformers():
    """Silence transformers' load reports and shard progress bars (restored afterwards)."""
    from transformers import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


def _save_model(model: CollectiveModel, folder: Path) -> None:
    with _quiet_transformers():
        model.save_pretrained(folder)
    follow_umask(folder)  # safetensors writes model.safetensors as 0600


def _load_model(folder: Path) -> CollectiveModel:
    try:
        with _quiet_transformers():
            from transformers import AutoModelForImageClassification

            return AutoModelForImageClassification.from_pretrained(folder, dtype=torch.float32)
    except Exception as err:  # noqa: BLE001 - report which folder is bad
        raise ArtifactError(f"Cannot load the collective model from {folder} ({err}); re-run train_collective.") from err


def _comparable(config_dict: dict) -> dict:
    return {k: v for k, v in config_dict.items() if k not in _RESUME_FREE_FIELDS}


def _config_differences(saved: dict, now: dict) -> str:
    """``"num_tasks: checkpoint 3, now 5; lr: ..."`` for every field that differs ("" when none)."""
    saved, now = _comparable(saved), _comparable(now)
    # a field added by a later version is absent from older checkpoints: it counts as its default
    for f in fields(CollectiveTrainingConfig):
        if f.name in now and f.name not in saved and f.default is not MISSING:
            saved[f.name] = f.default
    missing = object()
    parts = []
    for key in sorted(set(saved) | set(now)):
        before, after = saved.get(key, missing), now.get(key, missing)
        if before != after:
            show = lambda v: "unset" if v is missing else repr(v)  # noqa: E731
            parts.append(f"{key}: checkpoint {show(before)}, now {show(after)}")
    return "; ".join(parts)


# ---------------------------------------------------------------------------------------------- reports
def _summarise(report: dict) -> None:
    tasks = report["tasks"]
    after = [t["accuracy_after"] for t in tasks]
    end = [t["accuracy_end"] for t in tasks if t.get("accuracy_end") is not None]
    aurocs = [t["open_world_auroc"] for t in tasks if t.get("open_world_auroc") is not None]
    report["mean_accuracy_after"] = sum(after) / len(after) if after else None
    report["mean_accuracy_end"] = sum(end) / len(end) if end else None
    report["mean_forgetting"] = (
        sum(t["accuracy_after"] - t["accuracy_end"] for t in tasks) / len(tasks) if end and len(end) == len(tasks) else None
    )
    report["mean_open_world_auroc"] = sum(aurocs) / len(aurocs) if aurocs else None
    per_score: dict[str, list[float]] = {}
    for t in tasks:
        for name, value in (t.get("open_world_aurocs") or {}).items():
            per_score.setdefault(name, []).append(value)
    report["mean_open_world_aurocs"] = {name: sum(v) / len(v) for name, v in per_score.items()}
    seconds = sum(t["train_seconds"] for t in tasks)
    report["images_per_second"] = sum(t["train_images_seen"] for t in tasks) / seconds if seconds > 0 else None


def _fmt(value, digits: int = 3) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def _report_markdown(report: dict) -> str:
    lines = [
        "# Collective training run",
        "",
        f"- Dataset: `{report['dataset']['source']}` ({report['dataset']['num_classes']} classes); "
        f"{report['finished_tasks']}/{report['num_tasks']} tasks of {report['ways']} ways"
        + ("" if report["complete"] else " (stopped early: run again to resume)"),
        f"- Model: preset `{report['preset']}`, final conv widths {report['final_widths']}, "
        f"{report['parameters']:,} parameters, {len(report['growth_log'])} growth events",
        f"- Mean accuracy after learning each task: {_fmt(report['mean_accuracy_after'])}; at the end: "
        f"{_fmt(report['mean_accuracy_end'])} (mean forgetting {_fmt(report['mean_forgetting'])})",
        f"- Mean open-world AUROC ({report['open_world_method']}): {_fmt(report['mean_open_world_auroc'])}"
        + (" (" + ", ".join(f"{k} {_fmt(v)}" for k, v in report.get("mean_open_world_aurocs", {}).items()) + ")"
           if report.get("mean_open_world_aurocs") else ""),
        f"- Forgetting control: {report['forgetting_control']}",
        f"- Training throughput: {_fmt(report['images_per_second'], 1)} images/s on {report['num_processes']} "
        f"process(es), device `{report['device']}`, mixed precision `{report['mixed_precision']}`",
        "",
        "| task | classes | acc. after | acc. end | open-world AUROC | growth |",
        "| ---: | --- | ---: | ---: | ---: | --- |",
    ]
    for t in report["tasks"]:
        growth = ", ".join(f"{g['op']} {g['name']} {g['old_width'] or ''}->{g['new_width']}" for g in t["growth"]) or ""
        lines.append(
            f"| {t['task']} | {t['classes']} | {_fmt(t['accuracy_after'])} | {_fmt(t.get('accuracy_end'))} | "
            f"{_fmt(t.get('open_world_auroc'))} | {growth} |"
        )
    lines += ["", "Heat map of the gradient record: `heatmap.png`.", ""]
    return "\n".join(lines)


def _write_outputs(
    run_dir: Path, model: CollectiveModel, record: GradientRecord, report: dict, config: CollectiveTrainingConfig,
    gaussians: ClassGaussians,
    bank: FeatureBank,
) -> None:
    from safetensors.torch import save_file

    from .plots.heatmap import plot_gradient_heatmap

    tmp = run_dir / ".model.tmp"
    if tmp.exists():
        shutil.rmtree(tmp)
    _save_model(model, tmp)
    if (run_dir / "model").exists():
        shutil.rmtree(run_dir / "model")
    os.replace(tmp, run_dir / "model")
    record.save(run_dir / "gradient_record.json")
    if record.epochs:
        plot_gradient_heatmap(record, run_dir / "heatmap.png", "frac_above", config.heatmap_threshold)
    open_world = _open_world_tensors(gaussians, bank)
    if open_world:
        tmp_file = run_dir / ".open_world.safetensors.tmp"
        save_file(open_world, str(tmp_file))
        follow_umask(tmp_file)
        os.replace(tmp_file, run_dir / "open_world.safetensors")
    write_json_atomic(run_dir / "report.json", report)
    write_text_atomic(run_dir / "report.md", _report_markdown(report))


# ---------------------------------------------------------------------------------------------- training
def train_collective(
    config: CollectiveTrainingConfig,
    output_dir: str | os.PathLike,
    *,
    model: CollectiveModel | None = None,
    data=None,
    accelerator=None,
    resume: bool = True,
    progress: bool = True,
) -> CollectiveRun:
    """Train a collective model on a task stream and write the run folder (see module docstring).

    Args:
        config: the run's :class:`CollectiveTrainingConfig`.
        output_dir: the run folder (created; only the main process writes).
        model: a starting :class:`CollectiveModel` (default: a fresh one of ``config.preset``).
        data: ``(train, test)`` :class:`~learngene_hf.data.ImageTensors` to use instead of loading
            ``config.dataset``.
        accelerator: an ``accelerate.Accelerator`` (default: one with ``config.mixed_precision``).
        resume: continue from ``output_dir/checkpoint`` when it exists (same config required).
        progress: show a tqdm bar per task (main process only).

    Returns:
        A :class:`CollectiveRun` (model in eval mode, on the CPU).
    """
    from accelerate import Accelerator
    from accelerate.utils import set_seed
    from tqdm.auto import tqdm

    from . import data as data_module

    config.validate()
    run_dir = Path(output_dir)
    if accelerator is None:
        accelerator = Accelerator(mixed_precision=resolve_mixed_precision(config.mixed_precision))
    main = accelerator.is_main_process

    train, test, dataset_description = _load_data(config, data)
    split = data_module.split_classes(
        len(train.class_names),
        seed=config.split_seed,
        base=_class_arg(config.base),
        open_world=_class_arg(config.open_world),
        novel=_class_arg(config.novel),
    )
    tasks = data_module.make_task_stream(
        train,
        test,
        list(split.base),
        config.num_tasks,
        ways=config.ways,
        seed=config.seed,
        train_per_class=config.train_per_class,
        test_per_class=config.test_per_class,
    )
    run_config = {
        "format": RUN_FORMAT,
        "version": RUN_VERSION,
        "training": config.to_dict(),
        "class_split": split.to_dict(),
        "dataset": dataset_description,
    }

    # ------------------------------------------------------------------ start or resume
    checkpoint = _checkpoint_dir(run_dir) if resume else None
    cap = sgd_max_curvature(config.lr, config.momentum) if config.ewc_cap and config.optimizer == "sgd" else None
    ewc = EWC(config.ewc_weight, max_curvature=cap)
    replay = ReplayMemory(config.replay_per_class, config.replay_selection) if config.replay_per_class else None
    gaussians = ClassGaussians()
    bank = FeatureBank(config.open_world_bank_per_class)
    if checkpoint is not None:
        fresh_start = "pass resume=False (--no-resume) to start over, or choose another output folder"
        try:
            state = read_json(checkpoint / "state.json")
            saved_config = state["config"]
        except (ArtifactError, KeyError, TypeError) as err:
            raise ArtifactError(f"The checkpoint in {checkpoint} cannot be read ({err}); {fresh_start}.") from err
        differences = _config_differences(saved_config, config.to_dict())
        if differences:
            raise ConfigError(
                f"{run_dir} holds a run with a different config ({differences}); resume it with the same options, "
                f"{fresh_start}."
            )
        try:
            model = _load_model(checkpoint / "model")
            record = GradientRecord.from_dict(state["record"])
            report_tasks = list(state["tasks"])
            events = state["growth_events"]
            start_task = int(state["next_task"])
            if (checkpoint / "ewc.safetensors").is_file():
                from safetensors.torch import load_file

                ewc.load_state_tensors(load_file(str(checkpoint / "ewc.safetensors")))
            if replay is not None and (checkpoint / "replay.safetensors").is_file():
                from safetensors.torch import load_file

                replay.load_state_tensors(load_file(str(checkpoint / "replay.safetensors")))
            if (checkpoint / "open_world.safetensors").is_file():
                from safetensors.torch import load_file

                open_world = load_file(str(checkpoint / "open_world.safetensors"))
                gaussians.load_state_tensors(open_world)
                bank.load_state_tensors(open_world)
        except (ArtifactError, DataError, KeyError, TypeError, ValueError, OSError) as err:
            raise ArtifactError(f"The checkpoint in {checkpoint} is corrupt or incomplete ({err}); {fresh_start}.") from err
        if main:
            logger.info(f"resuming after task {start_task} of {config.num_tasks} (checkpoint in {checkpoint})")
    else:
        set_seed(config.seed)
        if model is None:
            model = new_collective_model(config.preset, int(train.images.shape[-1]))
        if model.config.num_tasks:
            raise ConfigError(
                f"The starting model already has {model.config.num_tasks} task heads; give a model without heads "
                "(train_collective adds one per task)."
            )
        record = GradientRecord(config.thresholds)
        report_tasks = []
        if config.growth != "none" and not hasattr(model, "widen"):
            raise ConfigError(f"{type(model).__name__} cannot grow; train it with growth='none'.")
        events = [] if config.growth == "none" else plan_growth(config, model.config.layer_names, model.config.widths)
        start_task = 0
    if main:
        run_dir.mkdir(parents=True, exist_ok=True)
        write_json_atomic(run_dir / "run_config.json", run_config)
    model.to(accelerator.device)
    model.train()
    recorder = GradientRecorder(model, config.thresholds, record) if config.record_gradients else None
    if recorder is None:
        record.layer_names = list(model.config.layer_names)

    stop = config.num_tasks if config.stop_after_task is None else min(config.num_tasks, config.stop_after_task)
    for t in range(start_task, stop):
        task = tasks[t]
        seed_t = task_seed(config.seed, t)
        set_seed(seed_t)
        entry: dict[str, Any] = {"task": t, "classes": [int(c) for c in task.classes]}

        # open world: how unknown are the new task's images to the model so far?
        entry["open_world_auroc"] = None
        entry["open_world_aurocs"] = None
        if t > 0:
            known = torch.cat([tasks[k].test_images for k in range(t)])
            pick = torch.randperm(len(known), generator=torch.Generator().manual_seed(seed_t))[: config.open_world_known]
            aurocs = open_world_aurocs(accelerator, model, task.test_images, known[pick], gaussians, config.eval_batch_size,
                                       bank, config.open_world_knn_k)
            entry["open_world_aurocs"] = aurocs
            entry["open_world_auroc"] = aurocs.get(config.open_world_method)

        head = model.add_task(len(task.classes))
        entry["growth"] = apply_growth(model, events, t, torch.Generator().manual_seed(seed_t + 1))
        model.to(accelerator.device)
        ewc.sync(model)
        for index, h in enumerate(model.heads):
            h.requires_grad_(index == head)
        if recorder is not None:
            recorder.begin_task(t)
        params = [p for p in model.parameters() if p.requires_grad]
        if config.optimizer == "adamw":
            optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
        else:
            optimizer = torch.optim.SGD(params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)
        loader = _batches(task.train_images, task.train_labels, config.batch_size, shuffle=True, seed=seed_t)
        wrapped, optimizer, loader = accelerator.prepare(model, optimizer, loader)

        bar = tqdm(
            total=config.epochs_per_task * len(loader),
            desc=f"task {t + 1}/{config.num_tasks}",
            disable=not (progress and main),
            leave=False,
        )
        losses, penalties, replayed = [], [], []
        seen = 0
        freeze_bn = config.bn_freeze_after > 0 and t >= config.bn_freeze_after
        replaying = replay is not None and len(replay) > 0
        replay_generator = torch.Generator().manual_seed(seed_t + 4)
        started = time.perf_counter()
        for epoch in range(config.epochs_per_task):
            if freeze_bn:
                freeze_batchnorm_statistics(model)
            loss_sum = torch.zeros((), device=accelerator.device)
            penalty_sum = torch.zeros((), device=accelerator.device)
            replay_sum = torch.zeros((), device=accelerator.device)
            batches = 0
            for x, y in loader:
                out = wrapped(pixel_values=_inputs(x), labels=y, task_id=head)
                loss = out.loss
                if ewc.active:
                    penalty = ewc.penalty(model)
                    penalty_sum += penalty.detach()
                    loss = loss + penalty
                if replaying:
                    rx, ry, rt = replay.sample(config.replay_batch_size, replay_generator)
                    rloss = replay_loss(model, rx.to(accelerator.device), ry.to(accelerator.device), rt.to(accelerator.device))
                    replay_sum += rloss.detach()
                    loss = loss + rloss
                accelerator.backward(loss)
                if recorder is not None:
                    if accelerator.scaler is not None:
                        # fp16: record the true gradients, not the scaled ones (this task's optimizer only:
                        # earlier tasks' optimizers share parameters and would unscale them twice)
                        accelerator.unscale_gradients(optimizer)
                    recorder.step()
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                loss_sum += out.loss.detach().float()
                batches += 1
                seen += int(y.shape[0])
                bar.update(1)
            if recorder is not None:
                recorder.end_epoch(t, epoch)
            mean_loss = float(accelerator.reduce(loss_sum / max(batches, 1), "mean"))
            losses.append(mean_loss)
            penalties.append(float(accelerator.reduce(penalty_sum / max(batches, 1), "mean")))
            replayed.append(float(accelerator.reduce(replay_sum / max(batches, 1), "mean")))
            bar.set_postfix(loss=f"{mean_loss:.3f}")
        seconds = time.perf_counter() - started
        bar.close()
        if recorder is not None:
            recorder.end_task(t)
        entry["epoch_losses"] = losses
        entry["epoch_ewc_penalties"] = penalties
        entry["epoch_replay_losses"] = replayed
        entry["batchnorm_frozen"] = freeze_bn
        entry["train_seconds"] = seconds
        entry["train_images_seen"] = int(accelerator.reduce(torch.tensor(seen, device=accelerator.device), "sum"))
        entry["accuracy_after"] = evaluate_task(accelerator, model, task.test_images, task.test_labels, head, config.eval_batch_size)
        entry["accuracy_end"] = None
        if config.ewc_weight > 0:
            fisher_loader = accelerator.prepare(_batches(task.train_images, task.train_labels, config.batch_size, True, seed_t + 2))
            fisher_batches = ((_inputs(x), y) for i, (x, y) in zip(range(config.ewc_batches), fisher_loader))
            reduce = (lambda v: accelerator.reduce(v, "mean")) if accelerator.num_processes > 1 else None
            ewc.consolidate(model, fisher_batches, head, reduce=reduce)
            entry["ewc_capped_fraction"] = ewc.capped_fraction()
        # what the model remembers of this task: class statistics of its embedding and exemplars
        features = _embeddings(model, task.train_images, config.eval_batch_size, accelerator.device)
        if replay is not None:
            replay.add_task(t, task.train_images, task.train_labels, list(task.classes), features,
                            generator=torch.Generator().manual_seed(seed_t + 3))
        if config.open_world_from_replay:  # validate() ensures replay is on: every class from its exemplars, rebuilt
            gaussians, bank = replay_open_world(model, replay, config.eval_batch_size, accelerator.device,
                                                config.open_world_bank_per_class, torch.Generator().manual_seed(seed_t + 5))
        else:
            gaussians.add(features, task.train_labels)
            bank.add(features, task.train_labels, generator=torch.Generator().manual_seed(seed_t + 5))
        accelerator.free_memory()
        del wrapped, optimizer, loader
        for h in model.heads:
            h.requires_grad_(True)
        report_tasks.append(entry)

        state = {
            "next_task": t + 1,
            "config": config.to_dict(),
            "record": record.to_dict(),
            "tasks": report_tasks,
            "growth_events": events,
        }
        if main:
            _save_checkpoint(run_dir, model, state, ewc, replay, gaussians, bank)
        accelerator.wait_for_everyone()

    # ------------------------------------------------------------------ final evaluation and outputs
    finished = len(report_tasks)
    for t in range(finished):
        report_tasks[t]["accuracy_end"] = evaluate_task(
            accelerator, model, tasks[t].test_images, tasks[t].test_labels, t, config.eval_batch_size
        )
    accelerator.free_memory()
    model.eval()
    report = {
        "format": RUN_FORMAT,
        "version": RUN_VERSION,
        "complete": finished == config.num_tasks,
        "num_tasks": config.num_tasks,
        "finished_tasks": finished,
        "ways": config.ways,
        "preset": config.preset,
        "class_split": split.to_dict(),
        "task_stream": [[int(c) for c in task.classes] for task in tasks],
        "tasks": report_tasks,
        "dataset": dataset_description,
        "open_world_method": config.open_world_method,
        "forgetting_control": {
            "bn_freeze_after": config.bn_freeze_after,
            "ewc_weight": config.ewc_weight,
            "replay_per_class": config.replay_per_class,
            "replay_selection": config.replay_selection if config.replay_per_class else None,
            "replay_batch_size": config.replay_batch_size if config.replay_per_class else None,
            "replay_images": len(replay) if replay is not None else 0,
            "open_world_from_replay": config.open_world_from_replay,
        },
        "open_world_knn": {"k": config.open_world_knn_k, "bank_per_class": config.open_world_bank_per_class,
                           "bank_size": len(bank)},
        "growth_log": [dict(e) for e in model.config.growth_log],
        "final_widths": list(getattr(model.config, "widths", [])),
        "layer_names": list(model.config.layer_names),
        "parameters": sum(p.numel() for p in model.parameters()),
        "num_processes": accelerator.num_processes,
        "device": str(accelerator.device),
        "mixed_precision": str(accelerator.mixed_precision),
    }
    _summarise(report)
    record.layer_names = list(model.config.layer_names)
    model = model.to("cpu")
    if main:
        _write_outputs(run_dir, model, record, report, config, gaussians, bank)
    accelerator.wait_for_everyone()
    return CollectiveRun(model=model, record=record, report=report, split=split, config=config, run_dir=run_dir)


def load_run(run_dir: str | os.PathLike) -> CollectiveRun:
    """Load a run folder written by :func:`train_collective` (model in eval mode).

    A missing or corrupt file raises :class:`ArtifactError` naming it and what to run.
    """
    from .data import ClassSplit

    run_dir = Path(run_dir)
    hint = "run examples/train_collective.py (or train_collective) with this output folder to (re)create it"
    if not run_dir.is_dir():
        raise ArtifactError(f"Run folder {run_dir} does not exist; {hint}.")
    if (run_dir / "learngene_config.json").is_file() and not (run_dir / "run_config.json").exists():
        raise ArtifactError(
            f"{run_dir} is a learngene (it holds learngene_config.json), not a collective run: give the folder that "
            "examples/train_collective.py wrote (e.g. runs/collective). To use this learngene, pass it to "
            f"examples/few_shot.py --learngene {run_dir} or Learngene.from_pretrained."
        )
    for name in ("run_config.json", "report.json", "gradient_record.json", "model"):
        if not (run_dir / name).exists():
            raise ArtifactError(f"{run_dir / name} is missing: the run did not finish writing its outputs; {hint}.")
    try:
        run_config = read_json(run_dir / "run_config.json")
        report = read_json(run_dir / "report.json")
        record = GradientRecord.load(run_dir / "gradient_record.json")
    except ArtifactError as err:
        raise ArtifactError(f"{err} ({hint})") from err
    try:
        config = CollectiveTrainingConfig.from_dict(run_config["training"])
        split = ClassSplit.from_dict(run_config["class_split"])
    except (KeyError, TypeError, ConfigError) as err:
        raise ArtifactError(f"{run_dir / 'run_config.json'} is malformed ({err}); {hint}.") from err
    model = _load_model(run_dir / "model")
    model.eval()
    return CollectiveRun(model=model, record=record, report=report, split=split, config=config, run_dir=run_dir)
