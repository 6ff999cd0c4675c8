"""Few-shot training of individual models: one fresh model per episode and method, on tensors.

* :class:`FewShotConfig`: the training recipe as plain data: optimisation steps, LP-FT, head/body
  learning rates, warm-up + cosine schedule, label smoothing, augmentation, BatchNorm
  re-estimation, device. ``FewShotConfig()`` is the library's default recipe,
  ``FewShotConfig.from_recipe("paper")`` the paper's (SGD lr 5e-3, 30 epochs, batch 32).
* :func:`train_individual` / :func:`evaluate`: train one model on a support set, score it on a query set.
* :func:`probe_learngene`: quick few-shot probes of a learngene (or of scratch) over episodes; the
  Inheritor's validated selection runs it on open-world episodes.
* :func:`run_episodes`, :func:`tune_lr`, :func:`compare_methods`, :func:`format_table`: the
  comparison behind ``examples/few_shot.py`` (episodes spread over ``accelerate`` processes).

Every method sees exactly the same episodes, and within an episode the same seed: the fresh layers
of the learngene model and of the scratch model start from the same random draw, and the batches
and augmentations are identical.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Callable, Sequence

import torch
from torch import nn

from .errors import ConfigError, DataError
from .individual import IndividualConfig, IndividualModel
from .logs import get_logger

logger = get_logger(__name__)


#: Names accepted by :meth:`FewShotConfig.from_recipe`.
RECIPES: tuple[str, ...] = ("default", "paper")

#: Optimisation steps of the default recipe when neither ``steps`` nor ``epochs`` is given.
DEFAULT_STEPS = 100


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
        eval_batch_size: images per forward pass in :func:`evaluate`.
        stack: train the descendants of many episodes (and methods, and learning rates) at once
            as one stacked network (learngene_hf.stacked); same results as one at a time.
            ``False`` (``--no-stack``) trains them one at a time.
        stack_size: at most this many descendants per stack (memory grows linearly with it).
    """

    recipe: str = field(default="default", metadata={"choices": RECIPES})
    steps: int | None = None
    epochs: int | None = None
    lr: float = 0.1
    head_lr_scale: float = 1.0
    lp_steps: int = 20
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
            raise ConfigError(f"Give steps or epochs, not both (got steps={self.steps}, epochs={self.epochs}); "
                              "steps counts optimisation steps, epochs passes over the support set.")
        if self.steps is None and self.epochs is None:
            self.steps = DEFAULT_STEPS
        for name in ("steps", "epochs", "lp_steps", "warmup_steps", "crop_padding"):
            value = getattr(self, name)
            if value is not None and int(value) < 0:
                raise ConfigError(f"{name} must be >= 0, got {value}.")
        if not self.lr > 0 or not self.head_lr_scale >= 0:
            raise ConfigError(f"lr must be positive and head_lr_scale >= 0, got lr={self.lr}, head_lr_scale={self.head_lr_scale}.")
        if self.schedule not in ("constant", "cosine"):
            raise ConfigError(f"schedule must be 'constant' or 'cosine', got {self.schedule!r}.")
        if not 0.0 <= self.final_lr_scale <= 1.0 or not 0.0 <= self.label_smoothing < 1.0:
            raise ConfigError(f"final_lr_scale must be in [0, 1] and label_smoothing in [0, 1), got "
                              f"{self.final_lr_scale}, {self.label_smoothing}.")
        if self.batch_size <= 0 or self.eval_batch_size <= 0:
            raise ConfigError(f"batch sizes must be positive, got batch_size={self.batch_size}, eval_batch_size={self.eval_batch_size}.")
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
            base = {"epochs": 30, "lr": 5e-3, "head_lr_scale": 1.0, "lp_steps": 0, "warmup_steps": 0, "schedule": "constant",
                    "final_lr_scale": 0.0, "batch_size": 32, "momentum": 0.9, "weight_decay": 5e-4,
                    "label_smoothing": 0.0, "augment": True, "crop_padding": 4}
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
        """Learning rate of parameter group ``group`` ("head" or "body") at step ``step`` (0-based)
        of a run of ``total_steps`` steps: 0 for the body during the LP steps, then linear warm-up,
        then constant or cosine decay to ``final_lr_scale`` x peak."""
        if group == "head":
            peak, first = self.lr * self.head_lr_scale, 0
        elif group == "body":
            peak, first = self.lr, min(self.lp_steps, total_steps)
        else:
            raise ConfigError(f"Unknown parameter group {group!r}; the groups are 'head' and 'body'.")
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
        if self.device is not None:
            return torch.device(self.device)
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


#: Learning rates tried by :func:`tune_lr` (on open-world episodes only).
DEFAULT_LR_GRID: tuple[float, ...] = (0.02, 0.05, 0.1, 0.2)  # around the default lr (0.1); widened at an edge


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
    sizes: bool = False
    freeze_learngene: bool = False
    tune_lr: bool = False
    tune_episodes: int = 3
    lr_grid: tuple[float, ...] = DEFAULT_LR_GRID
    steps_grid: tuple[int, ...] = ()
    wd_grid: tuple[float, ...] = ()

    def tune_grid(self) -> dict[str, list[float]]:
        """What tuning searches: ``{"lr": [...]}`` plus ``"steps"`` / ``"weight_decay"`` when their
        grids are given (see :func:`tune_recipe`)."""
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
            raise ConfigError(f"steps_grid must hold positive step counts and wd_grid non-negative weight decays, got "
                              f"{self.steps_grid!r}, {self.wd_grid!r}.")
        for name in ("episodes", "shots", "queries", "tune_episodes"):
            value = getattr(self, name)
            if not isinstance(value, int) or value <= 0:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}.")
        if not isinstance(self.ways, int) or self.ways < 2:
            raise ConfigError(f"ways must be at least 2, got {self.ways!r}: with one class every query is right "
                              "by construction and the accuracy means nothing.")
        self.lr_grid = tuple(float(lr) for lr in self.lr_grid)
        if not self.lr_grid or any(not lr > 0 for lr in self.lr_grid):
            raise ConfigError(f"lr_grid must be positive learning rates such as (0.01, 0.02, 0.05), got {self.lr_grid!r}.")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# ---------------------------------------------------------------------- helpers
def episode_seed(seed: int, episode_index: int, episode_seed_value: int = 0) -> int:
    """A 63-bit seed from (run seed, episode index, episode seed); the same for every method."""
    digest = hashlib.sha256(f"{int(seed)}:{int(episode_index)}:{int(episode_seed_value)}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def _normalize(images: torch.Tensor, device: torch.device, mean: Sequence[float], std: Sequence[float],
               dtype: torch.dtype = torch.float32) -> torch.Tensor:
    if not isinstance(images, torch.Tensor) or images.dtype != torch.uint8 or images.dim() != 4:
        got = f"{images.dtype} {tuple(images.shape)}" if isinstance(images, torch.Tensor) else type(images).__name__
        raise DataError(f"Few-shot images must be uint8 tensors [N, C, H, W], got {got}.")
    x = images.to(device=device, dtype=dtype) / 255.0
    m = torch.tensor(list(mean), dtype=dtype, device=device).view(1, -1, 1, 1)
    s = torch.tensor(list(std), dtype=dtype, device=device).view(1, -1, 1, 1)
    return (x - m) / s


def _model_dtype(model: nn.Module) -> torch.dtype:
    return next(model.parameters()).dtype


