"""Many few-shot descendants trained at once: N individual models stacked into one network.

N :class:`~learngene_hf.individual.IndividualModel` descendants with the same architecture (the
learngene's and scratch's on many episodes, at several learning rates) become one wide network:

* every conv layer's weights are concatenated along the output channels and applied as one grouped
  convolution (``groups=N``, channels-last) to a batch whose channels hold each model's own images
  side by side, ``[B, N*C, H, W]``;
* BatchNorm over those ``N*C`` channels *is* per-model BatchNorm: batch statistics and running
  statistics are kept per channel, so each model normalizes with its own batch and keeps its own
  running statistics (the BN re-estimation of inherited layers included);
* max / average pooling act per channel; the MLP layers become batched matmuls ``[N, B, F]``;
* each model draws its batch order, its augmentation and its dropout masks from its own generators,
  seeded exactly as :func:`~learngene_hf.fewshot.train_individual` seeds them, so a stacked
  descendant sees the same data, order and randomness it would see alone (dropout masks are drawn
  on the CPU: on CUDA the one-at-a-time path draws them from the CUDA generator, so there the two
  paths are equal in distribution, not bit for bit);
* the recipe (:class:`~learngene_hf.fewshot.FewShotConfig`) is followed step for step: BatchNorm
  re-estimation, the LP-FT phase (body without gradients), label smoothing, and one SGD
  (momentum, weight decay) step per step in which each model's head and body get the learning
  rates of its own recipe's schedule (models may differ in lr, head lr scale, warm-up, schedule).

:func:`train_and_evaluate_stacked` trains and scores one stack; :func:`run_descendants` takes any
list of :class:`Descendant` jobs, builds their models lazily, groups those that can share a stack
(:func:`stack_key`), and falls back to one-at-a-time training for models it cannot stack.
``FewShotConfig(stack=False)`` (``--no-stack``) turns stacking off everywhere.

ViT descendants (:class:`~learngene_hf.vit.ViTIndividualModel` of one architecture, whatever their
initialization) stack too, as :class:`StackedViTs`: each parameter becomes one ``[N, ...]``
tensor and the timm ViT runs under ``torch.func.vmap`` over the models (``functional_call``), so
a step costs one set of kernel launches for N models, which is what a GPU needs for such small
models. The recipe is followed as above (a ViT has no BatchNorm to re-estimate and no dropout).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterable, Sequence

import torch
from torch import nn
from torch.nn import functional as F

from .errors import ConfigError, DataError
from .fewshot import FewShotConfig, _model_stats, _normalize, augment_offsets, support_batches
from .individual import IndividualModel


# ---------------------------------------------------------------------- what can be stacked
def _layout(model: nn.Module) -> dict[str, Any] | None:
    """The pieces of a VGG individual model in forward order, or ``None`` when the model is not
    the plain ``conv -> BN -> ReLU [-> max pool]`` stack + ``Linear -> ReLU -> Dropout`` MLP that
    the stacked network reproduces."""
    if type(model) is not IndividualModel:
        return None
    convs, bns = [], []
    for block in model.blocks:
        conv, bn = getattr(block, "conv", None), getattr(block, "bn", None)
        if not isinstance(conv, nn.Conv2d) or not isinstance(bn, nn.BatchNorm2d):
            return None
        if conv.bias is not None or conv.groups != 1 or conv.padding_mode != "zeros" or isinstance(conv.padding, str):
            return None
        if not bn.affine or not bn.track_running_stats:
            return None
        if not isinstance(getattr(bn, "act", None), nn.ReLU) or not isinstance(getattr(bn, "drop", nn.Identity()), nn.Identity):
            return None
        if any(name not in ("conv", "bn") for name, _ in block.named_children()):
            return None
        convs.append(conv)
        bns.append(bn)
    layers = list(model.neck)
    if len(layers) % 3:
        return None
    linears, dropouts = [], []
    for i in range(0, len(layers), 3):
        linear, act, drop = layers[i : i + 3]
        if not isinstance(linear, nn.Linear) or not isinstance(act, nn.ReLU) or not isinstance(drop, nn.Dropout):
            return None
        linears.append(linear)
        dropouts.append(float(drop.p))
    if not isinstance(model.classifier, nn.Linear) or not isinstance(getattr(model.vgg, "global_pool", None), nn.AdaptiveAvgPool2d):
        return None
    linears.append(model.classifier)
    return {"convs": convs, "bns": bns, "linears": linears, "dropouts": dropouts}


def _is_plain_vit(model: nn.Module) -> bool:
    """A ViT descendant that :class:`StackedViTs` reproduces: no dropout, no stochastic depth, no buffers."""
    from .vit import ViTIndividualModel

    if type(model) is not ViTIndividualModel or any(True for _ in model.vit.buffers()):
        return False
    for m in model.vit.modules():
        if isinstance(m, nn.modules.dropout._DropoutNd) and m.p != 0:
            return False
        if type(m).__name__ == "DropPath" and float(getattr(m, "drop_prob", 0.0)) != 0:
            return False
    return True


def stack_key(model: nn.Module) -> tuple | None:
    """Models with equal keys can be trained in one stack (``None``: this model cannot be stacked).

    The key holds the architecture, the dtype, which parameters train and which BatchNorm layers
    run in train mode; weights, the learngene (or its absence) and the learning rate may differ.
    ViT descendants: the parameters' names, shapes, dtypes and trainability and the ViT's
    architecture (TLEG, weight selection and scratch descendants of one depth share a key).
    """
    if _is_plain_vit(model):
        c = model.config
        params = tuple((name, tuple(p.shape), p.dtype, p.requires_grad) for name, p in model.named_parameters())
        return ("vit", params, c.embed_dim, c.depth, c.num_heads, c.mlp_ratio, c.patch_size, c.image_size, c.in_channels,
                str(next(model.parameters()).device))
    layout = _layout(model)
    if layout is None:
        return None
    was_training = model.training
    model.train()  # the modes the layers will have during training (frozen blocks stay in eval)
    bn_modes = tuple(bn.training for bn in layout["bns"])
    model.train(was_training)
    params = tuple((name, tuple(p.shape), p.dtype, p.requires_grad) for name, p in model.named_parameters())
    convs = tuple((c.kernel_size, c.stride, c.padding, c.dilation) for c in layout["convs"])
    bns = tuple((bn.eps, bn.momentum) for bn in layout["bns"])
    c = model.config
    return (params, convs, bns, bn_modes, tuple(layout["dropouts"]), tuple(c.pool), int(c.feature_pool_size),
            int(c.in_channels), str(next(model.parameters()).device))


# ---------------------------------------------------------------------- the stacked network
class StackedIndividuals:
    """The parameters and buffers of N same-architecture individual models, stacked.

    Conv weights ``[N*O, C, k, k]``, BatchNorm tensors ``[N*O]``, linear weights ``[N, O, F]`` and
    biases ``[N, 1, O]``. :meth:`forward` maps ``[B, N*C, H, W]`` to logits ``[N, B, num_labels]``;
    :meth:`write_back` copies the trained tensors into the original modules.
    """

    def __init__(self, models: Sequence[IndividualModel]):
        if not models:
            raise ConfigError("A stack needs at least one model.")
        keys = {stack_key(m) for m in models}
        if None in keys or len(keys) != 1:
            raise ConfigError("Only individual models with the same stack_key() can be trained in one stack.")
        self.models = list(models)
        self.n = len(models)
        layouts = [_layout(m) for m in models]
        first = layouts[0]
        self.pool = [bool(p) for p in models[0].config.pool]
        self.feature_pool_size = int(models[0].config.feature_pool_size)
        self.convs = [_leaf(torch.cat([lay["convs"][i].weight.detach() for lay in layouts]).contiguous(memory_format=torch.channels_last),
                            conv.weight.requires_grad)
                      for i, conv in enumerate(first["convs"])]
        self.conv_args = [(c.stride, c.padding, c.dilation) for c in first["convs"]]
        self.bn_weight, self.bn_bias, self.running_mean, self.running_var, self.batches_tracked = [], [], [], [], []
        for i, bn in enumerate(first["bns"]):
            self.bn_weight.append(_leaf(torch.cat([lay["bns"][i].weight.detach() for lay in layouts]), bn.weight.requires_grad))
            self.bn_bias.append(_leaf(torch.cat([lay["bns"][i].bias.detach() for lay in layouts]), bn.bias.requires_grad))
            self.running_mean.append(torch.cat([lay["bns"][i].running_mean for lay in layouts]).clone())
            self.running_var.append(torch.cat([lay["bns"][i].running_var for lay in layouts]).clone())
            self.batches_tracked.append(torch.stack([lay["bns"][i].num_batches_tracked for lay in layouts]).clone())
        self.bn_eps = [float(bn.eps) for bn in first["bns"]]
        self.bn_momentum = [bn.momentum for bn in first["bns"]]
        self.bn_train_mode = list(stack_key(models[0])[3])
        self.lin_weight = [_leaf(torch.stack([lay["linears"][i].weight.detach() for lay in layouts]), lin.weight.requires_grad)
                           for i, lin in enumerate(first["linears"])]
        self.lin_bias = [_leaf(torch.stack([lay["linears"][i].bias.detach()[None] for lay in layouts]), lin.bias.requires_grad)
                         for i, lin in enumerate(first["linears"])]
        self.dropouts = list(first["dropouts"])
        self.widths = [int(w) for w in models[0].config.widths]
        self.inherited = [set(m.inherited_indices) for m in models]

    # -------------------------------------------------------------- parameters
    @property
    def dtype(self) -> torch.dtype:
        return self.convs[0].dtype

    def parameter_groups(self) -> dict[str, list[torch.Tensor]]:
        """Trainable stacked tensors by recipe group, as :func:`~learngene_hf.fewshot.parameter_groups`
        splits a model's: ``"body"`` (conv blocks) and ``"head"`` (MLP neck and classifier)."""
        body = [t for i in range(len(self.convs)) for t in (self.convs[i], self.bn_weight[i], self.bn_bias[i])]
        head = [t for pair in zip(self.lin_weight, self.lin_bias) for t in pair]
        return {"head": [t for t in head if t.requires_grad], "body": [t for t in body if t.requires_grad]}

    def per_model(self, tensor: torch.Tensor) -> torch.Tensor:
        """A view ``[N, ...]`` of a stacked tensor, one row per model."""
        return tensor.unflatten(0, (self.n, -1))  # a view for any memory format (conv weights are channels-last)

    # -------------------------------------------------------------- forward
    def logits(self, batch: torch.Tensor, *, train: bool, dropout_masks: Sequence[torch.Tensor | None] | None = None) -> torch.Tensor:
        """Logits ``[N, B, num_labels]`` of ``batch`` ``[N, B, C, H, W]`` (model ``i``'s images in row ``i``)."""
        return self.forward(_to_channels(batch), train=train, dropout_masks=dropout_masks)

    def forward(
        self,
        x: torch.Tensor,
        *,
        train: bool,
        dropout_masks: Sequence[torch.Tensor | None] | None = None,
        bn_factor: Callable[[int], float] | None = None,
    ) -> torch.Tensor:
        """Logits ``[N, B, num_labels]`` of ``x`` ``[B, N*C, H, W]`` (each model's images in its
        own channel group).

        ``train``: BatchNorm layers in train mode use batch statistics and update their running
        statistics with factor ``bn_factor(layer)`` (default: the layer's momentum); layers the
        models keep in eval mode (frozen learngene) and every layer when ``train`` is false use the
        running statistics. ``dropout_masks``: one ``[N, B, H]`` mask (already divided by ``1-p``)
        per dropout layer, ``None`` where dropout is off.
        """
        h = x
        for i, weight in enumerate(self.convs):
            stride, padding, dilation = self.conv_args[i]
            h = F.conv2d(h, weight, None, stride, padding, dilation, self.n)
            bn_train = train and self.bn_train_mode[i]
            if bn_train:
                self.batches_tracked[i].add_(1)
                factor = bn_factor(i) if bn_factor is not None else self.bn_momentum[i]
            else:
                factor = 0.0
            h = F.batch_norm(h, self.running_mean[i], self.running_var[i], self.bn_weight[i], self.bn_bias[i],
                             bn_train, factor, self.bn_eps[i])
            h = F.relu(h)
            if self.pool[i] and min(h.shape[-2:]) >= 2:
                h = F.max_pool2d(h, 2)
        b = h.shape[0]
        h = F.adaptive_avg_pool2d(h, self.feature_pool_size).reshape(b, self.n, -1).transpose(0, 1)
        last = len(self.lin_weight) - 1
        for i, (w, bias) in enumerate(zip(self.lin_weight, self.lin_bias)):
            h = torch.baddbmm(bias, h, w.transpose(1, 2))
            if i < last:
                h = F.relu(h)
                mask = dropout_masks[i] if dropout_masks is not None else None
                if mask is not None:
                    h = h * mask
        return h

    # -------------------------------------------------------------- back into the models
    @torch.no_grad()
    def write_back(self) -> None:
        """Copy every model's trained tensors (and BatchNorm statistics) back into its modules."""
        for m, model in enumerate(self.models):
            layout = _layout(model)
            for i, (conv, bn) in enumerate(zip(layout["convs"], layout["bns"])):
                o = conv.weight.shape[0]
                conv.weight.copy_(self.convs[i][m * o : (m + 1) * o])
                bn.weight.copy_(self.bn_weight[i][m * o : (m + 1) * o])
                bn.bias.copy_(self.bn_bias[i][m * o : (m + 1) * o])
                bn.running_mean.copy_(self.running_mean[i][m * o : (m + 1) * o])
                bn.running_var.copy_(self.running_var[i][m * o : (m + 1) * o])
                bn.num_batches_tracked.copy_(self.batches_tracked[i][m])
            for i, linear in enumerate(layout["linears"]):
                linear.weight.copy_(self.lin_weight[i][m])
                linear.bias.copy_(self.lin_bias[i][m, 0])


