"""Many few-shot descendants trained at once, and any list of descendant jobs run.

:func:`train_and_evaluate_stacked` trains and scores one stack of N descendants
(:mod:`~learngene_hf.fewshot.stacks`: the stacked networks) with the same results as training them
one at a time (:mod:`~learngene_hf.fewshot.train`):

* each model draws its batch order, its augmentation (:func:`augment_stacked`) and its dropout masks
  from its own generators, seeded exactly as :func:`~learngene_hf.fewshot.train.train_individual`
  seeds them, so a stacked descendant sees the same data, order and randomness it would see alone
  (dropout masks are drawn on the CPU: on CUDA the one-at-a-time path draws them from the CUDA
  generator, so there the two paths are equal in distribution, not bit for bit);
* the recipe (:class:`~learngene_hf.fewshot.config.FewShotConfig`) is followed step for step:
  BatchNorm re-estimation, the LP-FT phase (body without gradients), label smoothing, and one SGD
  (momentum, weight decay) step per step in which each model's head and body get the learning
  rates of its own recipe's schedule (models may differ in lr, head lr scale, warm-up, schedule;
  :func:`recipe_key`). A ViT has no BatchNorm to re-estimate and no dropout.

:func:`run_descendants` takes any list of :class:`Descendant` jobs (:func:`descendants_for`: one per
method and episode), builds their models lazily, groups those that can share a stack
(:func:`~learngene_hf.fewshot.stacks.stack_key`), and falls back to one-at-a-time training for
models it cannot stack. ``FewShotConfig(stack=False)`` (``--no-stack``) turns stacking off everywhere.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterable, Sequence

import torch
from torch import nn
from torch.nn import functional as F

from ..errors import ConfigError, DataError
from ..models.individual import IndividualModel
from .config import FewShotConfig
from .linear import STD_FLOOR, feature_stats, fit_logistic, folded
from .stacks import StackedIndividuals, StackedViTs, make_stack, stack_key, to_channels
from .train import (
    augment_offsets,
    build_for_episode,
    evaluate,
    model_stats,
    normalize,
    run_method_on_episode,
    support_batches,
    train_individual,
)


def augment_stacked(x: torch.Tensor, generators: Sequence[torch.Generator], padding: int = 4) -> torch.Tensor:
    """:func:`~learngene_hf.fewshot.train.augment_batch` for every model at once.

    ``x`` ``[N, B, C, H, W]``; model ``i`` draws its crops and flips from ``generators[i]`` exactly
    as ``augment_batch`` would, and the crops are gathered in one indexing operation.
    """
    n, b, c, h, w = x.shape
    offsets = [augment_offsets(b, g, padding) for g in generators]
    dy = torch.tensor([o[0] for o in offsets], device=x.device).view(-1)
    dx = torch.tensor([o[1] for o in offsets], device=x.device).view(-1)
    flip = torch.tensor([o[2] for o in offsets], device=x.device).view(-1)
    padded = F.pad(x.reshape(n * b, c, h, w), (padding, padding, padding, padding))
    rows = dy[:, None] + torch.arange(h, device=x.device)
    cols = torch.arange(w, device=x.device).expand(n * b, w)
    cols = dx[:, None] + torch.where(flip[:, None], cols.flip(1), cols)
    index = torch.arange(n * b, device=x.device)[:, None, None]
    out = padded[index, :, rows[:, :, None], cols[:, None, :]]  # [N*B, H, W, C]
    return out.permute(0, 3, 1, 2).reshape(n, b, c, h, w)


def _dropout_masks(
    stack: StackedIndividuals | StackedViTs,
    batch: int,
    generators: Sequence[torch.Generator | None],
    dtype: torch.dtype,
    device: torch.device,
) -> list[torch.Tensor | None]:
    """One ``[N, B, H]`` mask per dropout layer, model ``i``'s drawn from ``generators[i]`` as
    ``torch.nn.functional.dropout`` draws it on CPU (``bernoulli_(1 - p)``, then ``/ (1 - p)``);
    a model without a generator gets ones (its outputs are not used)."""
    masks: list[torch.Tensor | None] = []
    for i, p in enumerate(stack.dropouts):
        if p == 0.0:
            masks.append(None)
            continue
        width = stack.lin_weight[i].shape[1]
        rows = []
        for g in generators:
            if g is None:
                rows.append(torch.ones(batch, width, dtype=dtype))
            elif p == 1.0:
                rows.append(torch.zeros(batch, width, dtype=dtype))
            else:
                rows.append(torch.empty(batch, width, dtype=dtype).bernoulli_(1 - p, generator=g).div_(1 - p))
        masks.append(torch.stack(rows).to(device))
    return masks


# ---------------------------------------------------------------------- training one stack
#: Recipe fields that only set learning rates: descendants that differ in them share a stack.
LR_ONLY_FIELDS = frozenset(
    {"recipe", "lr", "head_lr_scale", "inherited_lr_scale", "warmup_steps", "schedule", "final_lr_scale", "stack_size"}
)


def recipe_key(cfg: FewShotConfig) -> tuple:
    """Configs with equal keys train in one stack: everything but the learning rates must agree
    (steps, batch size, LP steps, momentum, weight decay, label smoothing, augmentation...)."""
    return tuple(sorted((k, v) for k, v in cfg.to_dict().items() if k not in LR_ONLY_FIELDS))


def _check_stack_inputs(
    models: Sequence[IndividualModel], episodes: Sequence[Any], seeds: Sequence[int], cfgs: Sequence[FewShotConfig]
) -> None:
    """What :func:`train_and_evaluate_stacked` needs: one episode, seed and recipe per model, recipes
    equal up to the learning rates, episodes of one shape, labels within every model's outputs."""
    n_models = len(models)
    if not (n_models == len(episodes) == len(seeds) == len(cfgs)) or n_models == 0:
        raise ConfigError(
            f"train_and_evaluate_stacked needs one episode, seed and recipe per model, got {n_models} "
            f"models, {len(episodes)} episodes, {len(seeds)} seeds, {len(cfgs)} recipes."
        )
    if len({recipe_key(c) for c in cfgs}) != 1:
        raise ConfigError(
            "Stacked descendants must share their recipe up to the learning rates (recipe_key()); "
            "train the others in their own stack."
        )
    sizes = {(tuple(ep.support_images.shape), tuple(ep.query_images.shape)) for ep in episodes}
    if len(sizes) != 1:
        raise ConfigError(f"Stacked episodes must share support and query shapes, got {sorted(sizes)}.")
    for model, ep in zip(models, episodes):
        num_labels = int(model.config.num_labels)
        labels = ep.support_labels
        if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= num_labels):
            raise DataError(
                f"support labels span {int(labels.min())}..{int(labels.max())} but the model has "
                f"{num_labels} outputs; use local labels 0..num_labels-1."
            )


