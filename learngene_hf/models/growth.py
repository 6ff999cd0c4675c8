"""Function-preserving growth operators (Net2Net, Chen et al. 2016) for conv/BatchNorm blocks.

* :func:`wider_block` + :func:`wider_consumer`: Net2WiderNet. New output channels are copies of
  randomly chosen existing ones (conv filter, BatchNorm affine parameters *and* running
  statistics); the layer that reads them divides the incoming weights of every replicated channel
  by its number of copies, so the sum it computes is unchanged.
* :func:`identity_block`: Net2DeeperNet. A conv block that computes the identity on non-negative
  inputs (the output of a ReLU) in eval mode: Dirac conv kernel, BatchNorm set to ``x -> x``.

Exact function preservation holds in eval mode (BatchNorm using running statistics). In train mode
BatchNorm normalizes with batch statistics, so the grown model is equivalent only up to that.

Torch-only on purpose: this module travels with models pushed to the Hub.
"""

from __future__ import annotations

import torch
from torch import nn


def replication_map(old_width: int, new_width: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Map each of ``new_width`` channels to the old channel it copies ([new_width] int64).

    The first ``old_width`` entries are the identity; the rest are drawn uniformly at random.
    """
    extra = torch.randint(0, old_width, (new_width - old_width,), generator=generator)
    return torch.cat([torch.arange(old_width), extra])


@torch.no_grad()
def wider_block(block: nn.Module, mapping: torch.Tensor, make_block) -> nn.Module:
    """Return a copy of conv block ``block`` with output channels ``mapping`` ([new_width]).

    ``make_block(in_channels, out_channels)`` builds an empty block of the same kind.
    """
    conv, bn = block.conv, block.bn
    new = make_block(conv.in_channels, len(mapping)).to(device=conv.weight.device, dtype=conv.weight.dtype)
    new.conv.weight.copy_(conv.weight[mapping])
    for name in ("weight", "bias", "running_mean", "running_var"):
        getattr(new.bn, name).copy_(getattr(bn, name)[mapping])
    new.bn.num_batches_tracked.copy_(bn.num_batches_tracked)
    new.train(block.training)
    return new


def _split_counts(mapping: torch.Tensor) -> torch.Tensor:
    """For every new channel, how many new channels copy the same old channel ([new_width] float)."""
    counts = torch.bincount(mapping)
    return counts[mapping].to(torch.float32)


@torch.no_grad()
def wider_consumer_conv(block: nn.Module, mapping: torch.Tensor, make_block) -> nn.Module:
    """Return a copy of conv block ``block`` whose *input* channels follow ``mapping``, with the
    weights of replicated channels divided by their copy count (Net2WiderNet's second half)."""
    conv = block.conv
    new = make_block(len(mapping), conv.out_channels).to(device=conv.weight.device, dtype=conv.weight.dtype)
    scale = _split_counts(mapping).to(conv.weight)
    new.conv.weight.copy_(conv.weight[:, mapping] / scale.view(1, -1, 1, 1))
    new.bn.load_state_dict(block.bn.state_dict())
    new.train(block.training)
    return new


@torch.no_grad()
def wider_consumer_linear(linear: nn.Linear, mapping: torch.Tensor, features_per_channel: int) -> nn.Linear:
    """Return a copy of ``linear`` that reads a flattened feature map whose channels now follow
    ``mapping``. Each channel contributes ``features_per_channel`` consecutive inputs (the
    pooled spatial positions, channel-major as ``torch.flatten`` lays them out)."""
    weight = linear.weight.view(linear.out_features, -1, features_per_channel)
    scale = _split_counts(mapping).to(weight).view(1, -1, 1)
    new_weight = (weight[:, mapping] / scale).reshape(linear.out_features, -1)
    new = nn.Linear(new_weight.shape[1], linear.out_features, bias=linear.bias is not None)
    new = new.to(device=linear.weight.device, dtype=linear.weight.dtype)
    new.weight.copy_(new_weight)
    if linear.bias is not None:
        new.bias.copy_(linear.bias)
    return new


@torch.no_grad()
def identity_block(channels: int, make_block, like: nn.Module) -> nn.Module:
    """A conv block that maps non-negative inputs to themselves in eval mode (Net2DeeperNet).

    The kernel is a Dirac delta; BatchNorm has mean 0, variance 1 and scale sqrt(1 + eps) so that
    ``(x - 0) / sqrt(1 + eps) * sqrt(1 + eps) + 0 == x``; the ReLU then keeps ``x >= 0`` as is.
    ``like`` supplies device, dtype and train/eval mode.
    """
    ref = like.conv.weight
    new = make_block(channels, channels).to(device=ref.device, dtype=ref.dtype)
    nn.init.dirac_(new.conv.weight)
    bn = new.bn
    bn.running_mean.zero_()
    bn.running_var.fill_(1.0)
    bn.weight.fill_((1.0 + bn.eps) ** 0.5)
    bn.bias.zero_()
    new.train(like.training)
    return new
