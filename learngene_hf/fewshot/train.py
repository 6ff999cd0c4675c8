"""The recipe's one-model engine: one fresh individual model trained on a support set, scored on a query set.

* :func:`train_individual` / :func:`evaluate`: train one model with the recipe
  (:class:`~learngene_hf.fewshot.config.FewShotConfig`) on a support set, score it on a query set.
* The recipe's pieces: :func:`support_batches` (the batch indices of every step),
  :func:`augment_batch` / :func:`augment_offsets` (random crop + flip), :func:`reestimate_batchnorm`
  (inherited BatchNorm statistics), :func:`parameter_groups` ("head" / "body"), :func:`normalize` /
  :func:`model_stats` (uint8 images to the model's input).
* :func:`build_individual`, :func:`build_for_episode` (a fresh model under the episode's seed,
  :func:`episode_seed`) and :func:`run_method_on_episode` (build, fit and score on one episode).

Every method sees exactly the same episodes, and within an episode the same seed: the fresh layers
of the learngene model and of the scratch model start from the same random draw, and the batches
and augmentations are identical. Many descendants at once, with the same results:
:mod:`~learngene_hf.fewshot.stacked`; methods over episodes: :mod:`~learngene_hf.fewshot.runner`.
"""

from __future__ import annotations

import hashlib
from typing import Any, Callable, Sequence

import torch
from torch import nn

from ..errors import DataError
from ..models.individual import IndividualConfig, IndividualModel
from .config import FewShotConfig
from .linear import STD_FLOOR, feature_stats, fit_logistic, folded