class StackedViTs:
    """The parameters of N ViT descendants of one architecture, stacked: every parameter of the
    timm ``VisionTransformer`` becomes one ``[N, ...]`` tensor (``params``, by the ViT's parameter
    name), and :meth:`logits` runs the ViT once under ``torch.func.vmap`` over the models.

    The ViT is evaluated through a copy of the first model's ``vit`` whose attention is the
    explicit ``softmax(q k^T / sqrt(d)) v`` (vmap-safe; the fused kernel computes the same up to
    float rounding). A ViT descendant behaves the same in train and eval mode (no BatchNorm; dropout
    and stochastic depth are off, see :func:`stack_key`), so ``train`` changes nothing here. The
    same interface as :class:`StackedIndividuals`: :meth:`parameter_groups`, :meth:`per_model`,
    :meth:`logits`, :meth:`write_back`.
    """

    dropouts: tuple[float, ...] = ()  # no dropout layer to draw masks for

    def __init__(self, models: Sequence[nn.Module]):
        if not models:
            raise ConfigError("A stack needs at least one model.")
        keys = {stack_key(m) for m in models}
        if None in keys or len(keys) != 1:
            raise ConfigError("Only ViT descendants with the same stack_key() can be trained in one stack.")
        import copy

        self.models = list(models)
        self.n = len(models)
        self.template = copy.deepcopy(models[0].vit).eval().requires_grad_(False)
        for m in self.template.modules():
            if hasattr(m, "fused_attn"):
                m.fused_attn = False
        per_model = [dict(m.vit.named_parameters()) for m in models]
        self.params = {name: _leaf(torch.stack([d[name].detach() for d in per_model]), p.requires_grad)
                       for name, p in models[0].vit.named_parameters()}
        self.head_names = {f"head.{name}" for name, _ in models[0].vit.head.named_parameters()}

    @property
    def dtype(self) -> torch.dtype:
        return next(iter(self.params.values())).dtype

    def parameter_groups(self) -> dict[str, list[torch.Tensor]]:
        """Trainable stacked tensors by recipe group: ``"head"`` (the classifier) and ``"body"``
        (everything else), as :func:`~learngene_hf.fewshot.parameter_groups` splits a ViT descendant."""
        groups: dict[str, list[torch.Tensor]] = {"head": [], "body": []}
        for name, p in self.params.items():
            if p.requires_grad:
                groups["head" if name in self.head_names else "body"].append(p)
        return groups

    def per_model(self, tensor: torch.Tensor) -> torch.Tensor:
        """A stacked tensor is already ``[N, ...]``, one row per model."""
        return tensor

    def parameters(self) -> list[torch.Tensor]:
        """Every stacked tensor (for an optimizer: an elementwise one such as SGD or AdamW updates
        each model exactly as it would alone)."""
        return list(self.params.values())

    def _one(self, params: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        return torch.func.functional_call(self.template, params, (x,))

    def logits(self, batch: torch.Tensor, *, train: bool = True, dropout_masks: Sequence[torch.Tensor | None] | None = None,
               shared_input: bool = False) -> torch.Tensor:
        """Logits ``[N, B, num_labels]`` of ``batch`` ``[N, B, C, H, W]`` (model ``i``'s images in row
        ``i``), or of ``batch`` ``[B, C, H, W]`` fed to every model with ``shared_input``."""
        return torch.func.vmap(self._one, in_dims=(0, None if shared_input else 0))(self.params, batch)

    @torch.no_grad()
    def write_back(self) -> None:
        """Copy every model's trained tensors back into its ``vit``."""
        for m, model in enumerate(self.models):
            for name, p in model.vit.named_parameters():
                p.copy_(self.params[name][m])


def make_stack(models: Sequence[nn.Module]) -> StackedIndividuals | StackedViTs:
    """The stacked network for ``models`` (all with one :func:`stack_key`): :class:`StackedViTs`
    for ViT descendants, :class:`StackedIndividuals` for VGG ones."""
    if models and _is_plain_vit(models[0]):
        return StackedViTs(models)
    return StackedIndividuals(models)


def _leaf(tensor: torch.Tensor, requires_grad: bool) -> torch.Tensor:
    return tensor.clone().requires_grad_(requires_grad)


def _to_channels(batch: torch.Tensor) -> torch.Tensor:
    """``[N, B, C, H, W]`` (each model's images) -> ``[B, N*C, H, W]`` (the stacked layout)."""
    n, b, c, h, w = batch.shape
    # channels-last: the grouped convolutions run faster in it (cuDNN and oneDNN), results are the same
    return batch.transpose(0, 1).reshape(b, n * c, h, w).contiguous(memory_format=torch.channels_last)


def augment_stacked(x: torch.Tensor, generators: Sequence[torch.Generator], padding: int = 4) -> torch.Tensor:
    """:func:`~learngene_hf.fewshot.augment_batch` for every model at once.

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


def _dropout_masks(stack: StackedIndividuals | StackedViTs, batch: int, generators: Sequence[torch.Generator | None],
                   dtype: torch.dtype, device: torch.device) -> list[torch.Tensor | None]:
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
LR_ONLY_FIELDS = frozenset({"recipe", "lr", "head_lr_scale", "warmup_steps", "schedule", "final_lr_scale", "stack_size"})


def recipe_key(cfg: FewShotConfig) -> tuple:
    """Configs with equal keys train in one stack: everything but the learning rates must agree
    (steps, batch size, LP steps, momentum, weight decay, label smoothing, augmentation...)."""
    return tuple(sorted((k, v) for k, v in cfg.to_dict().items() if k not in LR_ONLY_FIELDS))


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
    :func:`~learngene_hf.fewshot.evaluate` for every ``i`` (up to float rounding of the grouped
    kernels): the same batches, augmentation and dropout masks, BatchNorm re-estimation, LP-FT
    phase, label smoothing, and an SGD step per step in which each model's head and body get the
    learning rates of its own recipe's schedule. The recipes may differ only in their learning
    rates (:func:`recipe_key`); every episode must have as many support and query images as the
    first. ``write_back`` copies the trained weights into ``models`` (otherwise only the
    accuracies come back).
    """
    n_models = len(models)
    if not (n_models == len(episodes) == len(seeds) == len(cfgs)) or n_models == 0:
        raise ConfigError(f"train_and_evaluate_stacked needs one episode, seed and recipe per model, got {n_models} models, "
                          f"{len(episodes)} episodes, {len(seeds)} seeds, {len(cfgs)} recipes.")
    if len({recipe_key(c) for c in cfgs}) != 1:
        raise ConfigError("Stacked descendants must share their recipe up to the learning rates (recipe_key()); "
                          "train the others in their own stack.")
    sizes = {(tuple(ep.support_images.shape), tuple(ep.query_images.shape)) for ep in episodes}
    if len(sizes) != 1:
        raise ConfigError(f"Stacked episodes must share support and query shapes, got {sorted(sizes)}.")
    for model, ep in zip(models, episodes):
        num_labels = int(model.config.num_labels)
        labels = ep.support_labels
        if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= num_labels):
            raise DataError(f"support labels span {int(labels.min())}..{int(labels.max())} but the model has {num_labels} outputs; "
                            "use local labels 0..num_labels-1.")
    cfg = cfgs[0]
    device = cfg.resolved_device()
    for model in models:
        model.to(device)
    stack = make_stack(models)
    dtype = stack.dtype
    x = torch.stack([_normalize(ep.support_images, device, *_model_stats(m), dtype=dtype) for m, ep in zip(models, episodes)])
    y = torch.stack([ep.support_labels.to(device=device, dtype=torch.int64) for ep in episodes])
    n = x.shape[1]
    total = cfg.total_steps(n)
    batch_gens = [torch.Generator().manual_seed(int(s)) for s in seeds]
    # train_individual seeds the global RNG with the episode seed: dropout draws from it
    dropout_gens = [torch.Generator().manual_seed(int(s)) for s in seeds]

    if cfg.bn_reestimate and isinstance(stack, StackedIndividuals):  # ViTs have no BatchNorm
        _reestimate_batchnorm(stack, x, cfg.batch_size, [g if m.has_learngene else None for m, g in zip(models, dropout_gens)])

    groups = {name: tensors for name, tensors in stack.parameter_groups().items() if tensors}
    lp_steps = int(cfg.lp_steps)
    body_frozen = lp_steps > 0 and "body" in groups
    if body_frozen:  # LP-FT: the head trains alone first
        for p in groups["body"]:
            p.requires_grad_(False)
    buffers: dict[int, torch.Tensor] = {}
    try:
        for step, idxs in enumerate(zip(*(support_batches(n, cfg, g) for g in batch_gens))):
            if body_frozen and step >= lp_steps:
                for p in groups["body"]:
                    p.requires_grad_(True)
                body_frozen = False
            idx = torch.stack(idxs).to(device)
            batch = torch.gather(x, 1, idx[:, :, None, None, None].expand(-1, -1, *x.shape[2:]))
            if cfg.augment:
                batch = augment_stacked(batch, batch_gens, int(cfg.crop_padding))
            masks = _dropout_masks(stack, idx.shape[1], dropout_gens, dtype, device)
            logits = stack.logits(batch, train=True, dropout_masks=masks)
            per_example = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), torch.gather(y, 1, idx).reshape(-1),
                                          reduction="none", label_smoothing=float(cfg.label_smoothing))
            loss = per_example.view(n_models, -1).mean(1).sum()  # each model's own mean loss
            for tensors in groups.values():
                for p in tensors:
                    p.grad = None
            loss.backward()
            rates = {name: [float(c.group_lr(name, step, total)) for c in cfgs] for name in groups}
            _sgd_step(stack, groups, buffers, rates, cfg.momentum, cfg.weight_decay)
    finally:
        if body_frozen:
            for p in groups["body"]:
                p.requires_grad_(True)

    accuracy = _evaluate_stacked(stack, models, episodes, cfg, device, dtype)
    if write_back:
        stack.write_back()
    for model in models:
        model.eval()
    return accuracy


