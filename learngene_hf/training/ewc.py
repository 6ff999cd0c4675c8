"""Elastic weight consolidation (Kirkpatrick et al. 2017) for a growing multi-head model.

After each task, :meth:`EWC.consolidate` estimates the diagonal (empirical) Fisher information of
the shared parameters (backbone and MLP neck; task heads are excluded: each task owns its head) on
that task's images, adds it to the running Fisher and anchors the parameters at their current
values. While later tasks train, :meth:`EWC.penalty` returns

    1 / 2 * sum_i min(weight * F_i, max_curvature) * (theta_i - theta*_i)^2

The cap ``max_curvature`` bounds the penalty's curvature per parameter. The Fisher of every task
is added to a running sum, so ``weight * F`` keeps growing along a stream; once it passes the
optimiser's stability limit (for SGD with momentum ``m`` and learning rate ``lr``: ``2 (1 + m) /
lr``) the anchored parameters oscillate with growing amplitude and the loss becomes NaN. This
happened with weight 3 at task 6 of a 15-task stream. :func:`sgd_max_curvature` gives half of that
limit, which the trainer uses for SGD: the penalty then pulls as hard as is stable and no harder.

Parameters are keyed by *stable* names (``conv3.conv.weight`` rather than ``blocks.3.conv.weight``)
so a deepened model (layers inserted) still matches. When growth changes a parameter's shape,
:meth:`EWC.sync` re-anchors it at its current value (growth preserves the function, so the grown
tensor is the same solution) and pads its Fisher with zeros: channels that already existed keep
their importance, new channels are free capacity.

The trainer (:mod:`learngene_hf.training.trainer`) syncs, penalises and consolidates after every
task; the checkpoint (:mod:`learngene_hf.training.run`) saves :meth:`EWC.state_tensors`.
"""

from __future__ import annotations

from typing import Iterable

import torch
from torch import nn

from ..errors import ConfigError


def stable_parameters(model: nn.Module) -> dict[str, nn.Parameter]:
    """Shared parameters of a collective model by stable name (``<layer name>.<param>`` for conv
    blocks, ``neck.<param>`` for the MLP); task heads are left out."""
    if hasattr(model, "shared_parameters"):  # model families that name their shared parameters
        return model.shared_parameters()
    out: dict[str, nn.Parameter] = {}
    for name, block in zip(model.config.layer_names, model.blocks):
        for pname, param in block.named_parameters():
            out[f"{name}.{pname}"] = param
    for pname, param in model.neck.named_parameters():
        out[f"neck.{pname}"] = param
    return out


def sgd_max_curvature(lr: float, momentum: float) -> float:
    """Half of the largest curvature that SGD with heavy-ball ``momentum`` at learning rate ``lr``
    can follow without diverging (the limit is ``2 (1 + momentum) / lr``)."""
    if not lr > 0 or not 0 <= momentum < 1:
        raise ConfigError(f"sgd_max_curvature needs lr > 0 and 0 <= momentum < 1, got lr={lr}, momentum={momentum}.")
    return (1.0 + momentum) / lr


