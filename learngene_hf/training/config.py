"""The collective training config and the constants it is checked against (a light module).

:class:`CollectiveTrainingConfig` is everything that defines a collective training run (saved as
``run_config.json``); :data:`PRESET_TRAINING_DEFAULTS` are its defaults per model preset. The names
it validates against are defined here so that the example scripts can build their ``--help``
without importing torch: :data:`OPEN_WORLD_SCORES` (computed by
:func:`learngene_hf.training.openworld.unknown_scores`), :data:`REPLAY_SELECTIONS`
(:class:`learngene_hf.training.replay.ReplayMemory`) and :data:`DEFAULT_THRESHOLDS`
(:class:`learngene_hf.training.record.GradientRecord`); the model preset names come from
:mod:`learngene_hf.models.presets`.

At module level this imports only the standard library, :mod:`learngene_hf.errors` and
:mod:`learngene_hf.models.presets` (:func:`resolve_mixed_precision` imports torch when called).
The trainer that runs the config is :mod:`learngene_hf.training.trainer`.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from ..errors import ConfigError
from ..models.presets import VGG_BN_ARCHS, VIT_PRESETS

RUN_FORMAT = "learngene-hf/collective-run"
RUN_VERSION = 1

#: The open-world scores :func:`~learngene_hf.training.openworld.unknown_scores` computes (all
#: "higher = more unknown").
OPEN_WORLD_SCORES = ("energy", "msp", "maxlogit", "mahalanobis", "knn")

#: Learning-rate schedules within a task (``CollectiveTrainingConfig.lr_schedule``).
LR_SCHEDULES = ("constant", "cosine")

#: Which heads the outlier-exposure loss trains (``CollectiveTrainingConfig.outlier_exposure_heads``).
OUTLIER_EXPOSURE_HEADS = ("current", "all")

#: How :meth:`~learngene_hf.training.replay.ReplayMemory.add_task` picks a class's exemplars.
REPLAY_SELECTIONS = ("random", "herding")

#: Default thresholds of the gradient record: 5e-10 (paper, CIFAR), 1e-6, 1e-4, 5e-4 (paper, ImageNet).
DEFAULT_THRESHOLDS: tuple[float, ...] = (5e-10, 1e-6, 1e-4, 5e-4)

#: Defaults per model preset used by :meth:`CollectiveTrainingConfig.for_preset` and the example.
#: "paper" is the paper's setting (50 five-way tasks, all 600 images per class, lr 1e-3);
#: "small" trains in about 2 minutes on 2 CPU cores (replay included); "tiny" is for tests.
PRESET_TRAINING_DEFAULTS: dict[str, dict[str, Any]] = {
    "paper": {"num_tasks": 50, "epochs_per_task": 10, "lr": 1e-3, "train_per_class": None, "test_per_class": None},
    # replay 20/class: mean forgetting 0.57 -> 0.01 on this stream for 1.23x the CPU training time.
    # 3 cosine epochs on 200 images/class with growth to 1.5x train in 127 s on 2 CPU cores instead
    # of 1091 s for 6 constant-lr epochs on 300 with 2x growth; the learngene's few-shot gain over
    # the strongest inherit-nothing method falls from +30.3 to +19.7 points
    # (benchmarks/results/main_job_levers.md); SMALL_LONG_OVERRIDES brings the long stream back.
    "small": {
        "num_tasks": 15,
        "epochs_per_task": 3,
        "lr": 0.05,
        "lr_schedule": "cosine",
        "warmup_epochs": 0.5,
        "train_per_class": 200,
        "test_per_class": 40,
        "replay_per_class": 20,
        "growth_factor": 1.5,
    },
    "tiny": {"num_tasks": 3, "epochs_per_task": 1, "lr": 0.05, "train_per_class": 20, "test_per_class": 10},
    # ViT collective models (linear expansion, TLEG); growth is not offered for them
    # (AdamW: with SGD at lr 0.01-0.03 a small ViT stayed at chance level on the first tasks)
    "vit-paper": {
        "num_tasks": 50,
        "epochs_per_task": 10,
        "lr": 5e-4,
        "train_per_class": None,
        "test_per_class": None,
        "growth": "none",
        "optimizer": "adamw",
        "weight_decay": 0.05,
    },
    "vit-small": {
        "num_tasks": 15,
        "epochs_per_task": 6,
        "lr": 1e-3,
        "train_per_class": 300,
        "test_per_class": 40,
        "growth": "none",
        "optimizer": "adamw",
        "weight_decay": 0.05,
    },
    "vit-tiny": {
        "num_tasks": 3,
        "epochs_per_task": 1,
        "lr": 1e-3,
        "train_per_class": 20,
        "test_per_class": 10,
        "growth": "none",
        "optimizer": "adamw",
        "weight_decay": 0.05,
    },
}

#: Overrides of the "small" defaults that give the longer stream earlier releases trained (about
#: 8x the CPU time, a stronger learngene): ``CollectiveTrainingConfig.for_preset("small",
#: **SMALL_LONG_OVERRIDES)``, or on the command line ``--epochs-per-task 6 --lr 0.03
#: --lr-schedule constant --warmup-epochs 0 --train-per-class 300 --growth-factor 2``.
SMALL_LONG_OVERRIDES: dict[str, Any] = {
    "epochs_per_task": 6,
    "lr": 0.03,
    "lr_schedule": "constant",
    "warmup_epochs": 0.0,
    "train_per_class": 300,
    "growth_factor": 2.0,
}


@dataclass
class CollectiveTrainingConfig:
    """Everything that defines a collective training run (saved as ``run_config.json``).

    Model and stream: ``preset`` (a :data:`~learngene_hf.models.presets.VGG_BN_ARCHS` or
    :data:`~learngene_hf.models.presets.VIT_PRESETS` name),
    ``num_tasks`` tasks of ``ways`` classes drawn from the base classes, ``train_per_class`` /
    ``test_per_class`` images per class (``None``: all), ``epochs_per_task`` epochs each.

    Optimisation (the paper's SGD defaults): ``optimizer`` ("sgd" or "adamw"; the ViT presets use
    AdamW), ``batch_size``, ``lr``, ``momentum`` (SGD only), ``weight_decay``; ``lr_schedule``
    within every task ("constant", the paper's, or "cosine": decay to 0 at the task's last step)
    after a linear warm-up of ``warmup_epochs`` epochs (:meth:`lr_at`); ``mixed_precision``
    "auto" (bf16 on GPUs that support it, else fp16; "no" on CPU), or "no" / "fp16" / "bf16".

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
      penalty diverge (:mod:`learngene_hf.training.ewc`);
    - ``replay_per_class`` (0 = off): exemplars kept per class of every finished task
      (``replay_selection`` "herding" or "random"); every training step adds the loss of
      ``replay_batch_size`` stored images through their own (frozen) task heads.

    Outlier exposure (Hendrycks et al., ICLR 2019) from what the model keeps (needs replay):
    ``outlier_exposure`` (0 = off) weighs a loss that makes a head unsure (cross-entropy to the
    uniform distribution) on the replayed images of the other tasks; ``outlier_exposure_heads``
    "current" trains only the current task's head so, "all" trains every learnt head (old heads
    then also learn from their own replayed images). No image of an unknown class is used.

    Record: ``record_gradients``, ``thresholds``, ``heatmap_threshold`` (the threshold drawn).

    Open world: before each task t >= 1, every score of :data:`OPEN_WORLD_SCORES` ("energy",
    "msp", "maxlogit", "mahalanobis", "knn") rates the new task's test images against up to
    ``open_world_known`` held-out test images of known classes (AUROC per score in the report);
    ``open_world_method`` is the one reported as ``open_world_auroc``. The "knn" score (deep
    nearest neighbours, Sun et al. 2022) is the distance of an image's normalised embedding to its
    ``open_world_knn_k``-th nearest neighbour among ``open_world_bank_per_class`` normalised
    training embeddings kept per learnt (task, class)
    (:class:`~learngene_hf.training.openworld.FeatureBank`). k defaults to 5 because the bank is
    small: the paper's k = 50 over CIFAR-10's 50,000 training images is 0.1% of its bank, about 4
    of a 75-class x 50 bank, and k must stay well below ``open_world_bank_per_class`` so that
    the k-th neighbour of a known image still lies in its own class. ``open_world_from_replay``
    (needs replay): after every task the Mahalanobis class means and scatter and the knn bank
    are recomputed from the replay exemplars through the current model, instead of being kept
    from the end of each class's own task (where the backbone has since moved).

    Data: ``dataset`` (None = the embedded procedural dataset, else anything
    ``learngene_hf.data.load_tensors`` accepts), ``image_column``, ``label_column`` (None: the
    dataset's Image / ClassLabel feature), ``image_size``, ``embedded`` (extra keyword arguments
    for the embedded generator), the class split (``split_seed`` and ``base`` / ``open_world`` /
    ``novel``: counts, class lists or "0-5,8" strings; None = the 64/16/20 proportions).

    ``stop_after_task``: stop (after checkpointing) once this many tasks are finished; for tests
    and time budgets. Running again with resume continues the stream.
    """

    preset: str = "paper"
    num_tasks: int = 50
    ways: int = 5
    epochs_per_task: int = 10
    batch_size: int = 64
    lr: float = 1e-3
    lr_schedule: str = "constant"
    warmup_epochs: float = 0.0
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
    outlier_exposure: float = 0.0
    outlier_exposure_heads: str = "current"
    thresholds: list[float] = field(default_factory=lambda: list(DEFAULT_THRESHOLDS))
    heatmap_threshold: float = 5e-10
    record_gradients: bool = True
    seed: int = 0
    mixed_precision: str = "auto"
    dataset: str | None = None
    image_column: str | None = None
    label_column: str | None = None
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
        if self.preset not in VGG_BN_ARCHS and self.preset not in VIT_PRESETS:
            raise ConfigError(
                f"preset={self.preset!r} is unknown; choose one of {sorted(VGG_BN_ARCHS) + sorted(VIT_PRESETS)}."
            )
        if self.preset in VIT_PRESETS and self.growth != "none":
            raise ConfigError(
                f"growth={self.growth!r} is not offered for the ViT preset {self.preset!r} (widen/deepen are VGG "
                "operations); use growth='none' (--growth none)."
            )
        for name in (
            "num_tasks",
            "ways",
            "epochs_per_task",
            "batch_size",
            "eval_batch_size",
            "ewc_batches",
            "growth_layers",
        ):
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
        if self.lr_schedule not in LR_SCHEDULES:
            raise ConfigError(f"lr_schedule must be one of {LR_SCHEDULES}, got {self.lr_schedule!r}.")
        if not 0 <= self.warmup_epochs <= self.epochs_per_task:
            raise ConfigError(
                f"warmup_epochs must be between 0 and epochs_per_task ({self.epochs_per_task}), "
                f"got {self.warmup_epochs}."
            )
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
        self._validate_memory()
        if self.heatmap_threshold not in self.thresholds:
            raise ConfigError(
                f"heatmap_threshold {self.heatmap_threshold} must be one of thresholds {self.thresholds}."
            )
        if self.stop_after_task is not None and (
            not isinstance(self.stop_after_task, int) or self.stop_after_task <= 0
        ):
            raise ConfigError(
                f"stop_after_task must be a positive number of tasks or None, got {self.stop_after_task!r}."
            )

    def _validate_memory(self) -> None:
        """The forgetting-control and open-world fields of :meth:`validate`."""
        if not isinstance(self.bn_freeze_after, int) or self.bn_freeze_after < 0:
            raise ConfigError(
                f"bn_freeze_after must be a task index >= 1 (statistics of at least one task are kept) or 0 (never "
                f"freeze), got {self.bn_freeze_after!r}."
            )
        if not isinstance(self.replay_per_class, int) or self.replay_per_class < 0:
            raise ConfigError(
                f"replay_per_class must be an integer >= 0 (0 = no replay), got {self.replay_per_class!r}."
            )
        if not isinstance(self.replay_batch_size, int) or self.replay_batch_size <= 0:
            raise ConfigError(f"replay_batch_size must be a positive integer, got {self.replay_batch_size!r}.")
        if self.replay_selection not in REPLAY_SELECTIONS:
            raise ConfigError(f"replay_selection must be one of {REPLAY_SELECTIONS}, got {self.replay_selection!r}.")
        for name in ("open_world_knn_k", "open_world_bank_per_class"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}.")
        first_bank = self.ways * min(
            self.open_world_bank_per_class, self.train_per_class or self.open_world_bank_per_class
        )
        if self.open_world_knn_k > first_bank:
            raise ConfigError(
                f"open_world_knn_k={self.open_world_knn_k} is more than the {first_bank} embeddings the knn bank "
                f"holds after the first task (ways x min(open_world_bank_per_class, train_per_class)); lower "
                "open_world_knn_k or raise open_world_bank_per_class."
            )
        if not self.outlier_exposure >= 0 or self.outlier_exposure_heads not in OUTLIER_EXPOSURE_HEADS:
            raise ConfigError(
                f"outlier_exposure must be >= 0 and outlier_exposure_heads one of {OUTLIER_EXPOSURE_HEADS}, got "
                f"{self.outlier_exposure!r}, {self.outlier_exposure_heads!r}."
            )
        if self.outlier_exposure and not self.replay_per_class:
            raise ConfigError(
                "outlier_exposure trains on the replayed images of earlier tasks; turn replay on (replay_per_class "
                "> 0, --replay-per-class) or leave outlier_exposure at 0."
            )
        if self.open_world_from_replay and not self.replay_per_class:
            raise ConfigError(
                "open_world_from_replay recomputes the class statistics from the replay memory; turn "
                "replay on (replay_per_class > 0, --replay-per-class) or leave open_world_from_replay "
                "off."
            )

    def lr_at(self, step: int, total_steps: int, warmup_steps: int) -> float:
        """The learning rate of step ``step`` (0-based) of a task of ``total_steps`` steps: linear
        warm-up over ``warmup_steps`` steps from ``lr / warmup_steps``, then ``lr`` ("constant") or a
        cosine decay to 0 at the task's last step ("cosine")."""
        if warmup_steps and step < warmup_steps:
            return self.lr * (step + 1) / warmup_steps
        if self.lr_schedule == "constant":
            return self.lr
        progress = (step - warmup_steps) / max(total_steps - warmup_steps, 1)
        return self.lr * 0.5 * (1.0 + math.cos(math.pi * min(max(progress, 0.0), 1.0)))

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


def resolve_mixed_precision(value: str) -> str:
    """ "auto" -> "bf16" on a CUDA GPU that supports it, "fp16" on other CUDA GPUs, else "no"."""
    if value != "auto":
        return value
    import torch  # light module: torch only when "auto" has to be resolved

    if torch.cuda.is_available():
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "no"
