"""The stacked networks: N few-shot descendants of one architecture held as one network.

N :class:`~learngene_hf.models.individual.IndividualModel` descendants with the same architecture
(the learngene's and scratch's on many episodes, at several learning rates) become one wide network,
:class:`StackedIndividuals`:

* every conv layer's weights are concatenated along the output channels and applied as one grouped
  convolution (``groups=N``, channels-last) to a batch whose channels hold each model's own images
  side by side, ``[B, N*C, H, W]`` (:func:`to_channels`);
* BatchNorm over those ``N*C`` channels *is* per-model BatchNorm: batch statistics and running
  statistics are kept per channel, so each model normalizes with its own batch and keeps its own
  running statistics (the BN re-estimation of inherited layers included);
* max / average pooling act per channel; the MLP layers become batched matmuls ``[N, B, F]``.

ViT descendants (:class:`~learngene_hf.models.vit_individual.ViTIndividualModel` of one architecture, whatever
their initialization) stack too, as :class:`StackedViTs`: each parameter becomes one ``[N, ...]``
tensor and the timm ViT runs under ``torch.func.vmap`` over the models (``functional_call``), so
a step costs one set of kernel launches for N models, which is what a GPU needs for such small
models.

:func:`stack_key` says which models can share a stack, :func:`make_stack` builds it. Training a
stack step for step as the recipe says, and running many descendants:
:mod:`~learngene_hf.fewshot.stacked`.
"""

from __future__ import annotations

import copy
from typing import Any, Callable, Sequence

import torch
from torch import nn
from torch.nn import functional as F

from ..errors import ConfigError
from ..models.individual import IndividualModel
from ..models.vit_individual import ViTIndividualModel


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
        if not isinstance(getattr(bn, "act", None), nn.ReLU):
            return None
        if not isinstance(getattr(bn, "drop", nn.Identity()), nn.Identity):
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
    if not isinstance(model.classifier, nn.Linear):
        return None
    if not isinstance(getattr(model.vgg, "global_pool", None), nn.AdaptiveAvgPool2d):
        return None
    linears.append(model.classifier)
    return {"convs": convs, "bns": bns, "linears": linears, "dropouts": dropouts}