class EWC:
    """Diagonal-Fisher EWC penalty over the shared parameters of a collective model.

    Args:
        weight: the penalty weight (lambda); 0 disables the penalty.
        max_curvature: upper bound on ``weight * F`` per parameter (None: no bound); see the
            module docstring and :func:`sgd_max_curvature`.
    """

    def __init__(self, weight: float, max_curvature: float | None = None):
        if not weight >= 0:
            raise ConfigError(f"ewc_weight must be >= 0, got {weight}.")
        if max_curvature is not None and not max_curvature > 0:
            raise ConfigError(f"max_curvature must be > 0 or None (no bound), got {max_curvature}.")
        self.weight = float(weight)
        self.max_curvature = None if max_curvature is None else float(max_curvature)
        self.fisher: dict[str, torch.Tensor] = {}
        self.anchor: dict[str, torch.Tensor] = {}
        self._coefficients: dict[str, torch.Tensor] = {}  # weight * F, capped; rebuilt when F changes

    @property
    def active(self) -> bool:
        """True once a task has been consolidated and the weight is positive."""
        return self.weight > 0 and bool(self.fisher)

    @torch.no_grad()
    def sync(self, model: nn.Module) -> None:
        """Follow growth: re-anchor parameters whose shape changed and zero-pad their Fisher."""
        params = stable_parameters(model)
        for name, param in params.items():
            old = self.fisher.get(name)
            if old is None or old.shape == param.shape:
                if old is not None:
                    self.fisher[name] = old.to(param.device)
                    self.anchor[name] = self.anchor[name].to(param.device)
                continue
            fisher = torch.zeros_like(param, dtype=torch.float32)
            common = tuple(slice(0, min(a, b)) for a, b in zip(old.shape, param.shape))
            fisher[common] = old[common].to(param.device)
            self.fisher[name] = fisher
            self.anchor[name] = param.detach().float().clone()
        self._coefficients = {}

    def coefficient(self, name: str) -> torch.Tensor:
        """``min(weight * F, max_curvature)`` of the parameter ``name``: its penalty curvature."""
        coef = self._coefficients.get(name)
        fisher = self.fisher[name]
        if coef is None or coef.shape != fisher.shape or coef.device != fisher.device:
            coef = self.weight * fisher
            if self.max_curvature is not None:
                coef = coef.clamp(max=self.max_curvature)
            self._coefficients[name] = coef
        return coef

    def capped_fraction(self) -> float:
        """Fraction of the penalised parameters whose curvature is at the cap (0 without a cap)."""
        if self.max_curvature is None or not self.fisher:
            return 0.0
        capped = sum(int((self.weight * f >= self.max_curvature).sum()) for f in self.fisher.values())
        return capped / sum(f.numel() for f in self.fisher.values())

    def penalty(self, model: nn.Module) -> torch.Tensor:
        """The scalar EWC penalty (0 before the first consolidation); differentiable."""
        params = stable_parameters(model)
        ref = next(iter(params.values()))
        total = torch.zeros((), device=ref.device, dtype=torch.float32)
        if not self.active:
            return total
        for name, fisher in self.fisher.items():
            param = params.get(name)
            if param is None or param.shape != fisher.shape:
                continue  # a parameter removed, or growth not yet synced
            total = total + (self.coefficient(name) * (param.float() - self.anchor[name]).square()).sum()
        return 0.5 * total

    def consolidate(
        self, model: nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]], task_id: int, reduce=None
    ) -> None:
        """Estimate the Fisher on ``batches`` of (pixel_values [B,C,H,W] float, labels [B] local ids)
        for head ``task_id``, add it to the running Fisher and anchor the current parameters.

        Each batch contributes ``B * grad^2`` of its mean log-likelihood (the empirical Fisher of
        a batch-mean gradient, rescaled to per-image units). The model is put in eval mode for
        the estimate (BatchNorm running statistics, no dropout) and restored afterwards.
        ``reduce(tensor) -> tensor`` averages across processes (e.g. ``accelerator.reduce(t,
        "mean")``); pass ``None`` in a single process.
        """
        params = stable_parameters(model)
        sums = {name: torch.zeros_like(p, dtype=torch.float32) for name, p in params.items()}
        count = 0
        was_training = model.training
        model.eval()
        try:
            for pixel_values, labels in batches:
                model.zero_grad(set_to_none=True)
                logits = model(pixel_values=pixel_values, task_id=task_id).logits.float()
                nn.functional.cross_entropy(logits, labels).backward()
                for name, p in params.items():
                    if p.grad is not None:
                        sums[name] += p.grad.detach().float().square() * labels.shape[0]
                count += 1
        finally:
            model.zero_grad(set_to_none=True)
            model.train(was_training)
        if count == 0:
            raise ConfigError("EWC.consolidate got no batches; give it at least one batch of the task's images.")
        with torch.no_grad():
            for name, p in params.items():
                fisher = sums[name] / count
                if reduce is not None:
                    fisher = reduce(fisher)
                if name in self.fisher and self.fisher[name].shape == fisher.shape:
                    self.fisher[name] = self.fisher[name] + fisher
                else:
                    self.fisher[name] = fisher
                self.anchor[name] = p.detach().float().clone()
        self._coefficients = {}

    # ------------------------------------------------------------------ checkpointing
    def state_tensors(self) -> dict[str, torch.Tensor]:
        """Flat {"fisher/<name>": tensor, "anchor/<name>": tensor} for safetensors."""
        out = {f"fisher/{k}": v.detach().cpu().contiguous() for k, v in self.fisher.items()}
        out.update({f"anchor/{k}": v.detach().cpu().contiguous() for k, v in self.anchor.items()})
        return out

    def load_state_tensors(self, tensors: dict[str, torch.Tensor], device: torch.device | str = "cpu") -> None:
        """Inverse of :meth:`state_tensors`."""
        self.fisher = {k[len("fisher/") :]: v.to(device) for k, v in tensors.items() if k.startswith("fisher/")}
        self.anchor = {k[len("anchor/") :]: v.to(device) for k, v in tensors.items() if k.startswith("anchor/")}
        self._coefficients = {}