def train_and_evaluate_stacked(
    models: Sequence[IndividualModel],
    episodes: Sequence[Any],
    seeds: Sequence[int],
    cfgs: Sequence[FewShotConfig],
    write_back: bool = False,
) -> list[float]:
    """Train model ``i`` on ``episodes[i]``'s support set with recipe ``cfgs[i]`` and seed
    ``seeds[i]`` (all at once), and return each model's query accuracy.

    Same result as ``train_individual(models[i], ..., cfgs[i], seeds[i])`` then
    :func:`~learngene_hf.fewshot.train.evaluate` for every ``i`` (up to float rounding of the grouped
    kernels): the same batches, augmentation and dropout masks, BatchNorm re-estimation, LP-FT
    phase, label smoothing, and an SGD step per step in which each model's head and body get the
    learning rates of its own recipe's schedule. The recipes may differ only in their learning
    rates (:func:`recipe_key`); every episode must have as many support and query images as the
    first. ``write_back`` copies the trained weights into ``models`` (otherwise only the
    accuracies come back).
    """
    _check_stack_inputs(models, episodes, seeds, cfgs)
    n_models = len(models)
    cfg = cfgs[0]
    device = cfg.resolved_device()
    for model in models:
        model.to(device)
    stack = make_stack(models)
    dtype = stack.dtype
    x = torch.stack(
        [normalize(ep.support_images, device, *model_stats(m), dtype=dtype) for m, ep in zip(models, episodes)]
    )
    y = torch.stack([ep.support_labels.to(device=device, dtype=torch.int64) for ep in episodes])
    n = x.shape[1]
    total = cfg.total_steps(n)
    batch_gens = [torch.Generator().manual_seed(int(s)) for s in seeds]
    # train_individual seeds the global RNG with the episode seed: dropout draws from it
    dropout_gens = [torch.Generator().manual_seed(int(s)) for s in seeds]

    if isinstance(stack, StackedIndividuals):  # ViTs have no BatchNorm
        active = [cfg.lp_init or (cfg.bn_reestimate and m.has_learngene) for m in models]
        _reestimate_batchnorm(
            stack, x, cfg.batch_size, [g if a else None for a, g in zip(active, dropout_gens)], cfg.lp_init
        )
    if cfg.lp_init:
        _fit_classifiers(stack, x, y, float(cfg.lp_l2))

    groups = {name: tensors for name, tensors in stack.parameter_groups().items() if tensors}
    roles = {name: stack.roles(name) for name in groups}
    lp_steps = int(cfg.lp_steps)
    frozen = [p for name, tensors in groups.items() if name != "head" for p in tensors] if lp_steps > 0 else []
    body_frozen = bool(frozen)
    for p in frozen:  # LP-FT: the head trains alone first
        p.requires_grad_(False)
    buffers: dict[int, torch.Tensor] = {}
    try:
        for step, idxs in enumerate(zip(*(support_batches(n, cfg, g) for g in batch_gens))):
            if body_frozen and step >= lp_steps:
                for p in frozen:
                    p.requires_grad_(True)
                body_frozen = False
            idx = torch.stack(idxs).to(device)
            batch = torch.gather(x, 1, idx[:, :, None, None, None].expand(-1, -1, *x.shape[2:]))
            if cfg.augment:
                batch = augment_stacked(batch, batch_gens, int(cfg.crop_padding))
            masks = _dropout_masks(stack, idx.shape[1], dropout_gens, dtype, device)
            logits = stack.logits(batch, train=True, dropout_masks=masks)
            per_example = F.cross_entropy(
                logits.reshape(-1, logits.shape[-1]),
                torch.gather(y, 1, idx).reshape(-1),
                reduction="none",
                label_smoothing=float(cfg.label_smoothing),
            )
            loss = per_example.view(n_models, -1).mean(1).sum()  # each model's own mean loss
            for tensors in groups.values():
                for p in tensors:
                    p.grad = None
            loss.backward()
            rates = {name: [float(c.group_lr(r, step, total)) for c, r in zip(cfgs, roles[name])] for name in groups}
            _sgd_step(stack, groups, buffers, rates, cfg.momentum, cfg.weight_decay)
    finally:
        if body_frozen:
            for p in frozen:
                p.requires_grad_(True)

    accuracy = _evaluate_stacked(stack, models, episodes, cfg, device, dtype)
    if write_back:
        stack.write_back()
    for model in models:
        model.eval()
    return accuracy


