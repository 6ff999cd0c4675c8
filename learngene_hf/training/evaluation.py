"""Evaluation of a collective model during and after training: task accuracy, open-world AUROC
and the embeddings its open-world statistics are built from.

:func:`evaluate_task` is the accuracy of one task head, :func:`open_world_aurocs` the AUROC of
every open-world score (:data:`~learngene_hf.training.config.OPEN_WORLD_SCORES`, computed by
:func:`~learngene_hf.training.openworld.unknown_scores`) and :func:`open_world_auroc` that of one
logit score; both gather across ``accelerate`` processes (:func:`gathered`). :func:`embeddings`
is ``model.embed`` of a set of images on the CPU. The trainer that calls these is
:mod:`learngene_hf.training.trainer`; batches come from :mod:`learngene_hf.training.loading`.
"""

from __future__ import annotations

import torch

from ..errors import ConfigError
from ..models.collective import CollectiveModel
from .config import OPEN_WORLD_SCORES
from .loading import make_loader, model_inputs
from .openworld import ClassGaussians, FeatureBank, auroc, unknown_scores


@torch.no_grad()
def gathered(
    accelerator, model: CollectiveModel, images, labels, batch_size: int, fn
) -> tuple[torch.Tensor, torch.Tensor]:
    """``fn(model, pixel_values)`` of every batch of ``images`` and the matching ``labels``,
    gathered across processes (:meth:`accelerate.Accelerator.gather_for_metrics`), on the CPU."""
    loader = accelerator.prepare(make_loader(images, labels, batch_size, shuffle=False))
    outputs, targets = [], []
    for x, y in loader:
        out = fn(model, model_inputs(x))
        out, y = accelerator.gather_for_metrics((out.contiguous(), y.contiguous()))
        outputs.append(out.cpu())
        targets.append(y.cpu())
    return torch.cat(outputs), torch.cat(targets)


def evaluate_task(accelerator, model: CollectiveModel, images, labels, task_id: int, batch_size: int = 256) -> float:
    """Accuracy of head ``task_id`` on ``images`` [N,3,H,W] / ``labels`` [N] (local ids), gathered
    across processes."""
    was_training = model.training
    model.eval()
    try:
        preds, targets = gathered(
            accelerator,
            model,
            images,
            labels,
            batch_size,
            lambda m, x: m(pixel_values=x, task_id=task_id).logits.argmax(1),
        )
    finally:
        model.train(was_training)
    return float((preds == targets).float().mean())


def open_world_aurocs(
    accelerator,
    model: CollectiveModel,
    unknown_images,
    known_images,
    gaussians: ClassGaussians | None = None,
    batch_size: int = 256,
    bank: FeatureBank | None = None,
    knn_k: int = 5,
) -> dict[str, float]:
    """AUROC of every open-world score (:func:`~learngene_hf.training.openworld.unknown_scores`)
    separating ``unknown_images`` [N_u,3,H,W] (classes not learnt) from ``known_images``
    [N_k,3,H,W] (held-out images of learnt classes). "mahalanobis" needs ``gaussians``, "knn"
    a non-empty ``bank`` (scored with its ``knn_k``-th nearest neighbour)."""
    was_training = model.training
    model.eval()
    precision = gaussians.precision() if gaussians is not None and len(gaussians) else None
    available = {"mahalanobis": precision is not None, "knn": bank is not None and len(bank) > 0}
    names = [m for m in OPEN_WORLD_SCORES if available.get(m, True)]

    def score(m, x):
        scores = unknown_scores(m, x, gaussians, precision, bank, knn_k)
        return torch.stack([scores[name] for name in names], 1)

    try:
        unknown, _ = gathered(
            accelerator, model, unknown_images, torch.zeros(len(unknown_images), dtype=torch.long), batch_size, score
        )
        known, _ = gathered(
            accelerator, model, known_images, torch.zeros(len(known_images), dtype=torch.long), batch_size, score
        )
    finally:
        model.train(was_training)
    return {name: auroc(unknown[:, i], known[:, i]) for i, name in enumerate(names)}


def open_world_auroc(
    accelerator, model: CollectiveModel, unknown_images, known_images, method: str = "energy", batch_size: int = 256
) -> float:
    """AUROC of the logit score ``method`` ("energy" or "msp") separating ``unknown_images``
    from ``known_images`` (see :func:`open_world_aurocs` for every score at once)."""
    if method not in ("energy", "msp"):
        raise ConfigError(
            f"open_world_auroc takes 'energy' or 'msp' (got {method!r}); use open_world_aurocs for "
            "'mahalanobis' and 'knn'."
        )
    return open_world_aurocs(accelerator, model, unknown_images, known_images, None, batch_size)[method]


@torch.no_grad()
def embeddings(model: CollectiveModel, images: torch.Tensor, batch_size: int, device) -> torch.Tensor:
    """``model.embed`` of ``images`` in eval mode, [N, D] on the CPU (every process computes all)."""
    was_training = model.training
    model.eval()
    try:
        out = [
            model.embed(model_inputs(images[i : i + batch_size].to(device))).float().cpu()
            for i in range(0, len(images), batch_size)
        ]
    finally:
        model.train(was_training)
    return torch.cat(out)