def _model_stats(model: nn.Module) -> tuple[list[float], list[float]]:
    config = getattr(model, "config", None)
    mean = getattr(config, "image_mean", None) or [0.5, 0.5, 0.5]
    std = getattr(config, "image_std", None) or [0.5, 0.5, 0.5]
    return list(mean), list(std)


def augment_offsets(b: int, generator: torch.Generator, padding: int = 4) -> tuple[list[int], list[int], list[bool]]:
    """The random draws of :func:`augment_batch` for ``b`` images: row offsets, column offsets and
    flips (in this order from ``generator``)."""
    dy = torch.randint(0, 2 * padding + 1, (b,), generator=generator).tolist()
    dx = torch.randint(0, 2 * padding + 1, (b,), generator=generator).tolist()
    flip = torch.rand(b, generator=generator).lt(0.5).tolist()
    return dy, dx, flip


def augment_batch(x: torch.Tensor, generator: torch.Generator, padding: int = 4) -> torch.Tensor:
    """Random crop after ``padding`` zero pixels on each side, then random horizontal flip.

    ``x`` [B, C, H, W] float -> [B, C, H, W]; draws from ``generator`` (CPU) only, in this order:
    ``randint(0, 2*padding+1, (B,))`` row offsets, the same for columns, ``rand(B) < 0.5`` flips.
    """
    b, _, h, w = x.shape
    padded = nn.functional.pad(x, (padding, padding, padding, padding))
    dy, dx, flip = augment_offsets(b, generator, padding)
    out = torch.empty_like(x)
    for i in range(b):
        crop = padded[i, :, dy[i] : dy[i] + h, dx[i] : dx[i] + w]
        out[i] = crop.flip(-1) if flip[i] else crop
    return out


@torch.no_grad()
def reestimate_batchnorm(model: IndividualModel, images: torch.Tensor, batch_size: int = 32) -> None:
    """Reset the inherited BatchNorm running statistics and re-estimate them from ``images``.

    ``images`` [N, C, H, W] float (normalized, on the model's device). The model runs in train
    mode (fresh layers normalize with batch statistics, as during training); only the inherited
    BatchNorm layers update, with a cumulative average over the batches. Other BatchNorm layers
    keep their statistics; the model's train/eval mode is restored.
    """
    inherited = {id(m) for m in model.inherited_batchnorms()}
    if not inherited:
        return
    modes = [(m, m.training) for m in model.modules()]
    momenta = []
    try:
        for m in model.modules():
            m.training = True  # bypass IndividualModel.train: frozen blocks must update here too
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                momenta.append((m, m.momentum))
                if id(m) in inherited:
                    m.reset_running_stats()
                    m.momentum = None  # cumulative moving average
                else:
                    m.momentum = 0.0  # running statistics stay as they are
        for start in range(0, images.shape[0], batch_size):
            model(images[start : start + batch_size])
    finally:
        for m, momentum in momenta:
            m.momentum = momentum
        for m, mode in modes:
            m.training = mode


def parameter_groups(model: IndividualModel) -> dict[str, list[nn.Parameter]]:
    """The trainable parameters of ``model`` by recipe group: ``"head"`` (MLP neck and
    classifier of a VGG descendant; whatever ``model.head_modules()`` returns for other families,
    e.g. a ViT descendant's classifier) and ``"body"`` (everything else: conv blocks, transformer
    blocks, embeddings); frozen parameters are in neither."""
    heads = model.head_modules() if hasattr(model, "head_modules") else (model.neck, model.classifier)
    head = {id(p) for module in heads for p in module.parameters()}
    groups: dict[str, list[nn.Parameter]] = {"head": [], "body": []}
    for p in model.parameters():
        if p.requires_grad:
            groups["head" if id(p) in head else "body"].append(p)
    return groups


def support_batches(n: int, cfg: FewShotConfig, generator: torch.Generator):
    """The batch indices of every step, drawn lazily from ``generator`` (CPU int64 tensors).

    ``steps`` mode: every step ``torch.randperm(n)[:batch_size]``. ``epochs`` mode (the paper's):
    one ``torch.randperm(n)`` per epoch cut into batches of ``batch_size``, a last batch of one
    image skipped. Augmentation draws (if any) follow each batch's draw on the same generator.
    """
    if cfg.epochs is None:
        for _ in range(cfg.total_steps(n)):
            yield torch.randperm(n, generator=generator)[: cfg.batch_size]
        return
    for _ in range(int(cfg.epochs)):
        order = torch.randperm(n, generator=generator)
        for start in range(0, n, cfg.batch_size):
            idx = order[start : start + cfg.batch_size]
            if idx.numel() < 2 and n >= 2:
                continue  # a single image gives degenerate BatchNorm statistics
            yield idx


