"""Baselines a few-shot practitioner runs first, on the same episodes as fine-tuned descendants.

* :class:`FrozenFeatureClassifier`: a frozen stack of conv blocks, its last feature map average
  pooled to 2x2 and flattened, the features standardized with the support set's mean and std, and
  a classifier fitted on them: multinomial logistic regression with an L2 penalty (full-batch
  L-BFGS in torch) or nearest centroid (cosine similarity by default). Nothing is fine-tuned.
* :func:`frozen_features` / :func:`fit_frozen_features`: the generic pair a few-shot
  :class:`~learngene_hf.fewshot.runner.Method` uses for these baselines (build, then fit on the support
  set); fine-tuned methods use ``IndividualModel`` and ``train_individual`` instead.
* :func:`select_evenly` / :func:`weight_selection`: weight selection (Xu et al., "Initializing
  Models with Larger Ones", ICLR 2024): every tensor of a smaller descendant takes evenly spaced
  elements of the matching tensor of the collective model, dimension by dimension.
* :func:`inheritance`: what a built model inherited (parameters, bytes), whatever built it.

Features are those of the network as it is (eval mode, stored BatchNorm statistics): a random
network's BatchNorm layers are then identities, and the standardization after pooling removes any
scale the random convolutions leave. The methods built on these are listed by
:mod:`~learngene_hf.fewshot.methods`.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any, Sequence

import torch
from torch import nn
from transformers.modeling_outputs import ImageClassifierOutput

from ..artifact.narrow import select_evenly
from ..errors import ConfigError, DataError, IncompatibleLearngeneError
from ..models.layers import run_blocks
from .linear import feature_stats, fit_logistic

#: Side of the average pool over the last feature map (2x2 -> 4 features per channel).
FEATURE_POOL_SIZE = 2
#: L2 strengths tried for logistic regression on open-world episodes (penalty ``l2/2 * ||W||^2``
#: added to the mean cross-entropy over the support set).
DEFAULT_L2_GRID: tuple[float, ...] = (1e-4, 1e-3, 1e-2, 1e-1, 1.0)
DEFAULT_L2 = 1e-2
CLASSIFIERS = ("logistic", "centroid")
METRICS = ("cosine", "euclidean")


def tensor_bytes(tensors: Sequence[torch.Tensor]) -> int:
    """Bytes the tensors take as stored (``numel * element_size``)."""
    return int(sum(t.numel() * t.element_size() for t in tensors))


def inheritance(model: nn.Module) -> dict[str, int]:
    """``{"parameters", "bytes"}`` the model inherited from a learngene or a collective model.

    A model built by :func:`weight_selection` or :func:`frozen_features` carries its own record
    (``model.inheritance_record``); an ``IndividualModel`` with a learngene counts its inherited
    blocks (bytes include the BatchNorm buffers, as in the learngene file); anything else
    inherited nothing.
    """
    record = getattr(model, "inheritance_record", None)
    if isinstance(record, dict):
        return {"parameters": int(record["parameters"]), "bytes": int(record["bytes"])}
    if getattr(model, "has_learngene", False):
        blocks = model.inherited_blocks()
        return {
            "parameters": int(sum(p.numel() for b in blocks for p in b.parameters())),
            "bytes": tensor_bytes([t for b in blocks for t in b.state_dict().values()]),
        }
    return {"parameters": 0, "bytes": 0}


# ---------------------------------------------------------------------- frozen features
@dataclass
class FrozenFeatureConfig:
    """What a :class:`FrozenFeatureClassifier` is: its classifier and the input normalization.

    Attributes:
        num_labels: classes of the episode.
        classifier: ``"logistic"`` (multinomial logistic regression, L2) or ``"centroid"``.
        metric: nearest-centroid distance: ``"cosine"`` (default) or ``"euclidean"``.
        feature_pool_size: side of the average pool over the last feature map.
        image_mean / image_std: per-channel normalization of ``x/255`` the blocks expect.
        source: where the frozen blocks come from (``"random"``, ``"learngene"``, ``"collective"``).
    """

    num_labels: int
    classifier: str = "logistic"
    metric: str = "cosine"
    feature_pool_size: int = FEATURE_POOL_SIZE
    image_mean: list[float] = field(default_factory=lambda: [0.5, 0.5, 0.5])
    image_std: list[float] = field(default_factory=lambda: [0.5, 0.5, 0.5])
    source: str = ""

    def __post_init__(self) -> None:
        if self.classifier not in CLASSIFIERS:
            raise ConfigError(f"Unknown frozen-feature classifier {self.classifier!r}; use one of {list(CLASSIFIERS)}.")
        if self.metric not in METRICS:
            raise ConfigError(f"Unknown nearest-centroid metric {self.metric!r}; use one of {list(METRICS)}.")
        if self.num_labels <= 0 or self.feature_pool_size <= 0:
            raise ConfigError(
                f"num_labels and feature_pool_size must be positive, got {self.num_labels}, {self.feature_pool_size}."
            )


class FrozenFeatureClassifier(nn.Module):
    r"""A classifier fitted on frozen, standardized, 2x2-pooled conv features.

    ``pixel_values`` [B, C, H, W] (normalized) -> ``blocks`` (frozen, eval mode) -> average pool
    to ``feature_pool_size`` -> flatten [B, D] -> ``(f - mean) / std`` (support-set statistics) ->
    logits [B, num_labels]: ``f @ weight.T + bias`` (logistic) or the similarity to each class
    centroid (centroid). Call :meth:`fit` on the support set before using it.

    Args:
        blocks: the conv blocks (deep-copied; every parameter frozen).
        pool: one max-pool flag per block.
        config: the classifier and normalization.
        inherited: ``{"parameters", "bytes"}`` inherited by the blocks (0 for a random network).
    """

    def __init__(
        self,
        blocks: Sequence[nn.Module],
        pool: Sequence[bool],
        config: FrozenFeatureConfig,
        inherited: dict[str, int] | None = None,
    ):
        super().__init__()
        if not blocks or len(pool) != len(blocks):
            raise ConfigError(
                f"A frozen feature extractor needs at least one block and one pool flag per block, "
                f"got {len(blocks)} blocks and {len(pool)} flags."
            )
        self.config = config
        self.blocks = nn.ModuleList(copy.deepcopy(list(blocks)))
        self.pool_flags = [bool(p) for p in pool]
        self.blocks.requires_grad_(False)
        width = int(self.blocks[-1].conv.out_channels)
        self._set_up_classifier(width * config.feature_pool_size**2, config, inherited)

    def _set_up_classifier(
        self, num_features: int, config: FrozenFeatureConfig, inherited: dict[str, int] | None
    ) -> None:
        """The standardization buffers and the (not yet fitted) classifier over ``num_features``."""
        self.num_features = int(num_features)
        self.register_buffer("feature_mean", torch.zeros(self.num_features))
        self.register_buffer("feature_std", torch.ones(self.num_features))
        n = config.num_labels
        if config.classifier == "logistic":
            self.weight = nn.Parameter(torch.zeros(n, self.num_features), requires_grad=False)
            self.bias = nn.Parameter(torch.zeros(n), requires_grad=False)
        else:
            self.centroids = nn.Parameter(torch.zeros(n, self.num_features), requires_grad=False)
        self.inheritance_record = dict(inherited or {"parameters": 0, "bytes": 0})
        self.fitted = False
        self.eval()

    @property
    def has_learngene(self) -> bool:
        return self.inheritance_record["parameters"] > 0

    def num_inherited_parameters(self) -> int:
        return int(self.inheritance_record["parameters"])

    def train(self, mode: bool = True) -> "FrozenFeatureClassifier":
        """The blocks are frozen: they stay in eval mode (stored BatchNorm statistics) whatever ``mode``."""
        super().train(mode)
        self.blocks.eval()
        return self

    @torch.no_grad()
    def raw_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Pooled, flattened features [B, D] of ``pixel_values`` [B, C, H, W], before standardization."""
        self.blocks.eval()
        x = run_blocks(self.blocks, self.pool_flags, pixel_values)
        return torch.flatten(nn.functional.adaptive_avg_pool2d(x, self.config.feature_pool_size), 1)

    def standardized(self, features: torch.Tensor) -> torch.Tensor:
        return (features - self.feature_mean) / self.feature_std

    @torch.no_grad()
    def fit(
        self,
        pixel_values: torch.Tensor,
        labels: torch.Tensor,
        l2: float = DEFAULT_L2,
        max_iter: int = 100,
        metric: str | None = None,
    ) -> "FrozenFeatureClassifier":
        """Fit the standardization and the classifier on a support set.

        Args:
            pixel_values: normalized support images [N, C, H, W].
            labels: int64 [N] in ``0..num_labels-1``; every class needs at least one image.
            l2: logistic regression's penalty ``l2/2 * ||W||^2`` on top of the mean cross-entropy.
            max_iter: L-BFGS iterations (logistic regression; starts from zero weights, so it is
                deterministic).
            metric: override the nearest-centroid metric of the config.
        """
        n = self.config.num_labels
        labels = labels.to(device=pixel_values.device, dtype=torch.int64)
        if labels.dim() != 1 or labels.shape[0] != pixel_values.shape[0] or labels.numel() == 0:
            raise DataError(
                f"fit needs one label per support image, got {tuple(labels.shape)} labels for "
                f"{pixel_values.shape[0]} images."
            )
        missing = sorted(set(range(n)) - set(labels.tolist()))
        if missing or int(labels.max()) >= n or int(labels.min()) < 0:
            raise DataError(
                f"The support set must hold every class 0..{n - 1} and nothing else; missing {missing}, "
                f"labels span {int(labels.min())}..{int(labels.max())}."
            )
        if not l2 >= 0:
            raise ConfigError(f"l2 must be >= 0, got {l2}.")
        if metric is not None:
            self.config.metric = FrozenFeatureConfig(num_labels=n, metric=metric).metric
        raw = self.raw_features(pixel_values)
        mean, std = feature_stats(raw)  # constant features stay centred only
        self.feature_mean.copy_(mean)
        self.feature_std.copy_(std)
        f = self.standardized(raw)
        if self.config.classifier == "centroid":
            self.centroids.copy_(torch.stack([f[labels == c].mean(0) for c in range(n)]))
        else:
            self._fit_logistic(f, labels, float(l2), int(max_iter))
        self.fitted = True
        return self

    def _fit_logistic(self, f: torch.Tensor, y: torch.Tensor, l2: float, max_iter: int) -> None:
        weight, bias = fit_logistic(f, y, self.config.num_labels, l2, max_iter)
        self.weight.copy_(weight)
        self.bias.copy_(bias)

    def forward(
        self, pixel_values: torch.Tensor, labels: torch.Tensor | None = None, **kwargs
    ) -> ImageClassifierOutput:
        r"""Logits [B, num_labels] for ``pixel_values`` [B, C, H, W] (and the cross-entropy ``loss``
        when ``labels`` [B] is given). Cosine logits lie in [-1, 1]; Euclidean ones are minus the
        squared distance."""
        if not self.fitted:
            raise ConfigError(
                "This frozen-feature classifier is not fitted yet: call fit(support_images, support_labels) first."
            )
        f = self.standardized(self.raw_features(pixel_values))
        if self.config.classifier == "logistic":
            logits = f @ self.weight.T + self.bias
        elif self.config.metric == "cosine":
            logits = nn.functional.normalize(f, dim=1) @ nn.functional.normalize(self.centroids, dim=1).T
        else:
            logits = -torch.cdist(f, self.centroids).pow(2)
        loss = nn.functional.cross_entropy(logits, labels) if labels is not None else None
        return ImageClassifierOutput(loss=loss, logits=logits)