@torch.no_grad()
def _sgd_step(
    stack: StackedIndividuals | StackedViTs,
    groups: dict[str, list[torch.Tensor]],
    buffers: dict[int, torch.Tensor],
    rates: dict[str, list[float]],
    momentum: float,
    weight_decay: float,
) -> None:
    """``torch.optim.SGD``'s update (same operations, same order) with one learning rate per
    group and model; a tensor without a gradient (the body during LP steps) is skipped and gets no
    momentum state, as in SGD."""
    for name, tensors in groups.items():
        lrs = rates[name]
        same = all(lr == lrs[0] for lr in lrs)
        steps = (
            None
            if same or not tensors
            else torch.tensor([-lr for lr in lrs], dtype=tensors[0].dtype, device=tensors[0].device)
        )
        for p in tensors:
            grad = p.grad
            if grad is None:
                continue
            if weight_decay != 0:
                grad = grad.add(p, alpha=weight_decay)
            if momentum != 0:
                buf = buffers.get(id(p))
                if buf is None:
                    buf = buffers[id(p)] = grad.detach().clone()
                else:
                    buf.mul_(momentum).add_(grad)
                grad = buf
            if same:
                p.add_(grad, alpha=-lrs[0])
            else:  # one kernel for all models (a loop over them costs N launches per tensor on a GPU)
                rows = stack.per_model(p)
                rows.add_(stack.per_model(grad) * steps.view(-1, *([1] * (rows.dim() - 1))))