def train_individual(
    model: IndividualModel,
    support_images: torch.Tensor,
    support_labels: torch.Tensor,
    cfg: FewShotConfig,
    seed: int,
) -> IndividualModel:
    """Train ``model`` on a support set with the recipe ``cfg`` and return it (in eval mode, on
    ``cfg``'s device).

    The run, in order: ``torch.manual_seed(seed)`` (dropout) inside a forked RNG; BatchNorm
    re-estimation of the inherited blocks (``cfg.bn_reestimate``); one SGD optimizer with a
    ``"head"`` and a ``"body"`` parameter group (see :func:`parameter_groups`); then for every
    step ``t`` of ``cfg.total_steps(N)``: batch indices from :func:`support_batches`, augmentation
    (:func:`augment_batch`, same generator), forward in train mode, cross-entropy with
    ``cfg.label_smoothing``, backward, and an SGD step with each group's lr set to
    ``cfg.group_lr(group, t, total)``. During the LP steps the body's parameters do not require
    gradients, so they get neither gradient, weight decay nor momentum state.

    Args:
        model: a fresh :class:`IndividualModel` (from a learngene or from scratch).
        support_images: uint8 [N, C, H, W].
        support_labels: int64 [N], local labels ``0..num_labels-1``.
        cfg: the recipe.
        seed: drives the batch order, the augmentation and dropout; the same seed gives the same
            run for every method.
    """
    if support_labels.dim() != 1 or support_labels.shape[0] != support_images.shape[0]:
        raise DataError(
            f"support_labels must be int64 [N] with N={support_images.shape[0]}, got {tuple(support_labels.shape)}."
        )
    num_labels = int(getattr(model.config, "num_labels", 0) or 0)
    if support_labels.numel() and (int(support_labels.min()) < 0 or int(support_labels.max()) >= num_labels):
        raise DataError(
            f"support labels span {int(support_labels.min())}..{int(support_labels.max())} but the model has "
            f"{num_labels} outputs; use local labels 0..num_labels-1 and build the model with num_labels={int(support_labels.max()) + 1}."
        )
    device = cfg.resolved_device()
    model.to(device)
    x = _normalize(support_images, device, *_model_stats(model), dtype=_model_dtype(model))
    y = support_labels.to(device=device, dtype=torch.int64)
    generator = torch.Generator().manual_seed(int(seed))
    devices = [device.index or 0] if device.type == "cuda" else []
    n = x.shape[0]
    total = cfg.total_steps(n)
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(int(seed))
        if cfg.bn_reestimate and model.has_learngene:
            reestimate_batchnorm(model, x, cfg.batch_size)
        groups = parameter_groups(model)
        names = [name for name in ("head", "body") if groups[name]]
        optimizer = torch.optim.SGD([{"params": groups[name], "lr": cfg.group_lr(name, 0, total)} for name in names],
                                    lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
        # under an fp16 autocast (accelerate's mixed precision) scale the loss so small gradients survive
        fp16 = torch.is_autocast_enabled(device.type) and torch.get_autocast_dtype(device.type) == torch.float16
        scaler = torch.amp.GradScaler(device.type) if fp16 else None
        body_frozen = cfg.lp_steps > 0 and "body" in names
        if body_frozen:
            for p in groups["body"]:
                p.requires_grad_(False)
        model.train()
        try:
            for step, idx in enumerate(support_batches(n, cfg, generator)):
                if body_frozen and step >= cfg.lp_steps:
                    for p in groups["body"]:
                        p.requires_grad_(True)
                    body_frozen = False
                idx = idx.to(device)
                batch = x[idx]
                if cfg.augment:
                    batch = augment_batch(batch, generator, cfg.crop_padding)
                logits = model(batch).logits
                loss = nn.functional.cross_entropy(logits, y[idx], label_smoothing=cfg.label_smoothing)
                for group, name in zip(optimizer.param_groups, names):
                    group["lr"] = cfg.group_lr(name, step, total)
                optimizer.zero_grad(set_to_none=True)
                if scaler is None:
                    loss.backward()
                    optimizer.step()
                else:
                    scaler.scale(loss).backward()
                    scaler.step(optimizer)
                    scaler.update()
        finally:
            if body_frozen:
                for p in groups["body"]:
                    p.requires_grad_(True)
    model.eval()
    return model


@torch.no_grad()
def evaluate(model: IndividualModel, images: torch.Tensor, labels: torch.Tensor, cfg: FewShotConfig) -> float:
    """Accuracy (0..1) of ``model`` in eval mode on uint8 ``images`` [N, C, H, W] with int64 ``labels`` [N]."""
    if labels.shape[0] != images.shape[0] or images.shape[0] == 0:
        raise DataError(f"evaluate needs as many labels as images (and at least one), got {images.shape[0]} and {labels.shape[0]}.")
    device = cfg.resolved_device()
    model.to(device).eval()
    mean, std = _model_stats(model)
    correct = 0
    for start in range(0, images.shape[0], cfg.eval_batch_size):
        x = _normalize(images[start : start + cfg.eval_batch_size], device, mean, std, dtype=_model_dtype(model))
        pred = model(x).logits.argmax(-1).cpu()
        correct += int((pred == labels[start : start + cfg.eval_batch_size].cpu()).sum())
    return correct / images.shape[0]


def build_individual(
    learngene: Any | None,
    num_labels: int,
    *,
    architecture_of: Any | None = None,
    **overrides: Any,
) -> IndividualModel:
    """A fresh individual model: from ``learngene`` (loaded), or from scratch with the architecture
    ``IndividualConfig.for_learngene(architecture_of)`` would give (``IndividualConfig(...)``, the
    paper's individual model, when neither is given)."""
    if learngene is not None:
        return IndividualModel.from_learngene(learngene, num_labels, **overrides)
    if architecture_of is not None:
        return IndividualModel(IndividualConfig.for_learngene(architecture_of, num_labels, **overrides))
    return IndividualModel(IndividualConfig(num_labels=num_labels, **overrides))


def build_for_episode(builder: Callable[[int], nn.Module], episode: Any, seed: int = 0) -> tuple[nn.Module, int]:
    """``(builder(ways) built under the episode's seed, that seed)``: the fresh layers of every
    method start from the same random draw on the same episode."""
    ways = len(episode.classes)
    s = episode_seed(seed, episode.index, getattr(episode, "seed", 0))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(s)
        model = builder(ways)
    return model, s


def run_method_on_episode(
    builder: Callable[[int], nn.Module],
    episode: Any,
    cfg: FewShotConfig,
    seed: int = 0,
    fit: Callable[..., nn.Module] | None = None,
    settings: dict[str, Any] | None = None,
) -> float:
    """Build a fresh model with ``builder(ways)`` under the episode's seed, fit it on the support
    set (``fit(model, images, labels, cfg, seed, **settings)``; ``None``: fine-tune it with
    :func:`train_individual`, one at a time), and return its query accuracy."""
    model, s = build_for_episode(builder, episode, seed)
    if fit is None:
        train_individual(model, episode.support_images, episode.support_labels, cfg, s)
    else:
        fit(model, episode.support_images, episode.support_labels, cfg, s, **(settings or {}))
    return evaluate(model, episode.query_images, episode.query_labels, cfg)


def probe_learngene(
    learngene: Any | None,
    episodes: Sequence[Any],
    cfg: FewShotConfig,
    seed: int = 0,
    *,
    architecture_of: Any | None = None,
    **individual_overrides: Any,
) -> list[float]:
    """Query accuracy of a fresh individual model per episode (``learngene=None``: from scratch).

    Used by the Inheritor's validated selection on open-world episodes. For a scratch probe pass
    ``architecture_of=some_learngene`` to use that learngene's architecture (otherwise
    ``IndividualConfig(**individual_overrides)``). Same episode and seed -> same fresh layers,
    batches and augmentation for every learngene and for scratch.
    """
    if not episodes:
        raise ConfigError("probe_learngene needs at least one episode.")

    def builder(ways: int) -> IndividualModel:
        return build_individual(learngene, ways, architecture_of=architecture_of, **individual_overrides)

    from .stacked import Descendant, run_descendants

    return run_descendants([Descendant(builder, episode, None, seed) for episode in episodes], cfg)


def learngene_probe(
    learngene: Any, episodes: Sequence[Any], lr: float, epochs: int, seed: int = 0, device: str | None = None,
    stack: bool = True,
) -> list[float]:
    """The probe of the Inheritor's validated selection (``Inheritor(..., probe=learngene_probe)``):
    query accuracy per episode of a fresh individual model around ``learngene``, trained
    ``epochs`` epochs at ``lr`` (:func:`probe_learngene` with a :class:`FewShotConfig`; the
    episodes' descendants train stacked unless ``stack=False``)."""
    cfg = FewShotConfig.from_recipe("paper", lr=lr, epochs=epochs, device=device, stack=stack)  # the probes' schedule: the paper's
    return probe_learngene(learngene, episodes, cfg, seed=seed)


# ---------------------------------------------------------------------- comparisons over episodes

@dataclass
class Method:
    """One way to get an episode's classifier: a builder and a fit function (one generic pair).

    ``builder(num_labels)`` returns a fresh model; ``fit(model, support_images, support_labels,
    cfg, seed, **settings)`` trains or fits it on the support set (``None``: fine-tune it with
    :func:`train_individual`); the fitted model is scored with :func:`evaluate`. Fine-tuned
    methods build an ``IndividualModel``; frozen-feature baselines build a
    :class:`~learngene_hf.baselines.FrozenFeatureClassifier` and fit it with
    :func:`~learngene_hf.baselines.fit_frozen_features`.

    ``lr`` overrides ``FewShotConfig.lr`` for fine-tuned methods (``None``: keep it) and
    ``recipe`` any other recipe fields (e.g. ``{"steps": 200}``, tuned values);
    ``settings`` are the fit function's keyword arguments (e.g. ``{"l2": 0.01}``) and ``search``
    the values of those settings to pick from on open-world episodes (e.g. ``{"l2": [...]}``);
    ``description`` goes into the results.
    """

    name: str
    builder: Callable[[int], nn.Module]
    lr: float | None = None
    description: str = ""
    same_as: list[str] | None = None  # --compare blocks this method already covers (not run twice)
    fit: Callable[..., nn.Module] | None = None
    settings: dict[str, Any] = field(default_factory=dict)
    search: dict[str, Sequence[Any]] | None = None
    recipe: dict[str, Any] | None = None  # FewShotConfig fields this method overrides (tuned values)

    @property
    def fine_tunes(self) -> bool:
        """Whether the method fine-tunes its model with :func:`train_individual` (``lr`` applies)."""
        return self.fit is None

    def config(self, cfg: FewShotConfig) -> FewShotConfig:
        """``cfg`` with this method's overrides (``recipe``, then ``lr``)."""
        changes = dict(self.recipe or {})
        if self.lr is not None:
            changes["lr"] = float(self.lr)
        return cfg.replace(**changes) if changes else cfg


def _as_method(method: Any) -> Method:
    if isinstance(method, Method):
        return method
    try:
        name, builder, lr = method
    except (TypeError, ValueError) as err:
        raise ConfigError(f"A method is a Method or a (name, builder, lr) tuple, got {method!r}.") from err
    return Method(str(name), builder, lr)


def _progress(iterable, enabled: bool, total: int, desc: str):
    if not enabled:
        return iterable  # None when the caller only wants a bar to update
    from tqdm.auto import tqdm

    return tqdm(iterable, total=total, desc=desc, leave=False)


def run_episodes(
    methods: Sequence[Any],
    episodes: Sequence[Any],
    cfg: FewShotConfig,
    accelerator: Any | None = None,
    progress: bool = True,
    seed: int = 0,
    desc: str | None = None,
) -> list[dict[str, Any]]:
    """Train and evaluate every method on every episode; returns one row per episode.

    ``desc`` labels the progress bar (default: the methods and the episodes' ways and shots).

    The episodes are spread over the processes of ``accelerator`` with
    ``accelerator.split_between_processes`` (``None``: this process runs all), and every model is
    trained and scored under ``accelerator.autocast()`` (its mixed precision). Rows are gathered on every process
    (``accelerate.utils.gather_object``) and returned sorted by episode index, each episode exactly
    once: ``{"index", "seed", "classes", "accuracy": {method: float}}``.
    """
    methods = [_as_method(m) for m in methods]
    if not methods:
        raise ConfigError("run_episodes needs at least one method.")
    names = [m.name for m in methods]
    if len(set(names)) != len(names):
        raise ConfigError(f"Method names must be distinct, got {names}.")
    rank, world = 0, 1
    if accelerator is not None:
        rank, world = int(accelerator.process_index), int(accelerator.num_processes)
        if accelerator.device.type != "cpu" and cfg.device is None:
            cfg = cfg.replace(device=str(accelerator.device))
    mine = list(episodes)
    autocast = contextlib.nullcontext
    if accelerator is not None:
        with accelerator.split_between_processes(list(episodes)) as share:
            mine = list(share)
        autocast = accelerator.autocast  # accelerate's mixed precision (a no-op for "no")
    if desc is None and episodes:
        ep0 = episodes[0]
        ways = len(ep0.classes)
        desc = f"few-shot {ways}-way {int(ep0.support_labels.shape[0]) // max(ways, 1)}-shot: {', '.join(names)}"
    from .stacked import descendants_for, run_descendants

    jobs = descendants_for(methods, mine, seed, cfg)  # stacked unless cfg.stack is False
    bar = _progress(None, progress and rank == 0, len(jobs), desc or "descendants")
    with autocast():
        accs = run_descendants(jobs, cfg, progress=bar.update if bar is not None else None)
    if bar is not None:
        bar.close()
    rows = []
    for e, ep in enumerate(mine):
        accuracy = {method.name: accs[k * len(mine) + e] for k, method in enumerate(methods)}
        rows.append({"index": int(ep.index), "seed": int(getattr(ep, "seed", 0)), "classes": [int(c) for c in ep.classes],
                     "accuracy": accuracy})
    if world > 1:
        from accelerate.utils import gather_object

        rows = list(gather_object(rows))
    rows.sort(key=lambda r: r["index"])
    indices = [r["index"] for r in rows]
    expected = sorted(int(ep.index) for ep in episodes)
    if indices != expected:
        raise ConfigError(f"Gathered episodes {indices} differ from the episodes run {expected}; every episode must run exactly once.")
    return rows


@dataclass
class TuningResult:
    """What :func:`tune_recipe` tried and chose.

    ``grid``: the values tried per field (after widening); ``means``: one row per combination
    tried, ``{field: value, ..., "accuracy": mean}``; ``chosen``: the best combination;
    ``edge``: the fields whose chosen value is still the smallest or largest of their grid after
    widening (a wider grid could do better); ``widened``: the values added by widening.
    """

    grid: dict[str, list[float]]
    means: list[dict[str, float]]
    chosen: dict[str, float]
    accuracy: float
    edge: list[str]
    widened: dict[str, list[float]]
    episodes: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


#: Recipe fields that hold counts: tuned values are rounded to integers.
INTEGER_FIELDS = frozenset({"steps", "epochs", "lp_steps", "warmup_steps", "batch_size", "crop_padding"})


def _grid_step(values: list[float], upward: bool, integer: bool) -> float:
    """The next value beyond the edge of a sorted grid: the ratio of the last two values (geometric
    grids), or their difference when the edge is 0."""
    a, b = (values[-2], values[-1]) if upward else (values[1], values[0])
    if a > 0 and b > 0:
        nxt = b * (b / a)
    else:
        nxt = b + (b - a)
    if integer:
        nxt = int(round(nxt))
        if nxt == b:
            nxt = b + (1 if upward else -1)
    return nxt


def _beyond_edge(values: list[float], chosen: float, integer: bool) -> float | None:
    """The next value past the edge of the sorted grid ``values`` at which ``chosen`` sits
    (:func:`_grid_step`, in its direction); ``None`` when ``chosen`` lies inside the grid or the
    grid has fewer than two values."""
    if len(values) < 2 or chosen not in (values[0], values[-1]):
        return None
    return _grid_step(values, chosen == values[-1], integer)


def tune_recipe(
    builder: Callable[[int], IndividualModel],
    open_world_episodes: Sequence[Any],
    grid: dict[str, Sequence[float]],
    cfg: FewShotConfig | None = None,
    accelerator: Any | None = None,
    seed: int = 0,
    progress: bool = False,
    widen: int = 1,
    desc: str | None = None,
) -> TuningResult:
    """Pick the recipe values (any numeric :class:`FewShotConfig` fields: ``lr``, ``steps``,
    ``weight_decay``...) with the best mean query accuracy on ``open_world_episodes``.

    Every combination of ``grid`` runs on the same episodes. When the best value of a field sits
    at the edge of its grid, the grid is widened by one value in that direction (geometric step)
    and the new combinations run, up to ``widen`` times per field; a best value still at the edge
    is reported in ``edge``. Never pass novel-class episodes here: that would tune on the test
    classes. Ties go to the smaller values (fewer steps, smaller lr).
    """
    cfg = cfg or FewShotConfig()
    fields = list(grid)
    if not fields or not open_world_episodes:
        raise ConfigError("tune_recipe needs a non-empty grid and at least one open-world episode.")
    known = set(cfg.to_dict())
    values: dict[str, list[float]] = {}
    for name in fields:
        if name not in known or name in ("recipe", "device", "schedule", "augment", "bn_reestimate"):
            raise ConfigError(f"Cannot tune {name!r}: tune numeric FewShotConfig fields such as lr, steps, weight_decay.")
        values[name] = sorted({float(v) for v in grid[name]})
        if not values[name]:
            raise ConfigError(f"The grid of {name!r} is empty; give at least one value.")
    integer = {name: name in INTEGER_FIELDS for name in fields}
    scores: dict[tuple, float] = {}

    def key_of(combo: dict[str, float]) -> tuple:
        return tuple(combo[name] for name in fields)

    def run(combos: list[dict[str, float]]) -> None:
        todo = [c for c in combos if key_of(c) not in scores]
        if not todo:
            return
        methods = [Method("|".join(f"{k}={v:g}" for k, v in c.items()), builder,
                          recipe={k: (int(v) if integer[k] else float(v)) for k, v in c.items()}) for c in todo]
        rows = run_episodes(methods, open_world_episodes, cfg, accelerator, progress, seed, desc=desc)
        for c, m in zip(todo, methods):
            scores[key_of(c)] = sum(r["accuracy"][m.name] for r in rows) / len(rows)

    def product(vals: dict[str, list[float]]) -> list[dict[str, float]]:
        combos: list[dict[str, float]] = [{}]
        for name in fields:
            combos = [{**c, name: v} for c in combos for v in vals[name]]
        return combos

    def best() -> tuple[dict[str, float], float]:
        key = max(scores, key=lambda k: (scores[k], tuple(-v for v in k)))
        return dict(zip(fields, key)), scores[key]

    run(product(values))
    widened: dict[str, list[float]] = {name: [] for name in fields}
    rounds = {name: 0 for name in fields}
    while True:
        chosen, _ = best()
        grow = None
        for name in fields:
            if rounds[name] >= widen:
                continue
            nxt = _beyond_edge(values[name], chosen[name], integer[name])
            if nxt is None or (nxt <= 0 and name != "weight_decay" and name != "lp_steps"):
                continue
            grow = (name, float(max(nxt, 0)))
            break
        if grow is None:
            break
        name, value = grow
        rounds[name] += 1
        if value in values[name]:
            continue
        values[name] = sorted([*values[name], value])
        widened[name].append(value)
        run(product(values))
    chosen, accuracy = best()
    edge = [name for name in fields if len(values[name]) > 1 and chosen[name] in (values[name][0], values[name][-1])]
    means = [{**dict(zip(fields, k)), "accuracy": v} for k, v in sorted(scores.items())]
    chosen = {k: (int(v) if integer[k] else v) for k, v in chosen.items()}
    return TuningResult(grid=values, means=means, chosen=chosen, accuracy=accuracy, edge=edge,
                        widened={k: v for k, v in widened.items() if v}, episodes=len(open_world_episodes))


def tune_lr(
    builder: Callable[[int], IndividualModel],
    open_world_episodes: Sequence[Any],
    grid: Sequence[float] = DEFAULT_LR_GRID,
    cfg: FewShotConfig | None = None,
    accelerator: Any | None = None,
    seed: int = 0,
    progress: bool = False,
    desc: str | None = None,
) -> tuple[float, dict[float, float]]:
    """Pick the learning rate with the best mean query accuracy on ``open_world_episodes``
    (:func:`tune_recipe` on ``lr`` alone, without widening).

    Never pass novel-class episodes here: that would tune on the test classes. Returns
    ``(best_lr, {lr: mean accuracy})``; ties go to the smaller learning rate.
    """
    grid = sorted({float(lr) for lr in grid})
    if not grid or not open_world_episodes:
        raise ConfigError("tune_lr needs a non-empty lr grid and at least one open-world episode.")
    result = tune_recipe(builder, open_world_episodes, {"lr": grid}, cfg, accelerator, seed, progress, widen=0, desc=desc)
    return float(result.chosen["lr"]), {row["lr"]: row["accuracy"] for row in result.means}


def tuning_episodes(
    data: Any, open_world: Sequence[int], num_episodes: int, ways: int, shots: int, queries: int, seed: int = 0
) -> list[Any]:
    """Open-world episodes for :func:`tune_lr`, drawn with seed ``seed + 10_000`` (never the novel
    episodes' draws). ``ways`` is capped at the number of open-world classes, as the selection
    probes do; fewer than 2 open-world classes raise :class:`ConfigError` naming them."""
    from .data import sample_episodes

    open_world = [int(c) for c in open_world]
    if len(open_world) < 2:
        raise ConfigError(f"lr tuning needs at least 2 open-world classes, the split has {len(open_world)} ({open_world}); "
                          "give more with --open-world-classes, or leave --tune-lr off.")
    tune_ways = min(int(ways), len(open_world))
    if tune_ways < ways:
        logger.info(f"lr tuning: {tune_ways}-way open-world episodes (only {len(open_world)} open-world classes; "
                    f"the novel episodes stay {ways}-way)")
    return sample_episodes(data, open_world, num_episodes, tune_ways, shots, queries, seed=seed + 10_000, role="open_world")


def tune_settings(
    method: Method,
    open_world_episodes: Sequence[Any],
    cfg: FewShotConfig | None = None,
    accelerator: Any | None = None,
    seed: int = 0,
    progress: bool = False,
    desc: str | None = None,
    widen: int = 1,
) -> tuple[dict[str, Any], dict[str, float], list[str]]:
    """Pick the fit settings of a (non-fine-tuned) method from ``method.search`` on open-world episodes.

    Every combination of the searched values is run on the same episodes. When the best value of a
    numeric setting (a grid of at least two positive numbers, e.g. the L2 strengths) is the
    smallest or largest of its grid, the grid is widened by one geometric step in that direction
    and the new combinations run, up to ``widen`` times per setting, as :func:`tune_recipe` does
    for recipe fields: an under-regularised or over-regularised baseline would flatter the
    learngene. Returns ``(best settings, {"name=value,...": mean accuracy}, settings whose best
    value is still at an edge of the widened grid)``. Ties go to the combination tried first
    (grids list the stronger regularisation last, e.g. L2 strengths from small to large: ties keep
    the smaller). Never pass novel-class episodes here.
    """
    import itertools

    cfg = cfg or FewShotConfig()
    search = {k: list(v) for k, v in (method.search or {}).items()}
    if not search or not all(search.values()) or not open_world_episodes:
        raise ConfigError("tune_settings needs a method with a non-empty search and at least one open-world episode.")
    keys = list(search)

    def label(combo: dict[str, Any]) -> str:
        return ",".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in combo.items())

    means: dict[str, float] = {}
    tried: dict[str, dict[str, Any]] = {}

    def run() -> None:
        combos = [dict(zip(keys, values)) for values in itertools.product(*(search[k] for k in keys))]
        todo = [c for c in combos if label(c) not in means]
        variants = [replace(method, name=label(c), settings={**method.settings, **c}) for c in todo]
        rows = run_episodes(variants, open_world_episodes, cfg, accelerator, progress, seed, desc=desc)
        for c in todo:
            means[label(c)] = sum(r["accuracy"][label(c)] for r in rows) / len(rows)
            tried[label(c)] = c

    def best() -> dict[str, Any]:
        order = list(means)  # the order tried
        return tried[order[max(range(len(order)), key=lambda i: (means[order[i]], -i))]]

    def is_number(v: Any) -> bool:
        return isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0

    numeric = [k for k in keys if len(search[k]) >= 2 and all(is_number(v) for v in search[k])]
    run()
    rounds = dict.fromkeys(numeric, 0)
    while True:
        chosen, grow = best(), None
        for k in numeric:
            values = sorted(search[k])
            integer = all(isinstance(v, int) for v in values)
            value = _beyond_edge([float(v) for v in values], chosen[k], integer) if rounds[k] < widen else None
            if value is None:
                continue
            rounds[k] += 1
            if value > 0 and value not in values:
                grow = (k, int(value) if integer else float(value))
                break
        if grow is None:
            break
        search[grow[0]].append(grow[1])
        run()
    chosen = best()
    edge = [k for k in numeric if chosen[k] in (min(search[k]), max(search[k]))]
    return {**method.settings, **chosen}, means, edge


