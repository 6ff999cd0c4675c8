"""The few-shot settings as plain data: the training recipe and the comparison's episodes.

* :class:`FewShotConfig`: the training recipe: optimisation steps, LP-FT, head/body learning rates,
  warm-up + cosine schedule, label smoothing, augmentation, BatchNorm re-estimation, device,
  stacking. ``FewShotConfig()`` is the library's default recipe, ``FewShotConfig.from_recipe("paper")``
  the paper's (SGD lr 5e-3, 30 epochs, batch 32).
* :class:`ComparisonConfig`: the episodes (ways, shots, queries, seed) and methods of a comparison,
  and what tuning searches.
* :data:`RECIPES`, :data:`DEFAULT_STEPS`, and the learning rates tuning tries: :data:`DEFAULT_LR_GRID`
  (the VGG recipe's) and :data:`DEFAULT_VIT_LR_GRID` (ViT descendants').

A light module: it imports the standard library and :mod:`learngene_hf.errors` only (scripts parse
``--help`` with it before the heavy imports); :meth:`FewShotConfig.resolved_device` imports torch when
called. The recipe is followed by :mod:`~learngene_hf.fewshot.train` (one model) and
:mod:`~learngene_hf.fewshot.stacked` (many at once).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError

if TYPE_CHECKING:
    import torch


#: Names accepted by :meth:`FewShotConfig.from_recipe`.
RECIPES: tuple[str, ...] = ("default", "paper")

#: Optimisation steps of the default recipe when neither ``steps`` nor ``epochs`` is given.
DEFAULT_STEPS = 100

#: The recipe of each descendant size (:data:`~learngene_hf.models.presets.VGG_DESCENDANT_SIZES`),
#: as :class:`FewShotConfig` fields over the default recipe, picked on open-world episodes
#: (``benchmarks/descendant_sizes.py``, ``docs/guides/fewshot.md``): the "tiny" descendant (the
#: learngene and a linear head) is best left as the linear probe it starts as (fine-tuning its 25
#: images moved it below the probe at every learning rate tried); descendants with fresh blocks
#: train with the default LP-FT recipe.
SIZE_RECIPES: dict[str, dict[str, Any]] = {
    "tiny": {"lp_init": True, "lp_steps": 0, "steps": 0},
    "small": {},
    "medium": {},
    "full": {},
}


#: The descendant size the pipeline and ``examples/few_shot.py`` train unless told otherwise: the one
#: ``benchmarks/descendant_sizes.py`` found worth most per parameter (see ``docs/guides/fewshot.md``).
DEFAULT_SIZE = "small"


def default_size(learngene: Any) -> str:
    """The size a learngene's descendants default to: ``"tiny"`` (the learngene and a linear head,
    the linear probe) for a layer learngene that holds every conv layer of its collective model, like
    the compact learngene the pipeline extracts, which has no fresh layer left to add and whose
    fine-tuned head at the default learning rate ended below that probe; :data:`DEFAULT_SIZE` otherwise."""
    config = getattr(learngene, "config", None)
    whole = getattr(config, "form", "layers") == "layers" and getattr(config, "position", None) == "whole"
    return "tiny" if whole else DEFAULT_SIZE


def descendant_recipe(size: str | None) -> dict[str, Any]:
    """The :class:`FewShotConfig` fields of the recipe for a descendant of ``size`` (``None``: "full"):
    every field that some size sets, with the default recipe's value where this size keeps it (so
    the fields apply the same on top of any recipe)."""
    if size is not None and size not in SIZE_RECIPES:
        raise ConfigError(f"Unknown descendant size {size!r}; choose one of {list(SIZE_RECIPES)}.")
    defaults = {f.name: f.default for f in fields(FewShotConfig)}
    defaults["steps"] = DEFAULT_STEPS
    keys = sorted({key for recipe in SIZE_RECIPES.values() for key in recipe})
    return {key: SIZE_RECIPES[size or "full"].get(key, defaults[key]) for key in keys}


def sized_recipe(size: str | None, recipe: str = "default", **values: Any) -> "FewShotConfig":
    """The :class:`FewShotConfig` a descendant of ``size`` trains with: the named ``recipe`` with, for
    the default recipe, the size's own values (:func:`descendant_recipe`) and then ``values`` on top
    (``epochs`` given here replaces the size's ``steps``)."""
    base = descendant_recipe(size) if recipe == "default" else {}
    if "epochs" in values:
        base.pop("steps", None)
    return FewShotConfig.from_recipe(recipe, **{**base, **values})


@dataclass
class FewShotConfig:
    """The recipe of one few-shot training run, as plain data.

    The run is a fixed sequence of ``total_steps(n)`` optimisation steps. Step ``t`` draws its
    batch indices (and augmentation) from the episode's own ``torch.Generator``, runs the model,
    takes the cross-entropy loss (with ``label_smoothing``), back-propagates, and makes one SGD
    step (``momentum``, ``weight_decay``) in which every parameter group gets the learning rate
    :meth:`group_lr` (group, t): a deterministic function of the step and of the group, nothing
    else. No step depends on the model's outputs, so one-at-a-time and stacked training read the
    same description.

    Parameter groups: ``"head"`` (the MLP neck and the classifier) and ``"body"`` (every trainable
    conv block, inherited or fresh). Inherited blocks frozen with ``freeze_learngene`` are not
    trained at all.

    Attributes:
        recipe: the named recipe the values start from: "default" (the library's) or "paper"
            (the paper's schedule); FewShotConfig.from_recipe(name) and --recipe set its values,
            the other fields change single ones.
        steps: optimisation steps. Each step trains on ``min(batch_size, N)`` support images
            drawn without replacement (``torch.randperm(N)[:batch_size]``).
        epochs: the paper's way of counting instead: ``epochs`` shuffled passes over the support
            set in batches of ``batch_size`` (a last batch of one image is skipped). Give either
            ``steps`` or ``epochs``; with neither, ``steps = DEFAULT_STEPS``.
        lr: peak SGD learning rate of the body.
        head_lr_scale: the head's learning rate is ``lr * head_lr_scale``.
        lp_steps: LP-FT (Kumar et al., ICLR 2022): during the first ``lp_steps`` steps only the
            head trains (the body gets no gradient and no optimizer state: linear probing on
            frozen features, BatchNorm still in train mode); the body fine-tunes afterwards.
        lp_init: before the steps, re-estimate every BatchNorm layer's statistics on the support
            images and fit the classifier exactly: L2 logistic regression (``lp_l2``) on the
            standardized features it reads, the standardization folded into its weights
            (:mod:`~learngene_hf.fewshot.linear`). The run then starts where a linear probe on
            the same network ends; with ``steps=0`` it is that probe.
        lp_l2: the L2 strength of that fit (penalty ``lp_l2 / 2 * ||W||^2`` on the mean cross-entropy).
        inherited_lr_scale: the inherited blocks' learning rate is ``lr * inherited_lr_scale``
            (the fresh blocks keep ``lr``); 0 keeps the learngene fixed while the rest trains.
        warmup_steps: linear warm-up of every group's learning rate from ``lr / warmup_steps``
            to its peak, counted from the group's first step (the body's starts at ``lp_steps``).
        schedule: "constant" or "cosine" (decay from the peak, after warm-up, to
            ``final_lr_scale`` x peak at the last step).
        final_lr_scale: the learning rate at the end of a cosine schedule, as a fraction of the peak.
        batch_size: support images per step (paper: 32).
        momentum / weight_decay: SGD settings (paper: 0.9 / 5e-4); both groups.
        label_smoothing: of the cross-entropy loss (0: plain cross-entropy).
        augment: random crop (``crop_padding`` zero pixels on each side) + horizontal flip of
            support images.
        crop_padding: padding of the random crop (0: flip only).
        bn_reestimate: before training, reset the inherited BatchNorm running statistics and
            re-estimate them on the support images (cumulative average). ``False`` keeps the
            collective model's statistics.
        device: torch device ("cpu", "cuda", ...); ``None`` picks CUDA when available.
        eval_batch_size: images per forward pass in :func:`~learngene_hf.fewshot.train.evaluate`.
        stack: train the descendants of many episodes (and methods, and learning rates) at once
            as one stacked network (learngene_hf.fewshot.stacked); same results as one at a time.
            ``False`` (``--no-stack``) trains them one at a time.
        stack_size: at most this many descendants per stack (memory grows linearly with it).
    """

    recipe: str = field(default="default", metadata={"choices": RECIPES})
    steps: int | None = None
    epochs: int | None = None
    lr: float = 0.1
    head_lr_scale: float = 1.0
    lp_steps: int = 20
    lp_init: bool = False
    lp_l2: float = 0.01
    inherited_lr_scale: float = 1.0
    warmup_steps: int = 5
    schedule: str = "cosine"
    final_lr_scale: float = 0.0
    batch_size: int = 32
    momentum: float = 0.9
    weight_decay: float = 5e-4
    label_smoothing: float = 0.1
    augment: bool = True
    crop_padding: int = 4
    bn_reestimate: bool = True
    device: str | None = None
    eval_batch_size: int = 256
    stack: bool = True
    stack_size: int = 16

    def __post_init__(self) -> None:
        if self.steps is not None and self.epochs is not None:
            raise ConfigError(
                f"Give steps or epochs, not both (got steps={self.steps}, epochs={self.epochs}); "
                "steps counts optimisation steps, epochs passes over the support set."
            )
        if self.steps is None and self.epochs is None:
            self.steps = DEFAULT_STEPS
        for name in ("steps", "epochs", "lp_steps", "warmup_steps", "crop_padding"):
            value = getattr(self, name)
            if value is not None and int(value) < 0:
                raise ConfigError(f"{name} must be >= 0, got {value}.")
        if not self.lr > 0 or not self.head_lr_scale >= 0 or not self.inherited_lr_scale >= 0:
            raise ConfigError(
                f"lr must be positive and head_lr_scale, inherited_lr_scale >= 0, got lr={self.lr}, "
                f"head_lr_scale={self.head_lr_scale}, inherited_lr_scale={self.inherited_lr_scale}."
            )
        if not self.lp_l2 >= 0:
            raise ConfigError(f"lp_l2 must be >= 0, got {self.lp_l2}.")
        if self.schedule not in ("constant", "cosine"):
            raise ConfigError(f"schedule must be 'constant' or 'cosine', got {self.schedule!r}.")
        if not 0.0 <= self.final_lr_scale <= 1.0 or not 0.0 <= self.label_smoothing < 1.0:
            raise ConfigError(
                f"final_lr_scale must be in [0, 1] and label_smoothing in [0, 1), got "
                f"{self.final_lr_scale}, {self.label_smoothing}."
            )
        if self.batch_size <= 0 or self.eval_batch_size <= 0:
            raise ConfigError(
                f"batch sizes must be positive, got batch_size={self.batch_size}, "
                f"eval_batch_size={self.eval_batch_size}."
            )
        if self.stack_size <= 0:
            raise ConfigError(f"stack_size must be positive, got {self.stack_size}.")
        if self.momentum < 0 or self.weight_decay < 0:
            raise ConfigError(f"momentum and weight_decay must be >= 0, got {self.momentum}, {self.weight_decay}.")

    @classmethod
    def from_recipe(cls, name: str = "default", **overrides: Any) -> "FewShotConfig":
        """A named recipe, with ``overrides`` (any field) on top.

        * ``"default"``: the library's recipe for descendants: ``DEFAULT_STEPS`` steps, LP-FT
          (head first on frozen features), warm-up + cosine decay, label smoothing. Its values
          were tuned on open-world classes (see the README).
        * ``"paper"``: the Learngene paper's schedule (SGD lr 5e-3, momentum 0.9, weight decay
          5e-4, 30 epochs, batch 32, constant lr, crop + flip), for reproduction.
        """
        if name == "default":
            base: dict[str, Any] = {}
        elif name == "paper":
            base = {
                "epochs": 30,
                "lr": 5e-3,
                "head_lr_scale": 1.0,
                "lp_steps": 0,
                "warmup_steps": 0,
                "schedule": "constant",
                "final_lr_scale": 0.0,
                "batch_size": 32,
                "momentum": 0.9,
                "weight_decay": 5e-4,
                "label_smoothing": 0.0,
                "augment": True,
                "crop_padding": 4,
            }
        else:
            raise ConfigError(f"Unknown recipe {name!r}; choose one of {list(RECIPES)} (or set the fields yourself).")
        base.update(overrides)
        if "steps" in overrides and "epochs" not in overrides:
            base["epochs"] = None
        return cls(recipe=name, **base)

    def replace(self, **changes: Any) -> "FewShotConfig":
        """A copy with ``changes``; ``steps`` replaces ``epochs`` (and vice versa)."""
        values = self.to_dict()
        if "steps" in changes and "epochs" not in changes:
            values["epochs"] = None
        if "epochs" in changes and "steps" not in changes:
            values["steps"] = None
        values.update(changes)
        return FewShotConfig(**values)

    # ------------------------------------------------------------------ schedule
    def batches_per_epoch(self, n: int) -> int:
        """Batches of one pass in ``epochs`` mode over ``n`` support images (a last batch of one
        image is skipped when ``n >= 2``)."""
        full, rest = divmod(int(n), self.batch_size)
        return full + (1 if rest > 1 or (rest == 1 and n < 2) else 0)

    def total_steps(self, n: int) -> int:
        """Optimisation steps of a run on ``n`` support images."""
        if self.epochs is not None:
            return int(self.epochs) * self.batches_per_epoch(n)
        return int(self.steps)

    def group_lr(self, group: str, step: int, total_steps: int) -> float:
        """Learning rate of parameter group ``group`` ("head", "body" or "inherited") at step
        ``step`` (0-based) of a run of ``total_steps`` steps: 0 for the body and the inherited
        blocks during the LP steps, then linear warm-up, then constant or cosine decay to
        ``final_lr_scale`` x peak."""
        if group == "head":
            peak, first = self.lr * self.head_lr_scale, 0
        elif group in ("body", "inherited"):
            peak = self.lr * (self.inherited_lr_scale if group == "inherited" else 1.0)
            first = min(self.lp_steps, total_steps)
        else:
            raise ConfigError(f"Unknown parameter group {group!r}; the groups are 'head', 'body' and 'inherited'.")
        t = step - first
        if t < 0:
            return 0.0
        if self.warmup_steps and t < self.warmup_steps:
            return peak * (t + 1) / self.warmup_steps
        if self.schedule == "constant":
            return peak
        decay = max(total_steps - first - self.warmup_steps, 1)
        progress = min(max((t - self.warmup_steps) / decay, 0.0), 1.0)
        return peak * (self.final_lr_scale + (1 - self.final_lr_scale) * 0.5 * (1 + math.cos(math.pi * progress)))

    def resolved_device(self) -> torch.device:
        """The device to train on."""
        import torch

        if self.device is not None:
            return torch.device(self.device)
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


#: Learning rates tried by :func:`~learngene_hf.fewshot.tuning.tune_lr` (on open-world episodes only).
DEFAULT_LR_GRID: tuple[float, ...] = (0.02, 0.05, 0.1, 0.2)  # around the default lr (0.1); widened at an edge

#: Few-shot learning rates :func:`~learngene_hf.fewshot.compare.compare_vit_depths` tries on open-world
#: episodes when the caller gives none. The library's :data:`DEFAULT_LR_GRID` is centred on the VGG
#: recipe's lr (0.1); with the same SGD recipe the ViT descendants picked 0.002-0.05 on open-world
#: episodes (the grid is still widened once when the pick is at an edge).
DEFAULT_VIT_LR_GRID: tuple[float, ...] = (0.002, 0.005, 0.01, 0.02, 0.05)


@dataclass
class ComparisonConfig:
    """The episodes of a few-shot comparison (``examples/few_shot.py``; the pipeline's few-shot
    stage takes its defaults from here).

    Attributes:
        episodes: novel-class episodes every method is trained and scored on.
        ways: classes per episode.
        shots: support images per class.
        queries: query images per class.
        seed: seed of the episodes and of every model's fresh layers.
        compare: also run the whole backbone and the last-k, first-k and worst-ranked blocks of
            the collective run (and, with ``baselines``, the frozen-feature baselines and weight
            selection).
        baselines: with ``compare``, also run logistic regression and nearest centroid on frozen
            features (random descendant, learngene, whole collective model) and weight selection.
        blocks: with ``compare``, also fine-tune the other blocks and weight selection; ``False``
            (``--no-blocks``) keeps only learngene, scratch and the frozen-feature baselines, which
            cost little.
        size: the descendant size of ``learngene`` and ``scratch`` (and the random network of the
            frozen-feature baselines): a name of ``VGG_DESCENDANT_SIZES`` ("tiny", "small",
            "medium", "full"); its recipe (:data:`SIZE_RECIPES`) sits under the recipe flags given;
            ``None``: the learngene's :func:`default_size`.
        sizes: also compare descendants of several sizes with scratch and weight selection of the
            same size (``sizes.json`` / ``sizes.md`` / ``sizes.png``).
        freeze_learngene: train only the fresh layers.
        tune_lr: pick every method's recipe values (scratch included) on open-world episodes: the
            lr, and steps / weight decay when their grids are given.
        tune_episodes: open-world episodes per grid point when tuning.
        lr_grid: learning rates tried when tuning.
        steps_grid: optimisation steps tried when tuning (empty: steps are not tuned).
        wd_grid: weight decays tried when tuning (empty: not tuned).
    """

    episodes: int = 20
    ways: int = 5
    shots: int = 5
    queries: int = 15
    seed: int = 0
    compare: bool = False
    baselines: bool = True
    blocks: bool = True
    size: str | None = field(default=None, metadata={"choices": tuple(SIZE_RECIPES)})
    sizes: bool = False
    freeze_learngene: bool = False
    tune_lr: bool = False
    tune_episodes: int = 3
    lr_grid: tuple[float, ...] = DEFAULT_LR_GRID
    steps_grid: tuple[int, ...] = ()
    wd_grid: tuple[float, ...] = ()

    def tune_grid(self) -> dict[str, list[float]]:
        """What tuning searches: ``{"lr": [...]}`` plus ``"steps"`` / ``"weight_decay"`` when their
        grids are given (see :func:`~learngene_hf.fewshot.tuning.tune_recipe`)."""
        grid: dict[str, list[float]] = {"lr": list(self.lr_grid)}
        if self.steps_grid:
            grid["steps"] = [int(s) for s in self.steps_grid]
        if self.wd_grid:
            grid["weight_decay"] = [float(w) for w in self.wd_grid]
        return grid

    def __post_init__(self) -> None:
        self.steps_grid = tuple(int(s) for s in self.steps_grid)
        self.wd_grid = tuple(float(w) for w in self.wd_grid)
        if any(s <= 0 for s in self.steps_grid) or any(w < 0 for w in self.wd_grid):
            raise ConfigError(
                f"steps_grid must hold positive step counts and wd_grid non-negative weight decays, got "
                f"{self.steps_grid!r}, {self.wd_grid!r}."
            )
        for name in ("episodes", "shots", "queries", "tune_episodes"):
            value = getattr(self, name)
            if not isinstance(value, int) or value <= 0:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}.")
        if not isinstance(self.ways, int) or self.ways < 2:
            raise ConfigError(
                f"ways must be at least 2, got {self.ways!r}: with one class every query is right "
                "by construction and the accuracy means nothing."
            )
        self.lr_grid = tuple(float(lr) for lr in self.lr_grid)
        if not self.lr_grid or any(not lr > 0 for lr in self.lr_grid):
            raise ConfigError(
                f"lr_grid must be positive learning rates such as (0.01, 0.02, 0.05), got {self.lr_grid!r}."
            )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
