"""Open-world scoring: how well does a model tell images of unseen classes from known ones?

:func:`auroc` is the rank-based area under the ROC curve (the Mann-Whitney U statistic divided by
``n_unknown * n_known``, ties counted as one half), with no sklearn dependency. The per-image
score is :meth:`learngene_hf.CollectiveModel.unknown_score` (higher = more unknown);
:func:`unknown_scores` gives every score at once (their names:
:data:`learngene_hf.training.config.OPEN_WORLD_SCORES`), including the Mahalanobis distance to
the class means of :class:`ClassGaussians` and the deep nearest-neighbour distance to the
training embeddings kept in a :class:`FeatureBank`. The trainer's AUROC of every score over a
model's embeddings is :func:`learngene_hf.training.evaluation.open_world_aurocs`.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from ..errors import DataError
from ..models.modeling_utils import logit_scores


def auroc(
    scores_unknown: Sequence[float] | np.ndarray | torch.Tensor,
    scores_known: Sequence[float] | np.ndarray | torch.Tensor,
) -> float:
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


class ClassGaussians:
    """Class-conditional Gaussians with one shared covariance over a model's embedding, for the
    Mahalanobis open-world score (Lee et al. 2018).

    Every learnt ``(task, class)`` pair is one component: :meth:`add` takes the embeddings of one
    task's training images and stores their per-class means; the within-class scatter of all
    tasks is pooled into one covariance. A class that comes back in a later task simply gets a
    second component (its images then count as known when close to either mean).

    Args:
        shrinkage: weight of the scaled identity mixed into the covariance before inverting
            (Ledoit-Wolf style; keeps the precision stable with few images per dimension).
    """

    def __init__(self, shrinkage: float = 0.1):
        if not 0.0 <= shrinkage <= 1.0:
            raise DataError(f"shrinkage must be in [0, 1], got {shrinkage}.")
        self.shrinkage = float(shrinkage)
        self.means = torch.zeros(0, 0)
        self.scatter = torch.zeros(0, 0, dtype=torch.float64)
        self.count = 0

    def __len__(self) -> int:
        return int(self.means.shape[0])

    @torch.no_grad()
    def add(self, features: torch.Tensor, labels: torch.Tensor) -> None:
        """Add one component per distinct label of ``features`` [N, D] / ``labels`` [N]."""
        features = features.detach().double().cpu()
        labels = labels.detach().cpu()
        if features.ndim != 2 or len(features) != len(labels) or len(features) == 0:
            raise DataError(
                f"ClassGaussians.add needs features [N, D] and labels [N] with N > 0, got "
                f"{tuple(features.shape)} and {tuple(labels.shape)}."
            )
        if len(self) and features.shape[1] != self.means.shape[1]:
            raise DataError(
                f"Features have {features.shape[1]} dims, the stored means {self.means.shape[1]}; the "
                "embedding width changed."
            )
        means, scatter = [], torch.zeros(features.shape[1], features.shape[1], dtype=torch.float64)
        for label in labels.unique(sorted=True):
            block = features[labels == label]
            mean = block.mean(0)
            centred = block - mean
            scatter += centred.T @ centred
            means.append(mean)
        new_means = torch.stack(means).float()
        self.means = new_means if not len(self) else torch.cat([self.means, new_means])
        self.scatter = scatter if self.count == 0 else self.scatter + scatter
        self.count += int(len(features))

    def precision(self) -> torch.Tensor:
        """Inverse of the shrunk shared covariance [D, D] (float32)."""
        if not len(self):
            raise DataError("ClassGaussians has no component yet: add the embeddings of a learnt task first.")
        dim = self.scatter.shape[0]
        cov = self.scatter / max(self.count - len(self), 1)
        target = torch.eye(dim, dtype=torch.float64) * (torch.trace(cov) / dim).clamp_min(1e-12)
        cov = (1.0 - self.shrinkage) * cov + self.shrinkage * target
        return torch.linalg.inv(cov).float()

    @torch.no_grad()
    def score(self, features: torch.Tensor, precision: torch.Tensor | None = None) -> torch.Tensor:
        """Squared Mahalanobis distance [N] of ``features`` [N, D] to the nearest component
        (higher = more unknown)."""
        precision = self.precision() if precision is None else precision
        precision = precision.to(features.device)
        means = self.means.to(features.device)
        f = features.float()
        fp = f @ precision
        cross = fp @ means.T  # [N, K]
        mp = ((means @ precision) * means).sum(1)  # [K]
        dist = (fp * f).sum(1, keepdim=True) - 2.0 * cross + mp
        return dist.amin(1)

    def state_tensors(self) -> dict[str, torch.Tensor]:
        """Flat tensors for safetensors (see :meth:`load_state_tensors`)."""
        return {
            "gaussians/means": self.means.contiguous(),
            "gaussians/scatter": self.scatter.contiguous(),
            "gaussians/count": torch.tensor([self.count], dtype=torch.int64),
        }

    def load_state_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        """Inverse of :meth:`state_tensors` (missing keys leave it empty)."""
        if "gaussians/means" in tensors:
            self.means = tensors["gaussians/means"].float()
            self.scatter = tensors["gaussians/scatter"].double()
            self.count = int(tensors["gaussians/count"][0])


class FeatureBank:
    """L2-normalised training embeddings of the learnt classes, for the deep nearest-neighbour
    open-world score (Sun et al., ICML 2022, "Out-of-Distribution Detection with Deep Nearest
    Neighbors").

    :meth:`add` takes the embeddings of one task's training images and keeps a random subset of
    at most ``per_class`` of them per class (drawn with the given generator, so a run and its
    resumption keep the same rows); every distinct label of every call is one component, as in
    :class:`ClassGaussians`. :meth:`score` is the Euclidean distance of a normalised embedding to
    its k-th nearest neighbour in the bank. The bank stays small: 50 per class x 75 classes x 256
    dims is 3.8 MB of float32.

    Args:
        per_class: embeddings kept per (task, class) component (>= 1).
    """

    def __init__(self, per_class: int = 50):
        if not isinstance(per_class, int) or isinstance(per_class, bool) or per_class < 1:
            raise DataError(f"FeatureBank per_class must be a positive integer, got {per_class!r}.")
        self.per_class = per_class
        self.features = torch.zeros(0, 0)
        self.components = torch.zeros(0, dtype=torch.int64)

    def __len__(self) -> int:
        return int(self.features.shape[0])

    @property
    def num_components(self) -> int:
        """How many (task, class) components the bank holds."""
        return int(self.components.max()) + 1 if len(self) else 0

    @torch.no_grad()
    def add(self, features: torch.Tensor, labels: torch.Tensor, generator: torch.Generator | None = None) -> None:
        """Keep up to ``per_class`` normalised rows of ``features`` [N, D] for every distinct
        label of ``labels`` [N] (a random subset drawn with ``generator`` when a class has more)."""
        features = features.detach().float().cpu()
        labels = labels.detach().cpu()
        if features.ndim != 2 or labels.ndim != 1 or len(features) != len(labels) or len(features) == 0:
            raise DataError(
                f"FeatureBank.add needs features [N, D] and labels [N] with N > 0, got {tuple(features.shape)} and "
                f"{tuple(labels.shape)}."
            )
        if len(self) and features.shape[1] != self.features.shape[1]:
            raise DataError(
                f"Features have {features.shape[1]} dims, the bank {self.features.shape[1]}; the embedding "
                "width changed."
            )
        if not torch.isfinite(features).all():
            raise DataError("FeatureBank.add got NaN or infinite embeddings; check the model (diverged training?).")
        first = self.num_components
        kept, components = [], []
        for index, label in enumerate(labels.unique(sorted=True)):
            rows = torch.nonzero(labels == label).flatten()
            if len(rows) > self.per_class:
                rows = rows[torch.randperm(len(rows), generator=generator)[: self.per_class]].sort().values
            kept.append(features[rows])
            components.append(torch.full((len(rows),), first + index, dtype=torch.int64))
        new = torch.nn.functional.normalize(torch.cat(kept), dim=1)
        self.features = new if not len(self) else torch.cat([self.features, new])
        self.components = torch.cat([self.components, torch.cat(components)])

    @torch.no_grad()
    def score(self, features: torch.Tensor, k: int = 5) -> torch.Tensor:
        """Distance [N] of the normalised ``features`` [N, D] to their ``k``-th nearest neighbour
        in the bank (in [0, 2]; higher = more unknown)."""
        if not len(self):
            raise DataError("FeatureBank is empty: add the embeddings of a learnt task first.")
        if not isinstance(k, int) or isinstance(k, bool) or not 1 <= k <= len(self):
            raise DataError(
                f"k must be an integer in [1, {len(self)}] (the bank's size), got {k!r}; lower k or keep "
                "more per class."
            )
        if features.ndim != 2 or features.shape[1] != self.features.shape[1]:
            raise DataError(
                f"FeatureBank.score needs features [N, {self.features.shape[1]}], got {tuple(features.shape)}."
            )
        query = torch.nn.functional.normalize(features.float(), dim=1)
        similarity = query @ self.features.to(query.device).T  # [N, M]
        kth = similarity.topk(k, dim=1).values[:, -1]
        return (2.0 - 2.0 * kth).clamp_min(0.0).sqrt()

    def state_tensors(self) -> dict[str, torch.Tensor]:
        """Flat tensors for safetensors (see :meth:`load_state_tensors`)."""
        return {
            "knn/bank": self.features.contiguous(),
            "knn/components": self.components.contiguous(),
            "knn/per_class": torch.tensor([self.per_class], dtype=torch.int64),
        }

    def load_state_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        """Inverse of :meth:`state_tensors` (missing keys leave it empty)."""
        if "knn/bank" not in tensors:
            return
        bank, components = tensors["knn/bank"], tensors.get("knn/components")
        per_class = int(tensors["knn/per_class"][0]) if "knn/per_class" in tensors else self.per_class
        if components is None or bank.ndim != 2 or components.ndim != 1 or len(components) != len(bank):
            raise DataError(
                f"knn/bank must be [M, D] with knn/components [M], got {tuple(bank.shape)} and "
                f"{None if components is None else tuple(components.shape)}."
            )
        if per_class != self.per_class:
            raise DataError(
                f"The saved bank keeps {per_class} embeddings per class, this FeatureBank "
                f"{self.per_class}; create it with FeatureBank({per_class})."
            )
        self.features = bank.float()
        self.components = components.long()


@torch.no_grad()
def unknown_scores(
    model: torch.nn.Module,
    pixel_values: torch.Tensor,
    gaussians: ClassGaussians | None = None,
    precision: torch.Tensor | None = None,
    bank: FeatureBank | None = None,
    knn_k: int = 5,
) -> dict[str, torch.Tensor]:
    """Every open-world score of ``pixel_values`` [B, C, H, W] from one pass through the model's
    shared embedding (``model.embed``) and its task heads (``model.heads``).

    Returns ``{"energy": [B], "msp": [B], "maxlogit": [B]}`` plus ``"mahalanobis"`` when ``gaussians`` holds at
    least one component and ``"knn"`` when ``bank`` is not empty; higher = more unknown.
    ``energy`` is minus the largest log-sum-exp of the logits over the heads, ``msp`` minus the
    largest maximum softmax probability, ``maxlogit`` minus the largest logit (Vaze et al., ICLR
    2022), ``mahalanobis`` the distance to the nearest class mean
    (:class:`ClassGaussians`) and ``knn`` the distance of the normalised embedding to its
    ``knn_k``-th nearest neighbour in ``bank`` (:class:`FeatureBank`).
    """
    if not len(model.heads):
        raise DataError("No task head yet: open-world scores need at least one learnt task.")
    embedding = model.embed(pixel_values)
    out = logit_scores(embedding, model.heads)
    if gaussians is not None and len(gaussians):
        out["mahalanobis"] = gaussians.score(embedding.float(), precision)
    if bank is not None and len(bank):
        out["knn"] = bank.score(embedding.float(), knn_k)
    return out