def load_fewshot_data(
    learngene: Any | None = None,
    dataset: str | None = None,
    *,
    image_column: str = "img",
    label_column: str = "fine_label",
    image_size: int | None = None,
    novel_classes: Sequence[int] | None = None,
    open_world_classes: Sequence[int] | None = None,
    allow_base_classes: bool = False,
) -> tuple[Any, list[int], list[int]]:
    """``(images, novel_classes, open_world_classes)`` for few-shot episodes.

    Without ``dataset`` the learngene's ``config.task_stream["dataset"]`` names the data (the
    embedded dataset when it says nothing); without ``novel_classes`` / ``open_world_classes``
    the learngene's class split gives them, or the dataset's own split for a built-in dataset
    (``dataset="digits"``: :data:`~learngene_hf.data.DIGITS_SPLIT`, images at the learngene's
    input size). Episodes are drawn from the training images of those classes (the collective
    model never trained on them). Novel or open-world classes that the collective model trained
    on (its base classes) raise :class:`DataError` unless ``allow_base_classes=True``: the
    inherited layers have seen them, so the comparison would flatter the learngene.
    """
    from .data import EMBEDDED_SOURCES, ClassSplit, builtin_split, load_arguments, load_tensors, split_classes

    stream = dict(getattr(getattr(learngene, "config", None), "task_stream", None) or {})
    if dataset is None and stream.get("dataset"):
        source, kwargs = load_arguments(stream["dataset"])
        if image_size is not None:
            kwargs["image_size"] = image_size
    elif builtin_split(dataset) is not None:  # a built-in dataset with its own class split (digits)
        source = dataset
        size = image_size or (getattr(getattr(learngene, "config", None), "preprocessing", None) or {}).get("image_size")
        kwargs = {"image_size": size} if size else {}
        stream = {"split": builtin_split(dataset).to_dict()}
    else:
        source = dataset
        kwargs = {} if dataset in EMBEDDED_SOURCES else {"image_column": image_column, "label_column": label_column}
        if image_size is not None:
            kwargs["image_size"] = image_size
    if source == "in-memory":
        raise DataError("The learngene was trained on in-memory data that cannot be reloaded; pass --dataset (dataset=...) "
                        "and --novel-classes (novel_classes=...).")
    train, _ = load_tensors(source, **kwargs)
    split = ClassSplit.from_dict(stream["split"]) if stream.get("split") else None
    if split is None and (novel_classes is None or open_world_classes is None):
        split = split_classes(train.num_classes)
    novel = [int(c) for c in (novel_classes if novel_classes is not None else split.novel)]
    open_world = [int(c) for c in (open_world_classes if open_world_classes is not None else split.open_world)]
    if not allow_base_classes:
        trained = set(int(c) for c in (split.base if split is not None else []))
        trained |= {int(c) for c in stream.get("classes") or []}
        for role, chosen in (("novel", novel), ("open-world", open_world)):
            seen = sorted(set(chosen) & trained)
            if seen:
                raise DataError(
                    f"The {role} classes {seen} are base classes the collective model trained on; a few-shot result on "
                    f"them would flatter the learngene. Choose classes outside the base classes, or pass "
                    f"--allow-base-classes (allow_base_classes=True) if you mean it."
                )
    overlap = sorted(set(novel) & set(open_world))
    if overlap:
        raise DataError(f"Classes {overlap} are both novel and open-world; learning rates would be tuned on test classes. "
                        "Give disjoint class lists.")
    return train, novel, open_world