@torch.no_grad()
def _fit_classifiers(stack: StackedIndividuals | StackedViTs, x: torch.Tensor, y: torch.Tensor, l2: float) -> None:
    """:func:`~learngene_hf.fewshot.train.fit_classifier` for every model of the stack: ``x``
    ``[N, n, C, H, W]`` (normalized support images), ``y`` ``[N, n]``."""
    features = stack.classifier_inputs(x)
    num_labels = int(stack.models[0].config.num_labels)
    for m in range(stack.n):
        mean, std = feature_stats(features[m], STD_FLOOR)
        weight, bias = fit_logistic((features[m] - mean) / std, y[m], num_labels, l2)
        weight, bias = folded(weight, bias, mean, std)
        stack.set_classifier(m, weight.to(stack.dtype), bias.to(stack.dtype))


@torch.no_grad()
def _reestimate_batchnorm(
    stack: StackedIndividuals,
    x: torch.Tensor,
    batch_size: int,
    dropout_gens: Sequence[torch.Generator | None],
    every_layer: bool = False,
) -> None:
    """:func:`~learngene_hf.fewshot.train.reestimate_batchnorm` for the models with a generator (those
    with a learngene, or every model with ``FewShotConfig.lp_init``): their inherited BatchNorm
    layers (every layer with ``every_layer``) restart and average over the support batches; every
    other running statistic, and every statistic of the other models, stays."""
    active = [g is not None for g in dropout_gens]
    if not any(active):
        return
    saved = [
        (rm.clone(), rv.clone(), nbt.clone())
        for rm, rv, nbt in zip(stack.running_mean, stack.running_var, stack.batches_tracked)
    ]
    reset: list[list[bool]] = []
    for i, width in enumerate(stack.widths):
        flags = [active[m] and (every_layer or i in stack.inherited[m]) for m in range(stack.n)]
        reset.append(flags)
        for m, flag in enumerate(flags):
            if flag:
                stack.running_mean[i][m * width : (m + 1) * width].zero_()
                stack.running_var[i][m * width : (m + 1) * width].fill_(1.0)
                stack.batches_tracked[i][m] = 0
    # during the pass every layer is in train mode (frozen blocks included); inherited layers use a
    # cumulative average (factor 1/k for batch k), the others a zero momentum (unchanged)
    modes = stack.bn_train_mode
    stack.bn_train_mode = [True] * len(modes)
    count = 0
    try:
        for start in range(0, x.shape[1], batch_size):
            count += 1
            batch = x[:, start : start + batch_size]
            masks = _dropout_masks(stack, batch.shape[1], dropout_gens, x.dtype, x.device)
            stack.forward(to_channels(batch), train=True, dropout_masks=masks, bn_factor=lambda i, k=count: 1.0 / k)
    finally:
        stack.bn_train_mode = modes
    for i, width in enumerate(stack.widths):
        rm_saved, rv_saved, nbt_saved = saved[i]
        for m in range(stack.n):
            if not reset[i][m]:
                sl = slice(m * width, (m + 1) * width)
                stack.running_mean[i][sl] = rm_saved[sl]
                stack.running_var[i][sl] = rv_saved[sl]
            if not active[m]:
                stack.batches_tracked[i][m] = nbt_saved[m]


@torch.no_grad()
def _evaluate_stacked(
    stack: StackedIndividuals | StackedViTs,
    models: Sequence[IndividualModel],
    episodes: Sequence[Any],
    cfg: FewShotConfig,
    device: torch.device,
    dtype: torch.dtype,
) -> list[float]:
    total = episodes[0].query_images.shape[0]
    correct = torch.zeros(len(models), dtype=torch.int64)
    for start in range(0, total, cfg.eval_batch_size):
        x = torch.stack(
            [
                normalize(ep.query_images[start : start + cfg.eval_batch_size], device, *model_stats(m), dtype=dtype)
                for m, ep in zip(models, episodes)
            ]
        )
        pred = stack.logits(x, train=False).argmax(-1).cpu()
        labels = torch.stack([ep.query_labels[start : start + cfg.eval_batch_size].cpu() for ep in episodes])
        correct += (pred == labels).sum(1)
    return [int(c) / total for c in correct]


