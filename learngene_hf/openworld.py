"""Open-world scoring: how well does a model tell images of unseen classes from known ones?

:func:`auroc` is the rank-based area under the ROC curve (the Mann-Whitney U statistic divided by
``n_unknown * n_known``, ties counted as one half), with no sklearn dependency. The per-image
score is :meth:`learngene_hf.CollectiveModel.unknown_score` (higher = more unknown).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from .errors import DataError


def auroc(scores_unknown: Sequence[float] | np.ndarray | torch.Tensor, scores_known: Sequence[float] | np.ndarray | torch.Tensor) -> float:
    """Probability that a random unknown image scores higher than a random known one.

    Args:
        scores_unknown: [N_u] scores of images of classes the model has not learnt.
        scores_known: [N_k] scores of held-out images of classes it has learnt.

    Returns:
        AUROC in [0, 1]; 0.5 is chance, 1.0 a perfect separation. Ties count one half.
    """
    unknown = np.asarray(torch.as_tensor(scores_unknown).detach().cpu().double().flatten())
    known = np.asarray(torch.as_tensor(scores_known).detach().cpu().double().flatten())
    if unknown.size == 0 or known.size == 0:
        raise DataError(
            f"auroc needs at least one score on each side (got {unknown.size} unknown, {known.size} known); "
            "give it scores of both unknown and known images."
        )
    if not (np.isfinite(unknown).all() and np.isfinite(known).all()):
        raise DataError("auroc got NaN or infinite scores; check the model outputs (diverged training?).")
    values = np.concatenate([unknown, known])
    order = np.argsort(values, kind="mergesort")
    sorted_values = values[order]
    ranks = np.empty(values.size, dtype=np.float64)
    # average ranks (1-based) over runs of tied values
    starts = np.flatnonzero(np.r_[True, sorted_values[1:] != sorted_values[:-1]])
    ends = np.r_[starts[1:], values.size]
    for start, end in zip(starts, ends):
        ranks[order[start:end]] = (start + end + 1) / 2.0
    n_u, n_k = unknown.size, known.size
    u_statistic = ranks[:n_u].sum() - n_u * (n_u + 1) / 2.0
    return float(u_statistic / (n_u * n_k))
