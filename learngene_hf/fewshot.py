"""Few-shot training of individual models: one fresh model per episode and method, on tensors.

* :class:`FewShotConfig`: the schedule (paper defaults: SGD lr 5e-3, momentum 0.9, weight decay
  5e-4, 30 epochs, batch 32), augmentation, BatchNorm re-estimation, device.
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

import hashlib
import math
from dataclasses import asdict, dataclass
from typing import Any, Callable, Sequence

import torch
from torch import nn

from .errors import ConfigError, DataError
from .individual import IndividualConfig, IndividualModel


@dataclass
class FewShotConfig:
    """Schedule of one few-shot training run.

    Attributes:
        lr: SGD learning rate (paper: 5e-3).
        epochs: passes over the support set (paper: 30).
        batch_size: support images per step (paper: 32).
        momentum / weight_decay: SGD settings (paper: 0.9 / 5e-4).
        augment: random crop (4-pixel zero padding) + horizontal flip of support images.
        bn_reestimate: before training, reset the inherited BatchNorm running statistics and
            re-estimate them on the support images (cumulative average). ``False`` keeps the
            collective model's statistics.
        device: torch device ("cpu", "cuda", ...); ``None`` picks CUDA when available.
        eval_batch_size: images per forward pass in :func:`evaluate`.
    """

    lr: float = 5e-3
    epochs: int = 30
    batch_size: int = 32
    momentum: float = 0.9
    weight_decay: float = 5e-4
    augment: bool = True
    bn_reestimate: bool = True
    device: str | None = None
    eval_batch_size: int = 256

    def __post_init__(self) -> None:
        if not self.lr > 0:
            raise ConfigError(f"lr must be positive, got {self.lr}.")
        if self.epochs < 0:
            raise ConfigError(f"epochs must be >= 0, got {self.epochs}.")
        if self.batch_size <= 0 or self.eval_batch_size <= 0:
            raise ConfigError(f"batch sizes must be positive, got batch_size={self.batch_size}, eval_batch_size={self.eval_batch_size}.")
        if self.momentum < 0 or self.weight_decay < 0:
            raise ConfigError(f"momentum and weight_decay must be >= 0, got {self.momentum}, {self.weight_decay}.")

    def resolved_device(self) -> torch.device:
        """The device to train on."""
        if self.device is not None:
            return torch.device(self.device)
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# ---------------------------------------------------------------------- helpers
def episode_seed(seed: int, episode_index: int, episode_seed_value: int = 0) -> int:
    """A 63-bit seed from (run seed, episode index, episode seed); the same for every method."""
    digest = hashlib.sha256(f"{int(seed)}:{int(episode_index)}:{int(episode_seed_value)}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def _normalize(images: torch.Tensor, device: torch.device, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    if not isinstance(images, torch.Tensor) or images.dtype != torch.uint8 or images.dim() != 4:
        got = f"{images.dtype} {tuple(images.shape)}" if isinstance(images, torch.Tensor) else type(images).__name__
        raise DataError(f"Few-shot images must be uint8 tensors [N, C, H, W], got {got}.")
    x = images.to(device=device, dtype=torch.float32) / 255.0
    m = torch.tensor(list(mean), dtype=torch.float32, device=device).view(1, -1, 1, 1)
    s = torch.tensor(list(std), dtype=torch.float32, device=device).view(1, -1, 1, 1)
    return (x - m) / s


def _model_stats(model: nn.Module) -> tuple[list[float], list[float]]:
    config = getattr(model, "config", None)
    mean = getattr(config, "image_mean", None) or [0.5, 0.5, 0.5]
    std = getattr(config, "image_std", None) or [0.5, 0.5, 0.5]
    return list(mean), list(std)


def augment_batch(x: torch.Tensor, generator: torch.Generator, padding: int = 4) -> torch.Tensor:
    """Random crop after ``padding`` zero pixels on each side, then random horizontal flip.

    ``x`` [B, C, H, W] float -> [B, C, H, W]; draws from ``generator`` (CPU) only.
    """
    b, _, h, w = x.shape
    padded = nn.functional.pad(x, (padding, padding, padding, padding))
    dy = torch.randint(0, 2 * padding + 1, (b,), generator=generator).tolist()
    dx = torch.randint(0, 2 * padding + 1, (b,), generator=generator).tolist()
    flip = torch.rand(b, generator=generator).lt(0.5).tolist()
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


def train_individual(
    model: IndividualModel,
    support_images: torch.Tensor,
    support_labels: torch.Tensor,
    cfg: FewShotConfig,
    seed: int,
) -> IndividualModel:
    """Train ``model`` on a support set and return it (in eval mode, on ``cfg``'s device).

    Args:
        model: a fresh :class:`IndividualModel` (from a learngene or from scratch).
        support_images: uint8 [N, C, H, W].
        support_labels: int64 [N], local labels ``0..num_labels-1``.
        cfg: the schedule.
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
    x = _normalize(support_images, device, *_model_stats(model))
    y = support_labels.to(device=device, dtype=torch.int64)
    generator = torch.Generator().manual_seed(int(seed))
    devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(int(seed))
        if cfg.bn_reestimate and model.has_learngene:
            reestimate_batchnorm(model, x, cfg.batch_size)
        params = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
        model.train()
        n = x.shape[0]
        for _ in range(cfg.epochs):
            order = torch.randperm(n, generator=generator).to(device)
            for start in range(0, n, cfg.batch_size):
                idx = order[start : start + cfg.batch_size]
                if idx.numel() < 2 and n >= 2:
                    continue  # a single image gives degenerate BatchNorm statistics
                batch = x[idx]
                if cfg.augment:
                    batch = augment_batch(batch, generator)
                loss = model(batch, labels=y[idx]).loss
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
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
        x = _normalize(images[start : start + cfg.eval_batch_size], device, mean, std)
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


def run_method_on_episode(
    builder: Callable[[int], IndividualModel], episode: Any, cfg: FewShotConfig, seed: int = 0
) -> float:
    """Build a fresh model with ``builder(ways)`` under the episode's seed, train it on the support
    set, and return its query accuracy."""
    ways = len(episode.classes)
    s = episode_seed(seed, episode.index, getattr(episode, "seed", 0))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(s)
        model = builder(ways)
    train_individual(model, episode.support_images, episode.support_labels, cfg, s)
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

    return [run_method_on_episode(builder, episode, cfg, seed) for episode in episodes]
