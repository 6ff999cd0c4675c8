"""Narrower copies of a collective model's layers: weight selection by channels.

A learngene may be taken at a smaller width than the collective model holds it: layer ``j`` keeps
``widths[j]`` evenly spaced output channels (and, from the second layer on, the input channels
its predecessor kept), as in weight selection (Xu et al., "Initializing Models with Larger Ones",
ICLR 2024). That buys depth for bytes: the first six layers at a third of the width cost what the
first three cost at full width.

* :func:`select_evenly`: evenly spaced elements of a tensor, dimension by dimension.
* :func:`narrow_block_state`: one conv block's tensors at a smaller width.
* :func:`scaled_widths` / :func:`widths_for_budget`: the widths of ``layers`` at a scale, and the
  widest uniform scale whose tensors fit a budget of bytes.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch

from ..errors import ConfigError, IncompatibleLearngeneError
from ..models.layers import BLOCK_TENSOR_NAMES

#: Scales :func:`widths_for_budget` tries, widest first (1/64 steps).
SCALE_STEPS = 64


def select_evenly(source: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    """Evenly spaced elements of ``source`` in every dimension, giving a tensor of ``shape``.

    Dimension ``d`` keeps indices ``round(linspace(0, source.shape[d] - 1, shape[d]))``; a
    dimension of equal size is kept whole, so a tensor of the same shape comes back unchanged.
    """
    shape = tuple(int(s) for s in shape)
    if source.dim() != len(shape):
        raise IncompatibleLearngeneError(
            f"Cannot select a {len(shape)}-d tensor {shape} from a {source.dim()}-d one {tuple(source.shape)}."
        )
    out = source
    for d, (have, want) in enumerate(zip(source.shape, shape)):
        if want > have:
            raise IncompatibleLearngeneError(
                f"Weight selection only shrinks: dimension {d} of the target {shape} is larger than the source's "
                f"{tuple(source.shape)}; pick a descendant no wider than the collective model."
            )
        if want < have:
            index = torch.linspace(0, have - 1, want, device=source.device).round().long()
            out = out.index_select(d, index)
    return out.clone()


def narrow_block_state(state: dict[str, torch.Tensor], in_channels: int, out_channels: int) -> dict[str, torch.Tensor]:
    """The tensors of one conv block (:data:`BLOCK_TENSOR_NAMES`: conv weight [out, in, k, k],
    BatchNorm [out]) narrowed to ``in_channels`` -> ``out_channels`` by :func:`select_evenly`."""
    out: dict[str, torch.Tensor] = {}
    for name in BLOCK_TENSOR_NAMES:
        tensor = state[name]
        if name == "conv.weight":
            shape: tuple[int, ...] = (out_channels, in_channels, *tensor.shape[2:])
        elif tensor.dim() == 1:
            shape = (out_channels,)
        else:  # num_batches_tracked, a scalar
            shape = tuple(tensor.shape)
        out[name] = select_evenly(tensor.detach().to("cpu"), shape).contiguous()
    return out


def check_widths(widths: Sequence[int], source_widths: Sequence[int]) -> list[int]:
    """``widths`` as ints, one per layer, each in ``1..source width`` (:class:`ConfigError` if not)."""
    widths = [int(w) for w in widths]
    if len(widths) != len(source_widths):
        raise ConfigError(
            f"widths gives {len(widths)} entries for {len(source_widths)} layers; give one width per layer, e.g. "
            f"widths={[max(1, w // 2) for w in source_widths]}."
        )
    bad = [(w, s) for w, s in zip(widths, source_widths) if not 1 <= w <= s]
    if bad:
        raise ConfigError(
            f"Each width must be between 1 and the collective layer's width {list(source_widths)}, got {widths}; "
            "weight selection only narrows."
        )
    return widths


def scaled_widths(source_widths: Sequence[int], scale: float) -> list[int]:
    """``round(w * scale)`` of every width, at least 1 and at most ``w``."""
    if not 0 < scale <= 1:
        raise ConfigError(f"scale must be in (0, 1], got {scale}.")
    return [min(int(w), max(1, int(round(w * scale)))) for w in source_widths]


def block_bytes(in_channels: int, widths: Sequence[int], kernel_size: int, element_size: int = 4) -> int:
    """Bytes a learngene's conv blocks of ``widths`` (input ``in_channels``) take as stored: conv
    weights, BatchNorm scale, shift, running mean and variance, and the int64 batch counter."""
    total, previous = 0, int(in_channels)
    for width in widths:
        total += (previous * width * kernel_size * kernel_size + 4 * width) * element_size + 8
        previous = int(width)
    return total


def widths_for_budget(model: Any, layers: Sequence[int], max_bytes: int) -> list[int] | None:
    """The widths of the collective ``model``'s conv blocks ``layers`` at the widest uniform scale
    (1, 63/64, ... 1/64) whose tensors take at most ``max_bytes``; ``None`` when not even the
    narrowest fits."""
    blocks = [model.blocks[int(i)] for i in layers]
    source = [int(b.conv.out_channels) for b in blocks]
    in_channels, kernel = int(blocks[0].conv.in_channels), int(blocks[0].conv.kernel_size[0])
    element = blocks[0].conv.weight.element_size()
    for step in range(SCALE_STEPS, 0, -1):
        widths = scaled_widths(source, step / SCALE_STEPS)
        if block_bytes(in_channels, widths, kernel, element) <= max_bytes:
            return widths
    return None
