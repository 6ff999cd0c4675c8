"""Building blocks shared by the collective and the individual model families.

Both families are plain VGG-style stacks: ``conv3x3 -> BatchNorm -> ReLU`` blocks (timm's
:class:`~timm.layers.ConvNormAct`), some followed by a 2x2 max pool, then an adaptive average
pool, a small MLP neck and linear classifier(s). Keeping the block identical in both families is
what lets a learngene (a run of blocks) move from one model into the other tensor for tensor.

This module depends only on torch and timm, so that it can travel with a model pushed to the Hub
(``register_for_auto_class`` copies it next to the weights for ``trust_remote_code=True``).
"""

from __future__ import annotations

import sys
from typing import Sequence

import torch
from timm.layers import ConvNormAct
from torch import nn


def project_error(kind: str, message: str) -> ValueError:
    """``learngene_hf.errors.<kind>(message)`` when the package is loaded; a plain ValueError in a
    remote-code copy of the model files, where learngene_hf may not be installed. (The package is
    looked up, not imported: the model files import nothing but torch, timm, transformers and
    their siblings.)"""
    errors = sys.modules.get("learngene_hf.errors")
    return getattr(errors, kind)(message) if errors is not None else ValueError(message)


#: Names of the tensors that one conv block holds, relative to the block (state-dict order).
BLOCK_TENSOR_NAMES = (
    "conv.weight",
    "bn.weight",
    "bn.bias",
    "bn.running_mean",
    "bn.running_var",
    "bn.num_batches_tracked",
)


def conv_block(in_channels: int, out_channels: int, kernel_size: int = 3, act_layer: str = "relu") -> ConvNormAct:
    """One ``Conv2d(k, 'same' padding, no bias) -> BatchNorm2d -> act`` block from timm."""
    return ConvNormAct(
        in_channels, out_channels, kernel_size=kernel_size, norm_layer=nn.BatchNorm2d, act_layer=act_layer
    )


def run_blocks(
    blocks: Sequence[nn.Module], pool: Sequence[bool], x: torch.Tensor, start: int = 0, end: int | None = None
) -> torch.Tensor:
    """Apply ``blocks[start:end]`` to ``x`` ([B, C, H, W]); a block whose ``pool`` flag is set is
    followed by a 2x2 max pool (skipped when the map is already 1 pixel wide)."""
    end = len(blocks) if end is None else end
    for index in range(start, end):
        x = blocks[index](x)
        if pool[index] and min(x.shape[-2:]) >= 2:
            x = nn.functional.max_pool2d(x, 2)
    return x


def mlp_neck(in_features: int, hidden: Sequence[int], dropout: float) -> tuple[nn.Sequential, int]:
    """``Linear -> ReLU -> Dropout`` for every width in ``hidden``; returns the module and its
    output width (``in_features`` when ``hidden`` is empty)."""
    layers: list[nn.Module] = []
    width = in_features
    for out in hidden:
        layers += [nn.Linear(width, out), nn.ReLU(inplace=True), nn.Dropout(dropout)]
        width = out
    return nn.Sequential(*layers), width


def init_vgg_weights(module: nn.Module, init) -> None:
    """He-normal conv weights, unit BatchNorm, small normal linear weights, zero biases.

    ``init`` is ``transformers.initialization`` (it skips tensors that were loaded from a file).
    """
    if isinstance(module, nn.Conv2d):
        init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        if module.bias is not None:
            init.zeros_(module.bias)
    elif isinstance(module, nn.BatchNorm2d):
        init.ones_(module.weight)
        init.zeros_(module.bias)
        if module.running_mean is not None:
            init.zeros_(module.running_mean)
            init.ones_(module.running_var)
            init.zeros_(module.num_batches_tracked)
    elif isinstance(module, nn.Linear):
        init.normal_(module.weight, mean=0.0, std=0.01)
        if module.bias is not None:
            init.zeros_(module.bias)
