"""Arithmetic counts: the floating-point operations of one forward pass of a model, so that a small
model can be shown to be cheap to run and a training loop's rate compared with the machine's."""

from __future__ import annotations

from typing import Any, Sequence

__all__ = ["forward_flops"]


def forward_flops(model: Any, image_shape: Sequence[int]) -> int:
    """Floating-point operations of one forward pass of ``model`` (a ``torch.nn.Module``) on one
    image of ``image_shape`` ``(C, H, W)`` in eval mode, counted by ``torch.utils.flop_counter`` (a
    multiply-add counts 2; convolutions and matrix products, the rest is small). A frozen-feature
    classifier that is not fitted yet counts its features only."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    was_training = model.training
    model.eval()
    try:
        reference = next(model.parameters(), None)
        x = torch.zeros(1, *image_shape, dtype=reference.dtype if reference is not None else torch.float32)
        x = x.to(reference.device) if reference is not None else x
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            if getattr(model, "fitted", True):
                model(x)
            else:  # the classifier of a frozen-feature baseline is a small matmul
                model.raw_features(x)
        return int(counter.get_total_flops())
    finally:
        model.train(was_training)