# ---------------------------------------------------------------------- helpers
def episode_seed(seed: int, episode_index: int, episode_seed_value: int = 0) -> int:
    """A 63-bit seed from (run seed, episode index, episode seed); the same for every method."""
    digest = hashlib.sha256(f"{int(seed)}:{int(episode_index)}:{int(episode_seed_value)}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def normalize(
    images: torch.Tensor,
    device: torch.device,
    mean: Sequence[float],
    std: Sequence[float],
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """uint8 ``images`` [N, C, H, W] -> float [N, C, H, W] of ``dtype`` on ``device``: ``(x / 255 - mean) / std``
    per channel (:class:`DataError` for anything but a 4-d uint8 tensor)."""
    if not isinstance(images, torch.Tensor) or images.dtype != torch.uint8 or images.dim() != 4:
        got = f"{images.dtype} {tuple(images.shape)}" if isinstance(images, torch.Tensor) else type(images).__name__
        raise DataError(f"Few-shot images must be uint8 tensors [N, C, H, W], got {got}.")
    x = images.to(device=device, dtype=dtype) / 255.0
    m = torch.tensor(list(mean), dtype=dtype, device=device).view(1, -1, 1, 1)
    s = torch.tensor(list(std), dtype=dtype, device=device).view(1, -1, 1, 1)
    return (x - m) / s


def _model_dtype(model: nn.Module) -> torch.dtype:
    return next(model.parameters()).dtype


def model_stats(model: nn.Module) -> tuple[list[float], list[float]]:
    """The per-channel ``(image_mean, image_std)`` of ``model.config`` (0.5 each when it gives none)."""
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
def reestimate_batchnorm(
    model: IndividualModel, images: torch.Tensor, batch_size: int = 32, every_layer: bool = False
) -> None:
    """Reset the inherited BatchNorm running statistics (every BatchNorm layer's with
    ``every_layer``) and re-estimate them from ``images``.

    ``images`` [N, C, H, W] float (normalized, on the model's device). The model runs in train
    mode (fresh layers normalize with batch statistics, as during training); only the chosen
    BatchNorm layers update, with a cumulative average over the batches. Other BatchNorm layers
    keep their statistics; the model's train/eval mode is restored.
    """
    chosen = {id(m) for m in (model.modules() if every_layer else model.inherited_batchnorms())
              if isinstance(m, nn.modules.batchnorm._BatchNorm)}  # fmt: skip
    if not chosen:
        return
    modes = [(m, m.training) for m in model.modules()]
    momenta = []
    try:
        for m in model.modules():
            m.training = True  # bypass IndividualModel.train: frozen blocks must update here too
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                momenta.append((m, m.momentum))
                if id(m) in chosen:
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


def classifier_module(model: nn.Module) -> nn.Linear:
    """The linear layer that makes the logits: ``model.classifier`` (VGG descendant) or the ViT's ``head``."""
    return model.classifier if hasattr(model, "classifier") else model.vit.head


@torch.no_grad()
def classifier_inputs(model: nn.Module, images: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """What the classifier reads, [N, F], for normalized ``images`` [N, C, H, W], in eval mode
    (the model's mode is restored): a VGG descendant's neck output, a ViT's pre-logits."""
    was_training = model.training
    model.eval()
    try:
        out = []
        for start in range(0, images.shape[0], batch_size):
            x = images[start : start + batch_size]
            if hasattr(model, "classifier"):
                out.append(model.individual(x).pooler_output)
            else:
                out.append(model.vit.forward_head(model.vit.forward_features(x), pre_logits=True))
        return torch.cat(out)
    finally:
        model.train(was_training)


@torch.no_grad()
def fit_classifier(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, l2: float) -> None:
    """Set the classifier to the L2 logistic regression (``l2``) on the standardized features it reads
    from ``images`` [N, C, H, W] (normalized) with ``labels`` [N], the standardization folded into
    its weights: the model then classifies as a linear probe on those features does."""
    features = classifier_inputs(model, images)
    mean, std = feature_stats(features, STD_FLOOR)
    layer = classifier_module(model)
    weight, bias = fit_logistic((features - mean) / std, labels, layer.out_features, l2)
    weight, bias = folded(weight, bias, mean, std)
    layer.weight.copy_(weight.to(layer.weight))
    layer.bias.copy_(bias.to(layer.bias))


def parameter_groups(model: IndividualModel) -> dict[str, list[nn.Parameter]]:
    """The trainable parameters of ``model`` by recipe group: ``"head"`` (MLP neck and
    classifier of a VGG descendant; whatever ``model.head_modules()`` returns for other families,
    e.g. a ViT descendant's classifier), ``"inherited"`` (the blocks a VGG descendant inherited
    from its learngene) and ``"body"`` (everything else: fresh conv blocks, transformer blocks,
    embeddings); frozen parameters are in none."""
    heads = model.head_modules() if hasattr(model, "head_modules") else (model.neck, model.classifier)
    head = {id(p) for module in heads for p in module.parameters()}
    blocks = (
        model.inherited_blocks()
        if getattr(model, "has_learngene", False) and hasattr(model, "inherited_blocks")
        else []
    )
    inherited = {id(p) for block in blocks for p in block.parameters()}
    groups: dict[str, list[nn.Parameter]] = {"head": [], "body": [], "inherited": []}
    for p in model.parameters():
        if p.requires_grad:
            groups["head" if id(p) in head else "inherited" if id(p) in inherited else "body"].append(p)
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
    model: IndividualModel, support_images: torch.Tensor, support_labels: torch.Tensor, cfg: FewShotConfig, seed: int
) -> IndividualModel:
    """Train ``model`` on a support set with the recipe ``cfg`` and return it (in eval mode, on
    ``cfg``'s device).

    The run, in order: ``torch.manual_seed(seed)`` (dropout) inside a forked RNG; BatchNorm
    re-estimation of the inherited blocks (``cfg.bn_reestimate``; of every block with
    ``cfg.lp_init``); with ``cfg.lp_init`` the classifier fitted by :func:`fit_classifier`; one
    SGD optimizer with a ``"head"``, a ``"body"`` and an ``"inherited"`` parameter group (see
    :func:`parameter_groups`); then for every
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
            f"{num_labels} outputs; use local labels 0..num_labels-1 and build the model with "
            f"num_labels={int(support_labels.max()) + 1}."
        )
    device = cfg.resolved_device()
    model.to(device)
    x = normalize(support_images, device, *model_stats(model), dtype=_model_dtype(model))
    y = support_labels.to(device=device, dtype=torch.int64)
    generator = torch.Generator().manual_seed(int(seed))
    devices = [device.index or 0] if device.type == "cuda" else []
    n = x.shape[0]
    total = cfg.total_steps(n)
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(int(seed))
        if cfg.lp_init or (cfg.bn_reestimate and model.has_learngene):
            reestimate_batchnorm(model, x, cfg.batch_size, every_layer=cfg.lp_init)
        if cfg.lp_init:
            fit_classifier(model, x, y, cfg.lp_l2)
        groups = parameter_groups(model)
        names = [name for name in ("head", "body", "inherited") if groups[name]]
        optimizer = torch.optim.SGD(
            [{"params": groups[name], "lr": cfg.group_lr(name, 0, total)} for name in names],
            lr=cfg.lr,
            momentum=cfg.momentum,
            weight_decay=cfg.weight_decay,
        )
        # under an fp16 autocast (accelerate's mixed precision) scale the loss so small gradients survive
        fp16 = torch.is_autocast_enabled(device.type) and torch.get_autocast_dtype(device.type) == torch.float16
        scaler = torch.amp.GradScaler(device.type) if fp16 else None
        frozen = [p for name in ("body", "inherited") for p in groups[name]] if cfg.lp_steps > 0 else []
        body_frozen = bool(frozen)
        for p in frozen:
            p.requires_grad_(False)
        model.train()
        try:
            for step, idx in enumerate(support_batches(n, cfg, generator)):
                if body_frozen and step >= cfg.lp_steps:
                    for p in frozen:
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
                for p in frozen:
                    p.requires_grad_(True)
    model.eval()
    return model


@torch.no_grad()
def evaluate(model: IndividualModel, images: torch.Tensor, labels: torch.Tensor, cfg: FewShotConfig) -> float:
    """Accuracy (0..1) of ``model`` in eval mode on uint8 ``images`` [N, C, H, W] with int64 ``labels`` [N]."""
    if labels.shape[0] != images.shape[0] or images.shape[0] == 0:
        raise DataError(
            f"evaluate needs as many labels as images (and at least one), got {images.shape[0]} and {labels.shape[0]}."
        )
    device = cfg.resolved_device()
    model.to(device).eval()
    mean, std = model_stats(model)
    correct = 0
    for start in range(0, images.shape[0], cfg.eval_batch_size):
        x = normalize(images[start : start + cfg.eval_batch_size], device, mean, std, dtype=_model_dtype(model))
        pred = model(x).logits.argmax(-1).cpu()
        correct += int((pred == labels[start : start + cfg.eval_batch_size].cpu()).sum())
    return correct / images.shape[0]


def build_individual(
    learngene: Any | None, num_labels: int, *, architecture_of: Any | None = None, **overrides: Any
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