def _collective_run_dir(learngene: Any, collective_run: str | None) -> str:
    run_dir = collective_run or (learngene.config.source or {}).get("run_dir")
    if not run_dir:
        raise ConfigError("--compare and --sizes need the collective run the learngene came from: pass --collective-run "
                          "RUN_DIR (collective_run=...); this learngene does not record config.source['run_dir'].")
    return str(run_dir)


def collective_model_of(learngene: Any, collective_run: str | None = None) -> nn.Module:
    """The collective model of the run ``learngene`` came from (``collective_run``, default its
    ``config.source["run_dir"]``)."""
    from .training import load_run

    return load_run(_collective_run_dir(learngene, collective_run)).model


def comparison_methods(
    learngene: Any,
    *,
    compare: bool = False,
    collective_run: str | None = None,
    freeze_learngene: bool = False,
    baselines: bool = True,
    blocks: bool = True,
    **individual_overrides: Any,
) -> list[Method]:
    """The methods compared by :func:`compare_methods`.

    Always ``learngene`` (the given learngene inherited) and ``scratch`` (the same architecture,
    random init). With ``compare=True``, from the collective run (``collective_run``, default the
    learngene's ``config.source["run_dir"]``) and with ``k`` = the learngene's number of layers:
    ``whole`` (every conv layer), ``last_k`` (the paper's choice), ``first_k`` and ``worst_k`` (the
    block the learngene's criterion ranks worst), and with ``baselines`` (default) the methods of
    :func:`learngene_hf.descendants.baseline_methods`: logistic regression and nearest centroid on
    the frozen features of a random descendant, of the learngene and of the whole collective model,
    and weight selection from the collective model. ``blocks=False`` leaves out the methods that
    fine-tune a whole network besides learngene and scratch (the other blocks and weight
    selection): the frozen-feature baselines stay, and cost little. Each inherited variant's
    scratch twin is not needed: ``scratch`` is the reference for the given learngene's architecture.
    """
    def from_lg(lg: Any) -> Callable[[int], IndividualModel]:
        return lambda n: IndividualModel.from_learngene(lg, n, freeze_learngene=freeze_learngene, **individual_overrides)

    methods = [
        Method("learngene", from_lg(learngene), description=f"inherits {learngene.config.layer_names} ({learngene.config.position})"),
        Method("scratch", lambda n: IndividualModel(IndividualConfig.for_learngene(learngene, n, **individual_overrides)),
               description="same architecture as 'learngene', random initialization"),
    ]
    if not compare:
        return methods
    from .criterion import DEFAULT_CRITERION, first_block, paper_block, rank_blocks
    from .learngene import Learngene
    from .training import load_run

    run_dir = _collective_run_dir(learngene, collective_run)
    run = load_run(run_dir)
    model = run.model
    n, k = model.config.num_layers, learngene.config.num_layers
    selection = dict(learngene.config.selection or {})
    criterion = selection.get("criterion") or DEFAULT_CRITERION
    candidates = {"whole": (list(range(n)), "every conv layer of the collective model"),
              f"last_{k}": (paper_block(n, k), f"the paper's choice: the last {k} conv layers"),
              f"first_{k}": (first_block(n, k), f"the first {k} conv layers")}
    if run.record is not None and n > k:
        from .criterion import layer_scores

        try:
            scores = layer_scores(run.record, criterion, threshold=selection.get("threshold"))
            ranking = rank_blocks([scores.get(name, float("nan")) for name in model.config.layer_names], k)
            candidates[f"worst_{k}"] = (ranking[-1]["layers"], f"the block the {criterion!r} criterion ranks worst")
        except Exception as err:  # noqa: BLE001 - reported, the other methods still run
            candidates[f"worst_{k}"] = None
            selection["_worst_error"] = str(err)
    source = {"run_dir": str(run_dir)}
    own_layers = [int(row.get("source_index", -1)) for row in learngene.config.layers]
    for name, entry in (candidates if blocks else {}).items():
        if entry is None:
            continue
        layers, description = entry
        if list(layers) == own_layers:  # the learngene itself: its row already reports this block
            methods[0].description += f"; the same block as {name} ({description})"
            methods[0].same_as = [*(methods[0].same_as or []), name]
            continue
        lg = Learngene.from_collective(model, layers, source=dict(source), task_stream=dict(learngene.config.task_stream or {}),
                                       preprocessing=dict(learngene.config.preprocessing or {}))
        methods.append(Method(name, from_lg(lg), description=f"{description}: {lg.config.layer_names}"))
    if baselines:
        from .descendants import baseline_methods

        methods += baseline_methods(learngene, model, weight_selection_method=blocks, **individual_overrides)
    return methods


