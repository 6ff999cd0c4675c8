"""The VGG-BN family as a timm model: ``timm.create_model("learngene_vgg_small", num_classes=5)``.

One plain stack of ``conv -> BatchNorm -> ReLU`` blocks (timm :class:`~timm.layers.ConvNormAct`),
a 2x2 max pool after the blocks whose ``pool`` flag is set, an adaptive average pool to
``feature_pool_size`` x ``feature_pool_size``, an MLP neck and a linear classifier::

    x [B, C, H, W] -> blocks -> [B, widths[-1], h, w]            forward_features
                   -> pool, flatten, neck -> [B, head_hidden_size] forward_head(pre_logits=True)
                   -> head -> [B, num_classes]                     forward_head

The three named sizes (``tiny``, ``small``, ``paper``) are registered with timm, so
``timm.create_model(name, num_classes=..., features_only=True)`` works after
``import learngene_hf``. The collective and individual models of this package are thin
transformers wrappers around :class:`VGGBN` (``num_classes=0``, their heads live in the wrapper).

Blocks can be grown while keeping the function (:meth:`VGGBN.widen`, :meth:`VGGBN.deepen`,
Net2Net); ``widths`` and ``pool`` always describe the current shape.

This module depends only on torch and timm (plus the sibling ``layers``, ``growth`` and ``presets`` modules),
so it travels with a model pushed as remote code.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
from timm.models import build_model_with_cfg, generate_default_cfgs, is_model, register_model
from timm.models._features import feature_take_indices  # what timm's own model files use
from torch import nn

from .growth import identity_block, replication_map, wider_block, wider_consumer_conv, wider_consumer_linear
from .layers import conv_block, init_vgg_weights, mlp_neck, project_error, run_blocks
from .presets import VGG_BN_ARCHS, VGG_BN_MEAN, VGG_BN_STD
from .timm_hub import timm_state_dict

__all__ = ["VGGBN", "VGG_BN_ARCHS", "VGG_BN_MEAN", "VGG_BN_STD", "backbone_from_config", "check_vgg_shape"]


def _config_error(message: str) -> ValueError:
    return project_error("ConfigError", message)


class VGGBN(nn.Module):
    """Expandable VGG-BN classifier in timm's model layout.

    Args:
        widths: output channels of every conv block, input to output.
        pool: one flag per block; ``True`` puts a 2x2 max pool after that block (skipped once the
            map is one pixel wide, so any input size works).
        head_hidden: widths of the MLP neck between the pooled features and the classifier.
        num_classes: classifier outputs; 0 leaves ``head`` an identity (features only).
        in_chans: channels of the input images.
        kernel_size: conv kernel size of every block.
        feature_pool_size: side of the adaptive average pool before flattening; the neck reads
            ``num_features = widths[-1] * feature_pool_size**2`` values.
        drop_rate: dropout after every linear layer of the neck.
        global_pool: only ``"avg"`` (timm's keyword, accepted for compatibility).
        init_weights: initialize the weights here (He-normal convs, unit BatchNorm, small normal
            linears); the transformers wrappers pass ``False`` and initialize in ``post_init``.
    """

    def __init__(
        self,
        widths: Sequence[int],
        pool: Sequence[bool] | None = None,
        head_hidden: Sequence[int] = (),
        num_classes: int = 1000,
        in_chans: int = 3,
        kernel_size: int = 3,
        feature_pool_size: int = 1,
        drop_rate: float = 0.0,
        global_pool: str = "avg",
        init_weights: bool = True,
        **kwargs: Any,
    ):
        super().__init__()
        if kwargs:
            raise _config_error(f"VGGBN got unknown arguments {sorted(kwargs)}.")
        if global_pool != "avg":
            raise _config_error(f"VGGBN pools by adaptive average only; got global_pool={global_pool!r}, use 'avg'.")
        self.widths = [int(w) for w in widths]
        self.pool = [bool(p) for p in (pool if pool is not None else [False] * len(self.widths))]
        if not self.widths or len(self.pool) != len(self.widths):
            raise _config_error(
                f"VGGBN needs one pool flag per conv width, got widths={self.widths}, pool={self.pool}."
            )
        self.in_chans = int(in_chans)
        self.kernel_size = int(kernel_size)
        self.feature_pool_size = int(feature_pool_size)
        self.drop_rate = float(drop_rate)
        self.num_classes = int(num_classes)
        self.grad_checkpointing = False

        self.blocks = nn.ModuleList()
        channels = self.in_chans
        for width in self.widths:
            self.blocks.append(self.make_block(channels, width))
            channels = width
        self.global_pool = nn.AdaptiveAvgPool2d(self.feature_pool_size)
        self.neck, self.head_hidden_size = mlp_neck(self.num_features, head_hidden, self.drop_rate)
        self.head = nn.Linear(self.head_hidden_size, self.num_classes) if self.num_classes > 0 else nn.Identity()
        if init_weights:
            for module in self.modules():
                init_vgg_weights(module, nn.init)

    # ------------------------------------------------------------------ shape
    def make_block(self, in_channels: int, out_channels: int) -> nn.Module:
        """An empty ``conv -> BatchNorm -> ReLU`` block of this model's kind."""
        return conv_block(in_channels, out_channels, self.kernel_size)

    @property
    def num_features(self) -> int:
        """Width of the flattened pooled feature map that enters the neck."""
        return self.widths[-1] * self.feature_pool_size**2

    @property
    def feature_info(self) -> list[dict[str, Any]]:
        """One entry per conv block (its output after its pool): ``num_chs``, ``reduction``, ``module``."""
        info, reduction = [], 1
        for index, (width, pooled) in enumerate(zip(self.widths, self.pool)):
            reduction *= 2 if pooled else 1
            info.append({"num_chs": width, "reduction": reduction, "module": f"blocks.{index}"})
        return info

    def check_layer(self, layer: int) -> int:
        """``layer`` as an index in ``0..len(widths)-1`` (negative counts from the end)."""
        n = len(self.widths)
        if not isinstance(layer, int) or isinstance(layer, bool) or not -n <= layer < n:
            raise _config_error(
                f"Conv layer index {layer!r} is out of range: this model has {n} conv layers (0..{n - 1})."
            )
        return layer % n

    # ------------------------------------------------------------------ timm interface
    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict[str, Any]:
        return {"stem": r"^blocks\.0\.", "blocks": r"^blocks\.(\d+)"}

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.grad_checkpointing = enable

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return self.head

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """Replace the classifier with a fresh one of ``num_classes`` outputs (0: identity)."""
        if global_pool not in (None, "avg"):
            raise _config_error(
                f"VGGBN pools by adaptive average only; got global_pool={global_pool!r}, use 'avg' or None."
            )
        self.num_classes = int(num_classes)
        if self.num_classes > 0:
            ref = self.blocks[0].conv.weight
            head = nn.Linear(self.head_hidden_size, self.num_classes).to(device=ref.device, dtype=ref.dtype)
            init_vgg_weights(head, nn.init)
            self.head = head
        else:
            self.head = nn.Identity()

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Conv feature map [B, widths[-1], h, w] of ``x`` [B, C, H, W]."""
        if self.grad_checkpointing and torch.is_grad_enabled() and not torch.jit.is_scripting():
            for block, pooled in zip(self.blocks, self.pool):
                x = torch.utils.checkpoint.checkpoint(block, x, use_reentrant=False)
                if pooled and min(x.shape[-2:]) >= 2:
                    x = nn.functional.max_pool2d(x, 2)
            return x
        return run_blocks(self.blocks, self.pool, x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Feature map [B, C, h, w] -> neck output [B, head_hidden_size] (``pre_logits``) or
        logits [B, num_classes]."""
        x = self.neck(torch.flatten(self.global_pool(x), 1))
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits [B, num_classes] of ``x`` [B, C, H, W] (neck output when ``num_classes=0``)."""
        return self.forward_head(self.forward_features(x))

    def forward_intermediates(
        self,
        x: torch.Tensor,
        indices: int | list[int] | None = None,
        norm: bool = False,
        stop_early: bool = False,
        output_fmt: str = "NCHW",
        intermediates_only: bool = False,
    ) -> list[torch.Tensor] | tuple[torch.Tensor, list[torch.Tensor]]:
        """Outputs of the blocks in ``indices`` (after their pool), timm's feature interface.

        ``indices``: an int takes the last n blocks, a list takes those blocks, ``None`` all.
        Returns the intermediates [B, widths[i], h_i, w_i] alone (``intermediates_only``) or
        ``(final feature map, intermediates)``.
        """
        if output_fmt != "NCHW":
            raise _config_error(f"VGGBN features are NCHW only, got output_fmt={output_fmt!r}.")
        take, max_index = feature_take_indices(len(self.blocks), indices)
        last = max_index if stop_early else len(self.blocks) - 1
        intermediates = []
        for index in range(last + 1):
            x = run_blocks(self.blocks, self.pool, x, index, index + 1)
            if index in take:
                intermediates.append(x)
        if intermediates_only:
            return intermediates
        return x, intermediates

    def prune_intermediate_layers(
        self, indices: int | list[int] = 1, prune_norm: bool = False, prune_head: bool = True
    ) -> list[int]:
        """Drop the blocks after the last one in ``indices`` (and the neck and head); returns the
        absolute indices kept."""
        take, max_index = feature_take_indices(len(self.blocks), indices)
        self.blocks = self.blocks[: max_index + 1]
        self.widths = self.widths[: max_index + 1]
        self.pool = self.pool[: max_index + 1]
        if prune_head:
            self.neck = nn.Sequential()
            self.head_hidden_size = self.num_features
            self.reset_classifier(0)
        return take

    # ------------------------------------------------------------------ growth
    @torch.no_grad()
    def widen(self, layer: int, width: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Widen conv block ``layer`` to ``width`` output channels (Net2WiderNet).

        New filters copy randomly chosen existing ones (``generator`` makes the choice
        reproducible) with their BatchNorm parameters and running statistics; the consumer (the
        next block, else the first neck layer, else the classifier) divides the incoming weights
        of replicated channels by their copy count, so the model computes the same function in
        eval mode. Returns the channel map ([width] int64, new channel -> old channel); a caller
        that keeps its own classifiers on the neck output must widen them when the neck is empty.
        Parameters of the grown layers are new objects: rebuild the optimizer.
        """
        layer = self.check_layer(layer)
        old = self.widths[layer]
        if not isinstance(width, int) or isinstance(width, bool) or width < old:
            raise _config_error(
                f"Cannot widen conv layer {layer} to {width!r} channels: it already has {old}; the new width must be "
                f">= {old}."
            )
        mapping = replication_map(old, width, generator)
        if width == old:
            return mapping
        self.blocks[layer] = wider_block(self.blocks[layer], mapping, self.make_block)
        if layer + 1 < len(self.blocks):
            self.blocks[layer + 1] = wider_consumer_conv(self.blocks[layer + 1], mapping, self.make_block)
        elif len(self.neck):
            self.neck[0] = wider_consumer_linear(self.neck[0], mapping, self.feature_pool_size**2)
        elif isinstance(self.head, nn.Linear):
            self.head = wider_consumer_linear(self.head, mapping, self.feature_pool_size**2)
        self.widths[layer] = width
        if not len(self.neck):
            self.head_hidden_size = self.widths[-1] * self.feature_pool_size**2
        return mapping

    @torch.no_grad()
    def deepen(self, layer: int) -> None:
        """Insert an identity-initialized block (Net2DeeperNet) right after block ``layer`` (after
        its pool, if any), as wide as ``layer`` and without a pool. Same function in eval mode;
        the module list changes: rebuild the optimizer."""
        layer = self.check_layer(layer)
        width = self.widths[layer]
        self.blocks.insert(layer + 1, identity_block(width, self.make_block, self.blocks[layer]))
        self.widths.insert(layer + 1, width)
        self.pool.insert(layer + 1, False)


def check_vgg_shape(config: Any, what: str) -> None:
    """Check the shape fields a VGG-BN config carries (``widths``, ``pool``, ``head_hidden``,
    ``dropout``, ``feature_pool_size``); ``what`` names the model in the message ("a collective")."""
    if not config.widths:
        raise _config_error(f"widths is empty: {what} model needs at least one conv layer.")
    if any(w <= 0 for w in config.widths):
        raise _config_error(f"Every conv width must be positive, got widths={config.widths}.")
    if len(config.pool) != len(config.widths):
        raise _config_error(
            f"pool has {len(config.pool)} flags but there are {len(config.widths)} conv layers; "
            "give one flag per layer."
        )
    if any(w <= 0 for w in config.head_hidden):
        raise _config_error(f"Every head_hidden width must be positive, got {config.head_hidden}.")
    if not 0.0 <= config.dropout < 1.0:
        raise _config_error(f"dropout must be in [0, 1), got {config.dropout}.")
    if config.feature_pool_size <= 0:
        raise _config_error(f"feature_pool_size must be positive, got {config.feature_pool_size}.")


def backbone_from_config(config: Any) -> VGGBN:
    """The headless :class:`VGGBN` (``num_classes=0``, weights left to the caller's
    ``_init_weights``) that a collective or individual model config describes: both carry
    ``widths``, ``pool``, ``head_hidden``, ``in_channels``, ``kernel_size``,
    ``feature_pool_size`` and ``dropout``."""
    return VGGBN(
        widths=config.widths,
        pool=config.pool,
        head_hidden=config.head_hidden,
        num_classes=0,
        in_chans=config.in_channels,
        kernel_size=config.kernel_size,
        feature_pool_size=config.feature_pool_size,
        drop_rate=config.dropout,
        init_weights=False,
    )


def _cfg(**kwargs: Any) -> dict[str, Any]:
    return {
        "url": "",
        "num_classes": 100,
        "input_size": (3, 32, 32),
        "pool_size": None,
        "crop_pct": 1.0,
        "interpolation": "bilinear",
        "mean": VGG_BN_MEAN,
        "std": VGG_BN_STD,
        "first_conv": "blocks.0.conv",
        "classifier": "head",
        "license": "apache-2.0",
        **kwargs,
    }


default_cfgs = generate_default_cfgs(
    {
        "learngene_vgg_tiny.untrained": _cfg(),
        "learngene_vgg_small.untrained": _cfg(),
        "learngene_vgg_paper.untrained": _cfg(),
    }
)


def _create_vgg_bn(variant: str, size: str, pretrained: bool = False, **kwargs: Any) -> VGGBN:
    arch = VGG_BN_ARCHS[size]
    model_args = {
        "widths": arch["widths"],
        "pool": arch["pool"],
        "head_hidden": arch["head_hidden"],
        "drop_rate": arch["dropout"],
    }
    model_args.update(kwargs)
    out_indices = model_args.pop("out_indices", tuple(range(len(model_args["widths"]))))
    return build_model_with_cfg(
        VGGBN,
        variant,
        pretrained,
        feature_cfg={"feature_cls": "getter", "out_indices": out_indices},
        pretrained_filter_fn=timm_state_dict,
        **model_args,
    )


def _register(fn):
    """timm's ``register_model``, except in a second copy of this module (a remote-code copy next
    to the installed package), which leaves the names pointing at the package's class."""
    if is_model(fn.__name__) and not __name__.startswith("learngene_hf."):
        return fn
    return register_model(fn)


@_register
def learngene_vgg_tiny(pretrained: bool = False, **kwargs: Any) -> VGGBN:
    """4 conv blocks 8-8-16-16 (2 pools), neck 32: for tests."""
    return _create_vgg_bn("learngene_vgg_tiny", "tiny", pretrained, **kwargs)


@_register
def learngene_vgg_small(pretrained: bool = False, **kwargs: Any) -> VGGBN:
    """6 conv blocks 32-32-64-64-128-128 (3 pools), neck 256: CPU-sized."""
    return _create_vgg_bn("learngene_vgg_small", "small", pretrained, **kwargs)


@_register
def learngene_vgg_paper(pretrained: bool = False, **kwargs: Any) -> VGGBN:
    """The Learngene paper's collective model: 13 conv blocks 64..256 (5 pools), neck 1024-1024."""
    return _create_vgg_bn("learngene_vgg_paper", "paper", pretrained, **kwargs)