@torch.no_grad()
def _sgd_step(stack: StackedIndividuals | StackedViTs, groups: dict[str, list[torch.Tensor]], buffers: dict[int, torch.Tensor],
              rates: dict[str, list[float]], momentum: float, weight_decay: float) -> None:
    """``torch.optim.SGD``'s update (same operations, same order) with one learning rate per
    group and model; a tensor without a gradient (the body during LP steps) is skipped and gets no
    momentum state, as in SGD."""
    for name, tensors in groups.items():
        lrs = rates[name]
        same = all(lr == lrs[0] for lr in lrs)
        steps = None if same or not tensors else torch.tensor([-lr for lr in lrs], dtype=tensors[0].dtype, device=tensors[0].device)
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
def _reestimate_batchnorm(stack: StackedIndividuals, x: torch.Tensor, batch_size: int,
                          dropout_gens: Sequence[torch.Generator | None]) -> None:
    """:func:`~learngene_hf.fewshot.reestimate_batchnorm` for the models with a generator (those
    with a learngene): their inherited BatchNorm layers restart and average over the support
    batches; every other running statistic, and every statistic of the other models, stays."""
    active = [g is not None for g in dropout_gens]
    if not any(active):
        return
    saved = [(rm.clone(), rv.clone(), nbt.clone()) for rm, rv, nbt in zip(stack.running_mean, stack.running_var, stack.batches_tracked)]
    reset: list[list[bool]] = []
    for i, width in enumerate(stack.widths):
        flags = [active[m] and i in stack.inherited[m] for m in range(stack.n)]
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
            stack.forward(_to_channels(batch), train=True, dropout_masks=masks, bn_factor=lambda i, k=count: 1.0 / k)
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
def _evaluate_stacked(stack: StackedIndividuals | StackedViTs, models: Sequence[IndividualModel], episodes: Sequence[Any],
                      cfg: FewShotConfig, device: torch.device, dtype: torch.dtype) -> list[float]:
    total = episodes[0].query_images.shape[0]
    correct = torch.zeros(len(models), dtype=torch.int64)
    for start in range(0, total, cfg.eval_batch_size):
        x = torch.stack([_normalize(ep.query_images[start : start + cfg.eval_batch_size], device, *_model_stats(m), dtype=dtype)
                         for m, ep in zip(models, episodes)])
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
    are a :class:`~learngene_hf.fewshot.Method`'s (frozen-feature baselines): such jobs are fitted
    one at a time, never stacked."""

    builder: Callable[[int], nn.Module]
    episode: Any
    cfg: FewShotConfig | None = None
    seed: int = 0
    fit: Callable[..., nn.Module] | None = None
    settings: dict[str, Any] | None = None


def run_descendants(
    jobs: Sequence[Descendant],
    cfg: FewShotConfig,
    progress: Callable[[int], Any] | None = None,
) -> list[float]:
    """Query accuracy of every job, in job order.

    With ``cfg.stack`` the jobs whose models share a :func:`stack_key`, whose recipes share a
    :func:`recipe_key` and whose episodes share their shapes train together, ``cfg.stack_size``
    models at a time (models are built lazily, one stack at a time); the others, and every job
    with ``cfg.stack=False``, train one at a time exactly as before. ``progress(k)`` is called
    after every ``k`` finished jobs.
    """
    from . import fewshot

    results: list[float | None] = [None] * len(jobs)
    pending: dict[tuple, list[tuple[int, IndividualModel, int, FewShotConfig]]] = {}

    def done(k: int) -> None:
        if progress is not None:
            progress(k)

    def flush(key: tuple) -> None:
        group = pending.pop(key)
        accs = train_and_evaluate_stacked([g[1] for g in group], [jobs[g[0]].episode for g in group], [g[2] for g in group],
                                          [g[3] for g in group])
        for g, acc in zip(group, accs):
            results[g[0]] = acc
        done(len(group))

    for i, job in enumerate(jobs):
        run_cfg = job.cfg or cfg
        if not cfg.stack or not run_cfg.stack or job.fit is not None:
            results[i] = fewshot.run_method_on_episode(job.builder, job.episode, run_cfg, job.seed, job.fit, job.settings)
            done(1)
            continue
        model, seed = fewshot.build_for_episode(job.builder, job.episode, job.seed)
        key = stack_key(model)
        device = run_cfg.resolved_device()
        if key is None or (torch.is_autocast_enabled(device.type) and torch.get_autocast_dtype(device.type) == torch.float16):
            # not a plain VGG or ViT descendant, or fp16 autocast (its loss scaling is one-at-a-time only)
            fewshot.train_individual(model, job.episode.support_images, job.episode.support_labels, run_cfg, seed)
            results[i] = fewshot.evaluate(model, job.episode.query_images, job.episode.query_labels, run_cfg)
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
    return [Descendant(m.builder, ep, m.config(cfg), seed, m.fit, m.settings or None) for m in methods for ep in episodes]