class FrozenViTFeatureClassifier(FrozenFeatureClassifier):
    r"""A :class:`FrozenFeatureClassifier` on the frozen features of a timm ``VisionTransformer``.

    ``pixel_values`` [B, C, H, W] -> ``vit.forward_features`` (frozen, eval mode) [B, N, D] after
    the final norm -> the class token and the mean of the patch tokens, concatenated [B, 2D] ->
    standardized with the support set's statistics -> logits [B, num_labels] (logistic regression
    or nearest centroid, as for conv features). The ViT's own head is not used.

    Args:
        vit: the transformer (deep-copied; every parameter frozen).
        config: the classifier and normalization (``feature_pool_size`` does not apply).
        inherited: ``{"parameters", "bytes"}`` inherited by the transformer (0 for a random one).
    """

    def __init__(self, vit: nn.Module, config: FrozenFeatureConfig, inherited: dict[str, int] | None = None):
        nn.Module.__init__(self)
        if not hasattr(vit, "forward_features") or not hasattr(vit, "embed_dim"):
            raise ConfigError(f"FrozenViTFeatureClassifier needs a timm VisionTransformer, got {type(vit).__name__}.")
        self.config = config
        self.vit = copy.deepcopy(vit)
        self.vit.reset_classifier(0)
        self.vit.requires_grad_(False)
        self._set_up_classifier(2 * int(vit.embed_dim), config, inherited)

    def train(self, mode: bool = True) -> "FrozenViTFeatureClassifier":
        """The transformer is frozen: it stays in eval mode whatever ``mode``."""
        nn.Module.train(self, mode)
        self.vit.eval()
        return self

    @torch.no_grad()
    def raw_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Class token and mean patch token after the final norm, concatenated: [B, 2 * embed_dim]."""
        self.vit.eval()
        tokens = self.vit.forward_features(pixel_values)
        prefix = int(getattr(self.vit, "num_prefix_tokens", 1))
        return torch.cat([tokens[:, 0], tokens[:, prefix:].mean(1)], dim=1)


def _frozen_config(
    model_config: Any, num_labels: int, classifier: str, metric: str, source: str
) -> FrozenFeatureConfig:
    """The :class:`FrozenFeatureConfig` of a classifier on the features of a model with ``model_config``
    (its ``image_mean`` / ``image_std``; the library's defaults without them)."""
    return FrozenFeatureConfig(
        num_labels=int(num_labels),
        classifier=classifier,
        metric=metric,
        image_mean=list(getattr(model_config, "image_mean", None) or [0.5] * 3),
        image_std=list(getattr(model_config, "image_std", None) or [0.5] * 3),
        source=source,
    )


def vit_frozen_features(
    model: nn.Module, num_labels: int, classifier: str = "logistic", *, source: str = "", metric: str = "cosine"
) -> FrozenViTFeatureClassifier:
    """A :class:`FrozenViTFeatureClassifier` on the transformer ``model.vit`` of a ViT descendant
    (``ViTIndividualModel``); what it inherited is counted from ``model`` (nothing for a randomly
    initialised one)."""
    config = getattr(model, "config", None)
    inherited = inheritance(model)
    cfg = _frozen_config(config, num_labels, classifier, metric, source)
    return FrozenViTFeatureClassifier(model.vit, cfg, inherited)


def frozen_features(
    model: nn.Module,
    num_labels: int,
    classifier: str = "logistic",
    *,
    end: int | None = None,
    source: str = "",
    metric: str = "cosine",
) -> FrozenFeatureClassifier:
    """A :class:`FrozenFeatureClassifier` on the conv blocks ``model.blocks[:end]`` of an
    ``IndividualModel`` or a ``CollectiveModel`` (``end=None``: all of them).

    What the blocks inherited is counted from ``model``: the inherited blocks of an individual
    model that holds a learngene (those before ``end``), every block of a collective model
    (``source="collective"``), nothing for a randomly initialised model.
    """
    config = getattr(model, "config", None)
    blocks = list(model.blocks)[:end]
    pool = list(config.pool)[: len(blocks)]
    inherited = {"parameters": 0, "bytes": 0}
    if source == "collective":
        inherited = {
            "parameters": sum(p.numel() for b in blocks for p in b.parameters()),
            "bytes": tensor_bytes([t for b in blocks for t in b.state_dict().values()]),
        }
    elif getattr(model, "has_learngene", False):
        kept = [model.blocks[i] for i in model.inherited_indices if i < len(blocks)]
        inherited = {
            "parameters": sum(p.numel() for b in kept for p in b.parameters()),
            "bytes": tensor_bytes([t for b in kept for t in b.state_dict().values()]),
        }
    cfg = _frozen_config(config, num_labels, classifier, metric, source)
    return FrozenFeatureClassifier(blocks, pool, cfg, inherited)


def fit_frozen_features(
    model: FrozenFeatureClassifier,
    support_images: torch.Tensor,
    support_labels: torch.Tensor,
    cfg: Any,
    seed: int,
    **settings: Any,
) -> FrozenFeatureClassifier:
    """Fit ``model`` on a support set (uint8 images [N, C, H, W], int64 labels [N]) on ``cfg``'s
    device; ``settings`` go to :meth:`FrozenFeatureClassifier.fit` (``l2``, ``max_iter``,
    ``metric``). The fit is deterministic, so ``seed`` is unused; it is there because every
    few-shot fit function takes the same arguments."""
    if not isinstance(support_images, torch.Tensor) or support_images.dtype != torch.uint8 or support_images.dim() != 4:
        raise DataError("Frozen-feature baselines take uint8 support images [N, C, H, W].")
    device = cfg.resolved_device() if hasattr(cfg, "resolved_device") else torch.device("cpu")
    model.to(device)
    mean = torch.tensor(model.config.image_mean, device=device).view(1, -1, 1, 1)
    std = torch.tensor(model.config.image_std, device=device).view(1, -1, 1, 1)
    x = (support_images.to(device=device, dtype=torch.float32) / 255.0 - mean) / std
    return model.fit(x, support_labels.to(device), **settings)


# ---------------------------------------------------------------------- weight selection
@torch.no_grad()
def weight_selection(collective: nn.Module, descendant: nn.Module) -> nn.Module:
    """Initialise ``descendant`` from ``collective`` by weight selection (Xu et al., ICLR 2024).

    Conv block ``i`` of the descendant takes block ``i`` of the collective model (the first
    blocks, as in the paper's first-N layer selection), and the descendant's MLP layers take the
    collective's MLP layers in order; every tensor (BatchNorm buffers included) takes evenly spaced
    elements with :func:`select_evenly`. The classifier stays fresh (the classes differ). The
    selected blocks are marked inherited (``config.inherited``; ``config.learngene`` records the
    selection), so inherited-BatchNorm handling treats them like learngene blocks. Returns
    ``descendant`` with ``inheritance_record`` {``parameters``, ``bytes``} of the selected tensors.
    """
    blocks = len(descendant.blocks)
    if blocks > len(collective.blocks):
        raise IncompatibleLearngeneError(
            f"The descendant has {blocks} conv blocks but the collective model only {len(collective.blocks)}; weight "
            "selection takes the first blocks of a deeper (or equal) model."
        )
    pairs = [(descendant.blocks[i], collective.blocks[i]) for i in range(blocks)]
    mine = [m for m in descendant.neck if isinstance(m, nn.Linear)]
    theirs = [m for m in collective.neck if isinstance(m, nn.Linear)]
    pairs += list(zip(mine, theirs))
    copied: list[torch.Tensor] = []
    parameters = 0
    for target, source in pairs:
        source_state = source.state_dict()
        names = {name for name, _ in target.named_parameters()}
        for name, tensor in target.state_dict().items():
            if name not in source_state:
                raise IncompatibleLearngeneError(
                    f"Tensor {name} of {type(target).__name__} has no counterpart in the "
                    "collective model; weight selection needs the same layer types."
                )
            tensor.copy_(select_evenly(source_state[name], tensor.shape).to(tensor.dtype))
            copied.append(tensor)
            parameters += tensor.numel() if name in names else 0
    if hasattr(descendant.config, "inherited"):
        descendant.config.inherited = [0, blocks]
        names = list(getattr(collective.config, "layer_names", []))[:blocks]
        descendant.config.learngene = {
            "weight_selection": True,
            "layers": names,
            "mlp_layers": len(list(zip(mine, theirs))),
        }
    descendant.inheritance_record = {"parameters": int(parameters), "bytes": tensor_bytes(copied)}
    return descendant