# ---------------------------------------------------------------------- many jobs
@dataclass
class Descendant:
    """One descendant to train and score: ``builder(ways)`` builds its fresh model (under the
    episode's seed), ``episode`` gives the support and query sets, ``cfg`` its recipe (``None``:
    the run's), ``seed`` the run seed the episode seed derives from. ``fit`` and ``settings``
    are a :class:`~learngene_hf.fewshot.runner.Method`'s (frozen-feature baselines): such jobs are fitted
    one at a time, never stacked."""

    builder: Callable[[int], nn.Module]
    episode: Any
    cfg: FewShotConfig | None = None
    seed: int = 0
    fit: Callable[..., nn.Module] | None = None
    settings: dict[str, Any] | None = None


def run_descendants(
    jobs: Sequence[Descendant], cfg: FewShotConfig, progress: Callable[[int], Any] | None = None
) -> list[float]:
    """Query accuracy of every job, in job order.

    With ``cfg.stack`` the jobs whose models share a :func:`~learngene_hf.fewshot.stacks.stack_key`,
    whose recipes share a :func:`recipe_key` and whose episodes share their shapes train together, ``cfg.stack_size``
    models at a time (models are built lazily, one stack at a time); the others, and every job
    with ``cfg.stack=False``, train one at a time exactly as before. ``progress(k)`` is called
    after every ``k`` finished jobs.
    """
    results: list[float | None] = [None] * len(jobs)
    pending: dict[tuple, list[tuple[int, IndividualModel, int, FewShotConfig]]] = {}

    def done(k: int) -> None:
        if progress is not None:
            progress(k)

    def flush(key: tuple) -> None:
        group = pending.pop(key)
        accs = train_and_evaluate_stacked(
            [g[1] for g in group], [jobs[g[0]].episode for g in group], [g[2] for g in group], [g[3] for g in group]
        )
        for g, acc in zip(group, accs):
            results[g[0]] = acc
        done(len(group))

    for i, job in enumerate(jobs):
        run_cfg = job.cfg or cfg
        if not cfg.stack or not run_cfg.stack or job.fit is not None:
            results[i] = run_method_on_episode(job.builder, job.episode, run_cfg, job.seed, job.fit, job.settings)
            done(1)
            continue
        model, seed = build_for_episode(job.builder, job.episode, job.seed)
        key = stack_key(model)
        device = run_cfg.resolved_device()
        if key is None or (
            torch.is_autocast_enabled(device.type) and torch.get_autocast_dtype(device.type) == torch.float16
        ):
            # not a plain VGG or ViT descendant, or fp16 autocast (its loss scaling is one-at-a-time only)
            train_individual(model, job.episode.support_images, job.episode.support_labels, run_cfg, seed)
            results[i] = evaluate(model, job.episode.query_images, job.episode.query_labels, run_cfg)
            done(1)
            continue
        ep = job.episode
        key = (key, recipe_key(run_cfg), tuple(ep.support_images.shape), tuple(ep.query_images.shape))
        pending.setdefault(key, []).append((i, model, seed, run_cfg))
        if len(pending[key]) >= cfg.stack_size:
            flush(key)
    for key in list(pending):
        flush(key)
    return [float(r) for r in results]  # type: ignore[arg-type]


def descendants_for(methods: Iterable[Any], episodes: Sequence[Any], seed: int, cfg: FewShotConfig) -> list[Descendant]:
    """One :class:`Descendant` per (method, episode) with the method's recipe and fit, method-major
    (methods that share an architecture then fill stacks one after the other)."""
    return [
        Descendant(m.builder, ep, m.config(cfg), seed, m.fit, m.settings or None) for m in methods for ep in episodes
    ]