def _with_recipe_values(method: Method, values: dict[str, Any]) -> Method:
    """``method`` training with the recipe ``values`` (chosen by tuning, or a one-value grid):
    ``lr`` becomes its lr, every other field goes into its recipe overrides."""
    lr = float(values["lr"]) if "lr" in values else method.lr
    recipe = {**(method.recipe or {}), **{k: v for k, v in values.items() if k != "lr"}}
    return replace(method, lr=lr, recipe=recipe or None)


def compare_methods(
    learngene: Any,
    episodes: Sequence[Any],
    cfg: FewShotConfig,
    *,
    methods: Sequence[Method] | None = None,
    compare: bool = False,
    collective_run: str | None = None,
    tune_lr_episodes: Sequence[Any] | None = None,
    lr_grid: Sequence[float] = DEFAULT_LR_GRID,
    tune_grid: dict[str, Sequence[float]] | None = None,
    widen: int = 1,
    accelerator: Any | None = None,
    seed: int = 0,
    progress: bool = True,
    **individual_overrides: Any,
) -> dict[str, Any]:
    """Run the learngene, scratch (and with ``compare`` the other blocks) on identical episodes.

    With ``tune_lr_episodes`` (open-world episodes, never novel ones) every method, scratch
    included, first gets its own recipe values picked by :func:`tune_recipe` from ``tune_grid``
    (default ``{"lr": lr_grid}``; e.g. ``{"lr": [...], "steps": [...]}``), the grid widened up
    to ``widen`` times where the best value sits at its edge. A grid of one value per field
    is applied to every fine-tuned method without tuning runs (the frozen-feature baselines are
    still tuned, by :func:`tune_settings`, their grids widened the same way: their fits are
    cheap). Returns the results dict that ``results.json`` holds: ``setting``, ``config``,
    ``learngene``, ``methods`` (per method: ``description``, ``lr``, ``lr_search``, ``recipe``
    (the values it trained with),
    ``tuning`` (grid, means, chosen values, ``edge``), ``edge_of_grid``, ``parameters``,
    ``accuracies`` (episode order), ``mean``, ``ci95``, ``diff_vs_scratch`` {``mean``,
    ``ci95``}) and ``episodes`` (per episode: ``index``, ``seed``, ``classes``, ``accuracy`` per
    method).
    """
    from .baselines import inheritance
    from .stats import mean_ci, paired_difference

    if methods is None:
        methods = comparison_methods(learngene, compare=compare, collective_run=collective_run, **individual_overrides)
    methods = [_as_method(m) for m in methods]
    if not episodes:
        raise ConfigError("compare_methods needs at least one episode.")
    if cfg.total_steps(int(episodes[0].support_labels.shape[0])) <= 0:
        raise ConfigError(f"steps={cfg.steps}, epochs={cfg.epochs} trains nothing: the table would compare untrained models. "
                          "Give at least one step (--steps 1 or more).")
    if len(episodes[0].classes) < 2:
        raise ConfigError(f"{len(episodes[0].classes)}-way episodes score 100% by construction; use at least 2 ways (--ways 2).")
    searches: dict[str, dict[str, float] | None] = {}
    tunings: dict[str, TuningResult] = {}
    settings_edges: dict[str, list[str]] = {}  # frozen-feature settings still at an edge of their widened grid
    if tune_lr_episodes:
        grid = dict(tune_grid) if tune_grid else {"lr": list(lr_grid)}
        tuned = []
        ep0 = tune_lr_episodes[0]
        tune_ways = len(ep0.classes)
        tune_shots = int(ep0.support_labels.shape[0]) // max(tune_ways, 1)
        grid_text = "; ".join(f"{name} " + ", ".join(f"{v:g}" for v in sorted({float(x) for x in values}))
                              for name, values in grid.items())
        fixed = {name: sorted({float(v) for v in values}) for name, values in grid.items()}
        fixed = {name: (int(v[0]) if name in INTEGER_FIELDS else v[0]) for name, v in fixed.items() if len(v) == 1}
        for i, method in enumerate(methods, start=1):
            if method.fine_tunes and len(fixed) == len(grid):  # one value per field: nothing to choose, nothing to run
                tuned.append(_with_recipe_values(method, fixed))
                continue
            if method.fine_tunes:
                what = (f"{'lr' if list(grid) == ['lr'] else 'recipe'} tuning {i}/{len(methods)}: {method.name}, "
                        f"{tune_ways}-way {tune_shots}-shot, {grid_text} on {len(tune_lr_episodes)} open-world episodes")
            elif method.search:
                values = "; ".join(f"{k} {', '.join(f'{v:g}' if isinstance(v, float) else str(v) for v in grid)}"
                                   for k, grid in method.search.items())
                what = (f"tuning {i}/{len(methods)}: {method.name}, {tune_ways}-way {tune_shots}-shot, {values} "
                        f"on {len(tune_lr_episodes)} open-world episodes")
            else:
                tuned.append(method)  # nothing to tune (e.g. nearest centroid)
                continue
            if not progress:
                logger.info(what)
            if method.fine_tunes:
                result = tune_recipe(method.builder, tune_lr_episodes, grid, method.config(cfg), accelerator, seed + 1,
                                     progress=progress, widen=widen, desc=what)
                tunings[method.name] = result
                if "lr" in result.chosen:
                    by_lr: dict[str, float] = {}
                    for row in result.means:
                        key = f"{row['lr']:g}"
                        by_lr[key] = max(by_lr.get(key, 0.0), row["accuracy"])
                    searches[method.name] = by_lr
                tuned.append(_with_recipe_values(method, result.chosen))
            else:
                best_settings, means, edge = tune_settings(method, tune_lr_episodes, cfg, accelerator, seed + 1,
                                                           progress=progress, desc=what, widen=widen)
                searches[method.name] = means
                settings_edges[method.name] = edge
                tuned.append(replace(method, settings=best_settings))
        methods = tuned
    rows = run_episodes(methods, episodes, cfg, accelerator, progress, seed)
    ways = len(episodes[0].classes)
    summary: dict[str, Any] = {}
    scratch = [r["accuracy"]["scratch"] for r in rows] if any(m.name == "scratch" for m in methods) else None
    for method in methods:
        accs = [r["accuracy"][method.name] for r in rows]
        mean, half = mean_ci(accs)
        entry: dict[str, Any] = {
            "description": method.description,
            "same_as": method.same_as,
            "kind": "fine-tuned" if method.fine_tunes else "frozen features",
            "lr": float(method.config(cfg).lr) if method.fine_tunes else None,
            "lr_search": searches.get(method.name) if method.fine_tunes else None,
            "settings": dict(method.settings) or None,
            "settings_search": None if method.fine_tunes else searches.get(method.name),
            "recipe": ({k: v for k, v in method.config(cfg).to_dict().items() if k not in ("device", "eval_batch_size")}
                       if method.fine_tunes else None),
            "tuning": tunings[method.name].to_dict() if method.name in tunings else None,
            "edge_of_grid": list(tunings[method.name].edge) if method.name in tunings else settings_edges.get(method.name, []),
            "accuracies": accs,
            "mean": mean,
            "ci95": _finite(half),
        }
        with torch.random.fork_rng(devices=[]):
            model = method.builder(ways)
        inherited = inheritance(model)
        entry["parameters"] = sum(p.numel() for p in model.parameters())  # needed at inference
        entry["inherited_parameters"] = inherited["parameters"]
        entry["inherited_bytes"] = inherited["bytes"]
        if scratch is not None and method.name != "scratch":
            d_mean, d_half = paired_difference(accs, scratch)
            entry["diff_vs_scratch"] = {"mean": d_mean, "ci95": _finite(d_half)}
        summary[method.name] = entry
    strongest = add_strongest_baseline(summary)
    shots = int(episodes[0].support_labels.shape[0]) // max(ways, 1)
    queries = int(episodes[0].query_labels.shape[0]) // max(ways, 1)
    lg = learngene.config
    return {
        "setting": {"episodes": len(rows), "ways": ways, "shots": shots, "queries": queries, "seed": seed,
                    "lr_tuned_on": "open-world classes" if tune_lr_episodes else None,
                    "lr_tuning_episodes": len(tune_lr_episodes or []),
                    "recipe": cfg.recipe,
                    "tune_grid": (dict(tune_grid) if tune_grid else {"lr": list(lr_grid)}) if tune_lr_episodes else None},
        "config": cfg.to_dict(),
        "learngene": {"layers": lg.layer_names, "position": lg.position, "source": dict(lg.source or {}),
                      "sizes": dict(lg.sizes or {})},
        "methods": summary,
        "strongest_baseline": strongest,
        "episodes": rows,
    }


