"""Linear classifiers on frozen features: the standardization and the L2 logistic regression that
both the frozen-feature baselines (:mod:`~learngene_hf.fewshot.baselines`) and the recipe's linear
probe at the start of fine-tuning (``FewShotConfig(lp_init=True)``) fit on a support set.

* :func:`feature_stats`: per-feature mean and standard deviation of a support set's features.
* :data:`STD_FLOOR`: the floor of those deviations, as a fraction of their mean, when the classifier
  fitted on them goes on to train.
* :func:`fit_logistic`: multinomial logistic regression with an L2 penalty, full-batch L-BFGS from
  zero weights (deterministic).
* :func:`folded`: the weights of that classifier on *raw* features, with the standardization
  folded in, for a plain ``nn.Linear``.
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import ConfigError

#: ``feature_stats(..., floor=STD_FLOOR)`` for the recipe's linear probe (``FewShotConfig.lp_init``).
STD_FLOOR = 0.1


def feature_stats(features: torch.Tensor, floor: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """``(mean [D], std [D])`` of ``features`` [N, D]; a feature with (near) zero spread gets std 1
    (it is only centred), and a single row gets std 1 everywhere. ``floor`` > 0 raises every std to
    at least ``floor`` times the mean std: a classifier that keeps training (the recipe's linear
    probe at the start of fine-tuning) must not carry huge weights on features that barely vary
    on the support set."""
    mean = features.mean(0)
    std = features.std(0, unbiased=False) if features.shape[0] > 1 else torch.ones_like(mean)
    std = torch.where(std > 1e-6, std, torch.ones_like(std))
    return mean, std.clamp_min(floor * float(std.mean())) if floor > 0 else std


def fit_logistic(
    features: torch.Tensor, labels: torch.Tensor, num_labels: int, l2: float, max_iter: int = 100
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(weight [K, D], bias [K])`` minimising the mean cross-entropy of ``features @ weight.T +
    bias`` on ``labels`` [N] plus ``l2 / 2 * ||weight||^2`` (L-BFGS with strong Wolfe line search,
    from zero weights)."""
    if not l2 >= 0:
        raise ConfigError(f"l2 must be >= 0, got {l2}.")
    f = features.detach()
    f = f if f.dtype == torch.float64 else f.float()  # float64 features are fitted in float64
    y = labels.to(device=f.device, dtype=torch.int64)
    w = torch.zeros(num_labels, f.shape[1], device=f.device, dtype=f.dtype, requires_grad=True)
    b = torch.zeros(num_labels, device=f.device, dtype=f.dtype, requires_grad=True)
    optimizer = torch.optim.LBFGS(
        [w, b], lr=1.0, max_iter=max_iter, history_size=20, tolerance_grad=1e-7, tolerance_change=1e-10,
        line_search_fn="strong_wolfe",
    )  # fmt: skip

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = nn.functional.cross_entropy(f @ w.T + b, y) + 0.5 * float(l2) * w.pow(2).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        optimizer.step(closure)
    return w.detach(), b.detach()


def folded(
    weight: torch.Tensor, bias: torch.Tensor, mean: torch.Tensor, std: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The weights on raw features of a classifier fitted on standardized ones:
    ``W (f - mean) / std + b == (W / std) f + (b - (W / std) mean)``."""
    scaled = weight / std
    return scaled, bias - scaled @ mean