def _is_plain_vit(model: nn.Module) -> bool:
    """A ViT descendant that :class:`StackedViTs` reproduces: no dropout, no stochastic depth, no buffers."""
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
        return (
            "vit",
            params,
            c.embed_dim,
            c.depth,
            c.num_heads,
            c.mlp_ratio,
            c.patch_size,
            c.image_size,
            c.in_channels,
            str(next(model.parameters()).device),
        )
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
    return (
        params,
        convs,
        bns,
        bn_modes,
        tuple(layout["dropouts"]),
        tuple(c.pool),
        int(c.feature_pool_size),
        int(c.in_channels),
        str(next(model.parameters()).device),
    )


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
        self.convs = [
            _leaf(
                torch.cat([lay["convs"][i].weight.detach() for lay in layouts]).contiguous(
                    memory_format=torch.channels_last
                ),
                conv.weight.requires_grad,
            )
            for i, conv in enumerate(first["convs"])
        ]
        self.conv_args = [(c.stride, c.padding, c.dilation) for c in first["convs"]]
        self.bn_weight, self.bn_bias, self.running_mean, self.running_var, self.batches_tracked = [], [], [], [], []
        for i, bn in enumerate(first["bns"]):
            self.bn_weight.append(
                _leaf(torch.cat([lay["bns"][i].weight.detach() for lay in layouts]), bn.weight.requires_grad)
            )
            self.bn_bias.append(
                _leaf(torch.cat([lay["bns"][i].bias.detach() for lay in layouts]), bn.bias.requires_grad)
            )
            self.running_mean.append(torch.cat([lay["bns"][i].running_mean for lay in layouts]).clone())
            self.running_var.append(torch.cat([lay["bns"][i].running_var for lay in layouts]).clone())
            self.batches_tracked.append(torch.stack([lay["bns"][i].num_batches_tracked for lay in layouts]).clone())
        self.bn_eps = [float(bn.eps) for bn in first["bns"]]
        self.bn_momentum = [bn.momentum for bn in first["bns"]]
        self.bn_train_mode = list(stack_key(models[0])[3])
        self.lin_weight = [
            _leaf(torch.stack([lay["linears"][i].weight.detach() for lay in layouts]), lin.weight.requires_grad)
            for i, lin in enumerate(first["linears"])
        ]
        self.lin_bias = [
            _leaf(torch.stack([lay["linears"][i].bias.detach()[None] for lay in layouts]), lin.bias.requires_grad)
            for i, lin in enumerate(first["linears"])
        ]
        self.dropouts = list(first["dropouts"])
        self.widths = [int(w) for w in models[0].config.widths]
        self.inherited = [set(m.inherited_indices) for m in models]
        self.has_learngene = [bool(m.has_learngene) for m in models]

    # -------------------------------------------------------------- parameters
    @property
    def dtype(self) -> torch.dtype:
        return self.convs[0].dtype

    def parameter_groups(self) -> dict[str, list[torch.Tensor]]:
        """Trainable stacked tensors by group: ``"head"`` (MLP neck and classifier) and one group
        per conv block, ``"block{i}"`` (its conv weight and BatchNorm affine parameters), whose
        recipe group differs between models (:meth:`roles`)."""
        groups = {"head": [t for pair in zip(self.lin_weight, self.lin_bias) for t in pair if t.requires_grad]}
        for i in range(len(self.convs)):
            groups[f"block{i}"] = [t for t in (self.convs[i], self.bn_weight[i], self.bn_bias[i]) if t.requires_grad]
        return groups

    def roles(self, group: str) -> list[str]:
        """The recipe group (:func:`~learngene_hf.fewshot.train.parameter_groups`) of ``group``'s
        tensors in each model: ``"head"``, ``"inherited"`` (a block a model inherited from its
        learngene) or ``"body"``."""
        if group == "head":
            return ["head"] * self.n
        i = int(group[len("block") :])
        return [
            "inherited" if has and i in blocks else "body" for has, blocks in zip(self.has_learngene, self.inherited)
        ]

    def per_model(self, tensor: torch.Tensor) -> torch.Tensor:
        """A view ``[N, ...]`` of a stacked tensor, one row per model."""
        return tensor.unflatten(0, (self.n, -1))  # a view for any memory format (conv weights are channels-last)

    # -------------------------------------------------------------- forward
    def logits(
        self, batch: torch.Tensor, *, train: bool, dropout_masks: Sequence[torch.Tensor | None] | None = None
    ) -> torch.Tensor:
        """Logits ``[N, B, num_labels]`` of ``batch`` ``[N, B, C, H, W]`` (model ``i``'s images in row ``i``)."""
        return self.forward(to_channels(batch), train=train, dropout_masks=dropout_masks)

    def forward(
        self,
        x: torch.Tensor,
        *,
        train: bool,
        dropout_masks: Sequence[torch.Tensor | None] | None = None,
        bn_factor: Callable[[int], float] | None = None,
        features_only: bool = False,
    ) -> torch.Tensor:
        """Logits ``[N, B, num_labels]`` of ``x`` ``[B, N*C, H, W]`` (each model's images in its
        own channel group); with ``features_only``, what the classifiers read, ``[N, B, F]``.

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
            h = F.batch_norm(
                h,
                self.running_mean[i],
                self.running_var[i],
                self.bn_weight[i],
                self.bn_bias[i],
                bn_train,
                factor,
                self.bn_eps[i],
            )
            h = F.relu(h)
            if self.pool[i] and min(h.shape[-2:]) >= 2:
                h = F.max_pool2d(h, 2)
        b = h.shape[0]
        h = F.adaptive_avg_pool2d(h, self.feature_pool_size).reshape(b, self.n, -1).transpose(0, 1)
        last = len(self.lin_weight) - 1
        for i, (w, bias) in enumerate(zip(self.lin_weight, self.lin_bias)):
            if features_only and i == last:
                return h
            h = torch.baddbmm(bias, h, w.transpose(1, 2))
            if i < last:
                h = F.relu(h)
                mask = dropout_masks[i] if dropout_masks is not None else None
                if mask is not None:
                    h = h * mask
        return h

    @torch.no_grad()
    def classifier_inputs(self, batch: torch.Tensor) -> torch.Tensor:
        """What the classifiers read, ``[N, B, F]``, of ``batch`` ``[N, B, C, H, W]``, with running statistics."""
        return self.forward(to_channels(batch), train=False, features_only=True)

    @torch.no_grad()
    def set_classifier(self, model: int, weight: torch.Tensor, bias: torch.Tensor) -> None:
        """Set model ``model``'s classifier to ``weight`` ``[K, F]`` and ``bias`` ``[K]``."""
        self.lin_weight[-1][model].copy_(weight)
        self.lin_bias[-1][model, 0].copy_(bias)

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
        self.models = list(models)
        self.n = len(models)
        self.template = copy.deepcopy(models[0].vit).eval().requires_grad_(False)
        for m in self.template.modules():
            if hasattr(m, "fused_attn"):
                m.fused_attn = False
        per_model = [dict(m.vit.named_parameters()) for m in models]
        self.params = {
            name: _leaf(torch.stack([d[name].detach() for d in per_model]), p.requires_grad)
            for name, p in models[0].vit.named_parameters()
        }
        self.head_names = {f"head.{name}" for name, _ in models[0].vit.head.named_parameters()}
        self.pre_logits = _PreLogits(self.template)

    @property
    def dtype(self) -> torch.dtype:
        return next(iter(self.params.values())).dtype

    def parameter_groups(self) -> dict[str, list[torch.Tensor]]:
        """Trainable stacked tensors by recipe group: ``"head"`` (the classifier) and ``"body"``
        (everything else), as :func:`~learngene_hf.fewshot.train.parameter_groups` splits a ViT descendant."""
        groups: dict[str, list[torch.Tensor]] = {"head": [], "body": []}
        for name, p in self.params.items():
            if p.requires_grad:
                groups["head" if name in self.head_names else "body"].append(p)
        return groups

    def roles(self, group: str) -> list[str]:
        """The recipe group of ``group``'s tensors in each model (``"head"`` or ``"body"``)."""
        return [group] * self.n

    def per_model(self, tensor: torch.Tensor) -> torch.Tensor:
        """A stacked tensor is already ``[N, ...]``, one row per model."""
        return tensor

    def parameters(self) -> list[torch.Tensor]:
        """Every stacked tensor (for an optimizer: an elementwise one such as SGD or AdamW updates
        each model exactly as it would alone)."""
        return list(self.params.values())

    def _one(self, params: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        return torch.func.functional_call(self.template, params, (x,))

    def logits(
        self,
        batch: torch.Tensor,
        *,
        train: bool = True,
        dropout_masks: Sequence[torch.Tensor | None] | None = None,
        shared_input: bool = False,
    ) -> torch.Tensor:
        """Logits ``[N, B, num_labels]`` of ``batch`` ``[N, B, C, H, W]`` (model ``i``'s images in row
        ``i``), or of ``batch`` ``[B, C, H, W]`` fed to every model with ``shared_input``."""
        return torch.func.vmap(self._one, in_dims=(0, None if shared_input else 0))(self.params, batch)

    def _pre_logits(self, params: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        return torch.func.functional_call(self.pre_logits, {f"vit.{k}": v for k, v in params.items()}, (x,))

    @torch.no_grad()
    def classifier_inputs(self, batch: torch.Tensor) -> torch.Tensor:
        """What the classifiers read (the pre-logits), ``[N, B, D]``, of ``batch`` ``[N, B, C, H, W]``."""
        return torch.func.vmap(self._pre_logits, in_dims=(0, 0))(self.params, batch)

    @torch.no_grad()
    def set_classifier(self, model: int, weight: torch.Tensor, bias: torch.Tensor) -> None:
        """Set model ``model``'s classifier to ``weight`` ``[K, D]`` and ``bias`` ``[K]``."""
        self.params["head.weight"][model].copy_(weight)
        self.params["head.bias"][model].copy_(bias)

    @torch.no_grad()
    def write_back(self) -> None:
        """Copy every model's trained tensors back into its ``vit``."""
        for m, model in enumerate(self.models):
            for name, p in model.vit.named_parameters():
                p.copy_(self.params[name][m])


class _PreLogits(nn.Module):
    """A ViT's pre-logits (class-token features after the final norm) as a module's forward."""

    def __init__(self, vit: nn.Module):
        super().__init__()
        self.vit = vit

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.vit.forward_head(self.vit.forward_features(x), pre_logits=True)


def make_stack(models: Sequence[nn.Module]) -> StackedIndividuals | StackedViTs:
    """The stacked network for ``models`` (all with one :func:`stack_key`): :class:`StackedViTs`
    for ViT descendants, :class:`StackedIndividuals` for VGG ones."""
    if models and _is_plain_vit(models[0]):
        return StackedViTs(models)
    return StackedIndividuals(models)


def _leaf(tensor: torch.Tensor, requires_grad: bool) -> torch.Tensor:
    return tensor.clone().requires_grad_(requires_grad)


def to_channels(batch: torch.Tensor) -> torch.Tensor:
    """``[N, B, C, H, W]`` (each model's images) -> ``[B, N*C, H, W]`` (the stacked layout)."""
    n, b, c, h, w = batch.shape
    # channels-last: the grouped convolutions run faster in it (cuDNN and oneDNN), results are the same
    return batch.transpose(0, 1).reshape(b, n * c, h, w).contiguous(memory_format=torch.channels_last)