def add_strongest_baseline(methods: dict[str, dict[str, Any]]) -> dict[str, Any] | None:
    """Find the strongest method that inherits nothing and add every other method's paired
    difference to it.

    Among the methods whose ``inherited_parameters`` is 0 (scratch, classifiers on random
    features...), the one with the best mean accuracy is the baseline a learngene has to beat.
    Every other method gets ``diff_vs_strongest_baseline`` = {``baseline``, ``mean``, ``ci95``}
    (paired over the episodes, in accuracy units). Returns ``{"name", "mean", "candidates"}``, or
    ``None`` when no method inherits nothing.
    """
    from .stats import paired_difference

    candidates = [name for name, m in methods.items() if int(m.get("inherited_parameters", 0) or 0) == 0]
    if not candidates:
        return None
    best = max(candidates, key=lambda name: methods[name]["mean"])
    reference = methods[best]["accuracies"]
    for name, m in methods.items():
        if name == best:
            continue
        d_mean, d_half = paired_difference(m["accuracies"], reference)
        m["diff_vs_strongest_baseline"] = {"baseline": best, "mean": d_mean, "ci95": _finite(d_half)}
    return {"name": best, "mean": methods[best]["mean"], "candidates": candidates}


def _finite(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


def method_label(name: str, entry: dict[str, Any]) -> str:
    """``name``, plus the ``--compare`` blocks it covers: ``"learngene (= first_3, worst_3)"``."""
    return f"{name} (= {', '.join(entry['same_as'])})" if entry.get("same_as") else name


def format_table(results: dict[str, Any]) -> str:
    """A markdown table: method, lr (fine-tuned) or fit settings (frozen features), mean accuracy +/- 95%
    CI, paired difference to scratch (points), inherited / all parameters (all = what inference
    needs) and inherited bytes."""
    s = results["setting"]
    lines = [
        f"{s['ways']}-way {s['shots']}-shot, {s['queries']} queries per class, {s['episodes']} episodes "
        f"(accuracy in %, mean +/- 95% CI)",
        "",
        "| method | lr | accuracy | vs scratch | vs strongest baseline | inherited / all parameters | inherited bytes |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]

    def pm(mean: float, half: float | None) -> str:
        return f"{100 * mean:.1f} +/- {100 * half:.1f}" if half is not None else f"{100 * mean:.1f}"

    edges = []
    for name, m in results["methods"].items():
        diff = m.get("diff_vs_scratch")
        vs = ("+" if diff["mean"] >= 0 else "") + pm(diff["mean"], diff["ci95"]) if diff else "-"
        label = method_label(name, m)
        sizes = f"{m.get('inherited_parameters', 0):,} / {m['parameters']:,}"
        fit = _fit_label(m)
        if m.get("edge_of_grid"):
            fit += " (edge)"
            chosen = (m.get("tuning") or {}).get("chosen") or m.get("settings") or {}
            edges.append(f"{name}: " + ", ".join(f"{f}={chosen.get(f, '?'):g}" if isinstance(chosen.get(f), (int, float))
                                                  else f for f in m["edge_of_grid"]))
        strong = m.get("diff_vs_strongest_baseline")
        vs_strong = ("+" if strong["mean"] >= 0 else "") + pm(strong["mean"], strong["ci95"]) if strong else "-"
        lines.append(f"| {label} | {fit} | {pm(m['mean'], m['ci95'])} | {vs} | {vs_strong} | {sizes} | "
                     f"{m.get('inherited_bytes', 0):,} |")
    best = results.get("strongest_baseline")
    if best:
        lines += ["", f"vs strongest baseline: paired difference in points to {best['name']}, the best of the methods "
                  f"that inherit nothing ({', '.join(best['candidates'])})."]
    if edges:
        lines += ["", "(edge): the chosen value is the smallest or largest of its tuning grid, even after widening; "
                  "a wider grid may do better (" + "; ".join(edges) + ")."]
    return "\n".join(lines)


def _fit_label(entry: dict[str, Any]) -> str:
    """The lr of a fine-tuned method, or the fit settings of a frozen-feature one (``l2=0.01``)."""
    if entry.get("lr") is not None:
        return f"{entry['lr']:g}"
    settings = entry.get("settings") or {}
    return ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in settings.items()) or "-"


def write_results(results: dict[str, Any], output_dir: str, plot: bool = True) -> dict[str, str]:
    """Write ``results.json``, ``results.md`` (the table) and ``accuracy.png`` (atomically) to
    ``output_dir``; returns their paths."""
    from pathlib import Path

    from .io import write_json_atomic, write_text_atomic

    out = Path(output_dir)
    paths = {"results": str(write_json_atomic(out / "results.json", results)),
             "table": str(write_text_atomic(out / "results.md", format_table(results) + "\n"))}
    if plot:
        from .plots.accuracy import plot_method_accuracy

        labels = {name: method_label(name, m) for name, m in results["methods"].items()}
        paths["plot"] = plot_method_accuracy(results, out / "accuracy.png", labels=labels)
    return paths
