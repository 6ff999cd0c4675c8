"""The individual model: fresh layers around an inherited learngene, and a fresh classifier head.

``IndividualModel`` is one plain VGG-BN stack (``self.blocks``, timm ``ConvNormAct`` blocks, a 2x2
max pool after the layers whose ``pool`` flag is set), an adaptive average pool, an MLP neck and a
linear classifier. ``config.inherited = [start, end)`` marks the blocks that hold the learngene;
the blocks before it (the *stem*) and after it (the *tail*) are fresh. The same config without a
learngene loaded is the from-scratch baseline (identical architecture).

With the paper's learngene (the last three conv layers of the paper collective model) the defaults
reproduce the paper's individual model: fresh 64-128-256-512 convs with a pool after each, the three
inherited 512-channel blocks, and a head 2048-1024-1024-n.

This module depends only on torch, timm and transformers (plus its siblings), so it can be pushed
with ``register_for_auto_class`` and loaded with ``trust_remote_code=True`` by people who do not
have learngene-hf installed. :meth:`IndividualModel.from_learngene` takes a loaded ``Learngene``;
loading one by name is :func:`learngene_hf.from_learngene`'s job.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import nn
from transformers import PreTrainedConfig, PreTrainedModel
from transformers.modeling_outputs import ImageClassifierOutput

from .layers import BLOCK_TENSOR_NAMES, project_error
from .modeling_utils import (
    VGGBaseModelMixin,
    VGGClassifierMixin,
    VGGPreTrainedMixin,
    classifier_output,
    descendant_config_kwargs,
    register_auto_classes,
)
from .presets import VGG_BN_ARCHS, VGG_BN_MEAN, VGG_BN_STD, VGG_DESCENDANT_SIZES
from .timm_hub import drop_timm_keys
from .vgg import check_vgg_shape

#: The paper's individual model (Learngene, AAAI 2022): fresh stem, 3 inherited 512-wide blocks, head.
PAPER_STEM_WIDTHS = [64, 128, 256, 512]
PAPER_HEAD_HIDDEN = [1024, 1024]
PAPER_FEATURE_POOL_SIZE = 2
PAPER_DROPOUT = 0.5

#: Per-channel normalization the library trains with (``x/255`` then ``(x - mean) / std``).
DEFAULT_IMAGE_MEAN = list(VGG_BN_MEAN)
DEFAULT_IMAGE_STD = list(VGG_BN_STD)


def _config_error(message: str) -> ValueError:
    return project_error("ConfigError", message)


def _incompatible(message: str) -> ValueError:
    return project_error("IncompatibleLearngeneError", message)


class IndividualConfig(PreTrainedConfig):
    r"""Configuration of an :class:`IndividualModel`.

    With no arguments it describes the paper's individual model (widths 64-128-256-512 fresh, then
    three inherited 512-wide blocks, head 1024-1024 on 2x2x512 = 2048 pooled features). Use
    :meth:`for_learngene` to derive the architecture from a learngene.

    Args:
        widths: output channels of every conv layer, input to output (stem + inherited + tail).
        pool: one flag per conv layer; ``True`` puts a 2x2 max pool after that layer.
        inherited: ``[start, end)`` indices of the blocks that hold the learngene (``None``: none,
            a plain small CNN).
        head_hidden: widths of the MLP between the pooled features and the classifier.
        feature_pool_size: side of the adaptive average pool before flattening; the MLP reads
            ``widths[-1] * feature_pool_size**2`` features.
        dropout: dropout probability in the MLP.
        in_channels: channels of the input images.
        image_size: side of the (square) input images the model is meant for (used by the image
            processor saved beside the model; any size >= the total pooling factor runs).
        kernel_size: conv kernel size of every layer.
        learngene: where the inherited blocks came from (``repo_id``, ``revision``, ``commit_sha``,
            ``layers`` (stable names), ``position``, ``source``); ``None`` for the scratch baseline.
        freeze_learngene: keep the inherited blocks fixed while training (parameters without
            gradient, BatchNorm in eval mode).
        image_mean / image_std: normalization the model expects (for the saved image processor).
        num_labels / id2label / label2id: through ``**kwargs`` (transformers' own handling).
    """

    model_type = "learngene_individual"

    def __init__(
        self,
        widths: Sequence[int] | None = None,
        pool: Sequence[bool] | None = None,
        inherited: Sequence[int] | None = None,
        head_hidden: Sequence[int] | None = None,
        feature_pool_size: int | None = None,
        dropout: float | None = None,
        in_channels: int = 3,
        image_size: int = 32,
        kernel_size: int = 3,
        learngene: dict[str, Any] | None = None,
        freeze_learngene: bool = False,
        image_mean: Sequence[float] | None = None,
        image_std: Sequence[float] | None = None,
        **kwargs,
    ):
        paper = widths is None
        if paper:
            widths = PAPER_STEM_WIDTHS + [512, 512, 512]
            pool = [True] * len(PAPER_STEM_WIDTHS) + [False, False, True] if pool is None else pool
            inherited = [len(PAPER_STEM_WIDTHS), len(widths)] if inherited is None else inherited
        self.widths = [int(w) for w in widths]
        self.pool = [bool(p) for p in (pool if pool is not None else [False] * len(self.widths))]
        self.inherited = [int(i) for i in inherited] if inherited is not None else None
        self.head_hidden = [int(w) for w in (head_hidden if head_hidden is not None else PAPER_HEAD_HIDDEN)]
        if feature_pool_size is None:
            feature_pool_size = PAPER_FEATURE_POOL_SIZE if paper else 1
        self.feature_pool_size = int(feature_pool_size)
        self.dropout = float(dropout if dropout is not None else (PAPER_DROPOUT if paper else 0.0))
        self.in_channels = int(in_channels)
        self.image_size = int(image_size)
        self.kernel_size = int(kernel_size)
        self.learngene = dict(learngene) if learngene is not None else None
        self.freeze_learngene = bool(freeze_learngene)
        self.image_mean = [float(v) for v in (image_mean if image_mean is not None else DEFAULT_IMAGE_MEAN)]
        self.image_std = [float(v) for v in (image_std if image_std is not None else DEFAULT_IMAGE_STD)]
        self._validate()
        drop_timm_keys(kwargs)  # timm's section of a saved config.json
        super().__init__(**kwargs)

    def _validate(self) -> None:
        check_vgg_shape(self, "an individual")
        if self.inherited is not None:
            if len(self.inherited) != 2 or not 0 <= self.inherited[0] < self.inherited[1] <= len(self.widths):
                raise _config_error(
                    f"inherited must be [start, end) with 0 <= start < end <= {len(self.widths)}, got {self.inherited}."
                )
        if self.in_channels <= 0 or self.image_size <= 0 or self.kernel_size <= 0:
            raise _config_error(
                f"in_channels, image_size and kernel_size must be positive, got {self.in_channels}, "
                f"{self.image_size}, {self.kernel_size}."
            )
        if self.freeze_learngene and self.inherited is None:
            raise _config_error(
                "freeze_learngene=True needs inherited blocks; set inherited=[start, end) or build with from_learngene."
            )

    @property
    def num_layers(self) -> int:
        """Number of conv layers."""
        return len(self.widths)

    @classmethod
    def for_learngene(
        cls, learngene: Any, num_labels: int, size: str | None = None, **overrides: Any
    ) -> "IndividualConfig":
        """The architecture a learngene calls for (no weights loaded: also the scratch baseline).

        ``learngene`` is a :class:`learngene_hf.artifact.learngene.Learngene` (or anything with a
        ``config`` of type ``LearngeneConfig``). Fresh layers mirror the source collective model
        outside the block (its widths and pools from ``learngene.config.source``); an input-end
        learngene gets no stem. A learngene at the output end of the paper preset gets the paper's
        stem 64-128-256-512 (a pool after each) and head [1024, 1024] on 2x2 pooled features.

        ``size``: a name of :data:`~learngene_hf.models.presets.VGG_DESCENDANT_SIZES` ("tiny": the
        learngene and a linear head, "small", "medium", "full": the collective's size; ``None``:
        "full"), which shortens and narrows the fresh tail and the head.

        Overrides (they win over the size): ``stem_widths``, ``stem_pool``, ``tail_widths``,
        ``tail_pool``, ``head_hidden``, ``feature_pool_size``, ``dropout``, ``image_size``,
        ``freeze_learngene`` and any other :class:`IndividualConfig` argument (``id2label``...).
        """
        if not isinstance(num_labels, int) or isinstance(num_labels, bool) or num_labels <= 0:
            raise _config_error(f"num_labels must be a positive integer, got {num_labels!r}.")
        lg = learngene.config
        layers = list(lg.layers)
        if not layers:
            raise _incompatible("The learngene has no layers; extract it again with at least one layer.")
        arch = _source_architecture(lg)
        arch.update(descendant_size(arch, size))
        stem_w = [int(w) for w in overrides.pop("stem_widths", arch["stem_widths"])]
        stem_p = overrides.pop("stem_pool", arch["stem_pool"] if len(arch["stem_pool"]) == len(stem_w) else None)
        stem_p = [bool(p) for p in (stem_p if stem_p is not None else [True] * len(stem_w))]
        tail_w = [int(w) for w in overrides.pop("tail_widths", arch["tail_widths"])]
        tail_p = overrides.pop("tail_pool", arch["tail_pool"] if len(arch["tail_pool"]) == len(tail_w) else None)
        tail_p = [bool(p) for p in (tail_p if tail_p is not None else [False] * len(tail_w))]
        if len(stem_p) != len(stem_w) or len(tail_p) != len(tail_w):
            raise _config_error(
                f"stem_pool/tail_pool need one flag per layer: stem {len(stem_w)} widths vs {len(stem_p)} flags, "
                f"tail {len(tail_w)} widths vs {len(tail_p)} flags."
            )
        in_channels = int(overrides.pop("in_channels", 3))
        feeding = stem_w[-1] if stem_w else in_channels
        if feeding != int(lg.in_channels):
            what = f"the stem's last width ({feeding})" if stem_w else f"the image channels ({in_channels})"
            raise _incompatible(
                f"The learngene's first layer expects {lg.in_channels} input channels but {what} feeds it; "
                f"set stem_widths so that its last width is {lg.in_channels}."
            )
        kernels = {int(layer.get("kernel_size", 3)) for layer in layers}
        if len(kernels) != 1:
            raise _incompatible(
                f"The learngene mixes kernel sizes {sorted(kernels)}; individual models use one kernel size."
            )
        preprocessing = dict(lg.preprocessing or {})
        kwargs: dict[str, Any] = {
            "widths": stem_w + [int(layer["out_channels"]) for layer in layers] + tail_w,
            "pool": stem_p + [bool(layer.get("pool", False)) for layer in layers] + tail_p,
            "inherited": [len(stem_w), len(stem_w) + len(layers)],
            "head_hidden": overrides.pop("head_hidden", arch["head_hidden"]),
            "feature_pool_size": overrides.pop("feature_pool_size", arch["feature_pool_size"]),
            "dropout": overrides.pop("dropout", arch["dropout"]),
            "kernel_size": kernels.pop(),
            "in_channels": in_channels,
            "image_size": overrides.pop("image_size", preprocessing.get("image_size", 32)),
        }
        return cls(**descendant_config_kwargs(kwargs, preprocessing, num_labels, overrides))


def _source_architecture(lg: Any) -> dict[str, Any]:
    """The fresh layers that mirror a layer learngene's source collective model around it:
    ``stem_widths`` / ``stem_pool`` (before it), ``tail_widths`` / ``tail_pool`` (after it),
    ``head_hidden``, ``dropout`` and ``feature_pool_size`` (the paper's head for a learngene at
    the output end of the paper preset)."""
    layers = list(lg.layers)
    source = dict(lg.source or {})
    src_widths = [int(w) for w in source.get("widths", [])]
    src_pool = [bool(p) for p in source.get("pool", [False] * len(src_widths))]
    start = int(layers[0].get("source_index", 0))
    end = int(layers[-1].get("source_index", start + len(layers) - 1)) + 1
    preset, position = source.get("preset"), lg.position
    if position in ("input", "whole"):
        stem_w, stem_p = [], []
    elif preset == "paper" and position == "output" and int(lg.in_channels) == PAPER_STEM_WIDTHS[-1]:
        stem_w, stem_p = list(PAPER_STEM_WIDTHS), [True] * len(PAPER_STEM_WIDTHS)
    elif src_widths:
        stem_w, stem_p = src_widths[:start], src_pool[:start]
    else:
        raise _incompatible(
            "The learngene does not record its source model's widths (config.source['widths']), so the fresh "
            "layers before it cannot be mirrored; pass stem_widths=[...] and stem_pool=[...]."
        )
    tail_w, tail_p = ([], []) if position in ("output", "whole") else (src_widths[end:], src_pool[end:])
    paper_head = preset == "paper" and position == "output"
    head_hidden, dropout = source.get("head_hidden"), source.get("dropout")
    if head_hidden is None or dropout is None:
        base = VGG_BN_ARCHS.get(preset, {})
        head_hidden = base.get("head_hidden", PAPER_HEAD_HIDDEN) if head_hidden is None else head_hidden
        dropout = base.get("dropout", 0.0) if dropout is None else dropout
    if paper_head:
        head_hidden, dropout = PAPER_HEAD_HIDDEN, PAPER_DROPOUT
    pool_size = PAPER_FEATURE_POOL_SIZE if paper_head else int(source.get("feature_pool_size", 1))
    arch = {"stem_widths": stem_w, "stem_pool": stem_p, "tail_widths": tail_w, "tail_pool": tail_p}
    arch.update(head_hidden=[int(w) for w in head_hidden], dropout=float(dropout), feature_pool_size=pool_size)
    return arch


def descendant_size(arch: dict[str, Any], size: str | None) -> dict[str, Any]:
    """The tail and head of the named descendant ``size`` (:data:`VGG_DESCENDANT_SIZES`) of the
    full-size architecture ``arch`` (``tail_widths``, ``tail_pool``, ``head_hidden``,
    ``feature_pool_size``): the first ``tail_blocks`` tail blocks, ``width`` times as wide (at
    least 1 channel), the head as the size says. ``None`` and "full" change nothing."""
    if size is None:
        return {}
    if size not in VGG_DESCENDANT_SIZES:
        raise _config_error(
            f"Unknown descendant size {size!r}; choose one of {list(VGG_DESCENDANT_SIZES)} or give tail_widths=[...], "
            "head_hidden=[...] yourself."
        )
    spec = VGG_DESCENDANT_SIZES[size]
    count = (
        len(arch["tail_widths"]) if spec["tail_blocks"] is None else min(spec["tail_blocks"], len(arch["tail_widths"]))
    )
    scale = float(spec["width"])
    out = {"tail_widths": [max(1, int(round(w * scale))) for w in arch["tail_widths"][:count]],
           "tail_pool": list(arch["tail_pool"][:count])}  # fmt: skip
    hidden = spec["head_hidden"]
    out["head_hidden"] = (
        [max(1, int(round(w * scale))) for w in arch["head_hidden"]] if hidden is None else list(hidden)
    )
    if spec["feature_pool_size"] is not None:
        out["feature_pool_size"] = int(spec["feature_pool_size"])
    return out


class IndividualPreTrainedModel(VGGPreTrainedMixin, PreTrainedModel):
    """Weight initialization and loading glue shared by individual models."""

    config_class = IndividualConfig
    base_model_prefix = "individual"


class IndividualBaseModel(VGGBaseModelMixin, IndividualPreTrainedModel):
    r"""The individual model without its classifier (what ``AutoModel`` loads).

    ``pixel_values`` [B, C, H, W] -> ``self.vgg`` (a :class:`~learngene_hf.models.vgg.VGGBN` with no
    classifier; ``config.inherited`` marks the learngene's blocks) -> ``last_hidden_state``
    [B, widths[-1], h, w] and, after the adaptive pool and the MLP neck, ``pooler_output``
    [B, head_hidden[-1]]; ``hidden_states`` holds every conv block's output (after its pool) when
    ``output_hidden_states`` is set.
    """


class IndividualForImageClassification(VGGClassifierMixin, IndividualPreTrainedModel):
    r"""Small VGG-BN image classifier, optionally seeded with an inherited learngene
    (``AutoModelForImageClassification``).

    ``pixel_values`` [B, C, H, W] -> :class:`IndividualBaseModel` (``self.individual``; conv blocks
    ``self.blocks``, ``config.inherited`` marks the learngene's; adaptive average pool to
    ``feature_pool_size``; MLP ``self.neck``) -> ``self.classifier`` -> logits [B, num_labels].

    Build it with :meth:`from_learngene`; ``IndividualModel(IndividualConfig.for_learngene(...))``
    is the same architecture from random initialization (the scratch baseline).
    """

    def __init__(self, config: IndividualConfig):
        super().__init__(config)
        self.individual = IndividualBaseModel(config, init_by_parent=True)
        neck_width = config.head_hidden[-1] if config.head_hidden else self.num_features
        self.classifier = nn.Linear(neck_width, config.num_labels)
        self.post_init()
        if config.freeze_learngene:
            self._apply_freeze()

    # ------------------------------------------------------------------ structure
    @property
    def inherited_indices(self) -> list[int]:
        """Indices of the blocks that hold the learngene (empty without one)."""
        if self.config.inherited is None:
            return []
        return list(range(*self.config.inherited))

    def inherited_blocks(self) -> list[nn.Module]:
        """The blocks that hold the learngene, in order."""
        return [self.blocks[i] for i in self.inherited_indices]

    def inherited_batchnorms(self) -> list[nn.BatchNorm2d]:
        """The BatchNorm layers of the inherited blocks."""
        return [m for block in self.inherited_blocks() for m in block.modules() if isinstance(m, nn.BatchNorm2d)]

    @property
    def has_learngene(self) -> bool:
        """Whether learngene tensors were loaded into the inherited blocks (``config.learngene``)."""
        return self.config.learngene is not None

    def num_inherited_parameters(self) -> int:
        """Parameters in the inherited blocks."""
        return sum(p.numel() for block in self.inherited_blocks() for p in block.parameters())

    # ------------------------------------------------------------------ forward
    def forward_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Conv feature map [B, widths[-1], h, w] of ``pixel_values`` [B, C, H, W]."""
        return self.vgg.forward_features(pixel_values)

    def forward(
        self,
        pixel_values: torch.Tensor,
        labels: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> ImageClassifierOutput | tuple:
        r"""Classify ``pixel_values`` [B, C, H, W] (float, normalized).

        Returns an :class:`~transformers.modeling_outputs.ImageClassifierOutput`
        with ``logits`` [B, num_labels], the cross-entropy ``loss`` when ``labels`` [B] (int64) is
        given and the per-layer ``hidden_states`` when ``output_hidden_states``; a tuple
        ``([loss,] logits[, hidden_states])`` when ``return_dict`` is False.
        """
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        base = self.individual(pixel_values, output_hidden_states=output_hidden_states, return_dict=return_dict)
        logits = self.classifier(base[1])
        return classifier_output(logits, labels, base, return_dict)

    # ------------------------------------------------------------------ freezing
    def _apply_freeze(self) -> None:
        for block in self.inherited_blocks():
            for p in block.parameters():
                p.requires_grad_(False)
            block.eval()

    def freeze_learngene(self, freeze: bool = True) -> None:
        """Keep the inherited blocks fixed (no gradients, BatchNorm in eval mode) or release them."""
        if freeze and self.config.inherited is None:
            raise _config_error("This model has no inherited blocks to freeze (config.inherited is None).")
        self.config.freeze_learngene = bool(freeze)
        if freeze:
            self._apply_freeze()
        else:
            for block in self.inherited_blocks():
                for p in block.parameters():
                    p.requires_grad_(True)
            block_mode = self.training
            for block in self.inherited_blocks():
                block.train(block_mode)

    def train(self, mode: bool = True) -> "IndividualForImageClassification":
        """Like :meth:`torch.nn.Module.train`, but frozen inherited blocks always stay in eval mode."""
        super().train(mode)
        if getattr(self.config, "freeze_learngene", False):
            for block in self.inherited_blocks():
                block.eval()
        return self

    # ------------------------------------------------------------------ learngene
    @torch.no_grad()
    def load_learngene(self, learngene: Any, origin: dict[str, Any] | None = None) -> None:
        """Copy a learngene's tensors into the inherited blocks and record it in ``config.learngene``.

        Checks the channel contract and every tensor's shape first; a mismatch raises
        :class:`~learngene_hf.errors.IncompatibleLearngeneError` naming both shapes.
        """
        lg = learngene.config
        indices = self.inherited_indices
        if len(indices) != lg.num_layers:
            raise _incompatible(
                f"The learngene has {lg.num_layers} layers but this model inherits {len(indices)} blocks "
                f"(config.inherited={self.config.inherited}); build the config with IndividualConfig.for_learngene."
            )
        feeding = self.config.widths[indices[0] - 1] if indices[0] > 0 else self.config.in_channels
        if feeding != int(lg.in_channels):
            raise _incompatible(
                f"The learngene expects {lg.in_channels} input channels but block "
                f"{indices[0] - 1 if indices[0] else 'input'} "
                f"of this model gives {feeding}; make the layer before the learngene {lg.in_channels} wide."
            )
        for j, index in enumerate(indices):
            block = self.blocks[index]
            target = block.state_dict()
            tensors = learngene.block_state_dict(j)
            for name in BLOCK_TENSOR_NAMES:
                if name not in tensors:
                    raise _incompatible(
                        f"The learngene lacks tensor blocks.{j}.{name}; the artifact is incomplete: extract it again."
                    )
                got, want = tuple(tensors[name].shape), tuple(target[name].shape)
                if got != want:
                    raise _incompatible(
                        f"Learngene tensor blocks.{j}.{name} has shape {got} but block {index} of this model needs "
                        f"{want}; "
                        "use IndividualConfig.for_learngene so the widths match the learngene."
                    )
            block.load_state_dict({k: v.to(target[k].dtype) for k, v in tensors.items() if k in target})
        record = {
            "layers": list(lg.layer_names),
            "position": lg.position,
            "in_channels": int(lg.in_channels),
            "out_channels": int(lg.out_channels),
            "source": {
                k: lg.source.get(k) for k in ("repo_id", "revision", "commit_sha", "preset") if k in (lg.source or {})
            },
        }
        record.update({"repo_id": None, "revision": None, "commit_sha": None})
        record.update(origin or {})
        self.config.learngene = record
        if self.config.freeze_learngene:
            self._apply_freeze()

    @classmethod
    def from_learngene(
        cls,
        learngene: Any,
        num_labels: int,
        freeze_learngene: bool = False,
        origin: dict[str, Any] | None = None,
        **config_overrides: Any,
    ) -> "IndividualForImageClassification":
        """Build an individual model around a layer learngene and load its tensors.

        Args:
            learngene: a :class:`~learngene_hf.artifact.learngene.Learngene` of form ``"layers"``
                (anything with ``config`` and ``block_state_dict``). To start from a folder or a
                Hub repo id, use :func:`learngene_hf.from_learngene`, which loads it and picks the
                model family.
            num_labels: classes of the target task (the fresh head's outputs).
            freeze_learngene: keep the inherited blocks fixed during training.
            origin: ``repo_id`` / ``revision`` / ``commit_sha`` to record (default: the
                learngene's own ``origin``, set when it was pulled from the Hub).
            config_overrides: :meth:`IndividualConfig.for_learngene` overrides (``stem_widths``,
                ``tail_widths``, ``head_hidden``, ``image_size``, ``id2label``...).

        The config records which learngene it came from (``config.learngene``: ``repo_id``,
        ``revision``, ``commit_sha``, layer names, position).
        """
        if not hasattr(learngene, "config") or not hasattr(learngene, "block_state_dict"):
            raise _config_error(
                f"IndividualModel.from_learngene takes a Learngene, got {type(learngene).__name__}; load a folder or a "
                "Hub repo id with learngene_hf.from_learngene(name, num_labels=...) or Learngene.from_pretrained(name)."
            )
        if getattr(learngene.config, "form", "layers") != "layers":
            raise _incompatible(
                f"This is a {learngene.config.form!r} learngene: its descendants are ViTs. Use "
                "learngene_hf.from_learngene(...) or ViTIndividualModel.from_learngene(...)."
            )
        config = IndividualConfig.for_learngene(
            learngene, num_labels, freeze_learngene=freeze_learngene, **config_overrides
        )
        model = cls(config)
        model.load_learngene(learngene, origin if origin is not None else getattr(learngene, "origin", None))
        return model


#: The classification model under the name the library has always used.
IndividualModel = IndividualForImageClassification


if __name__.startswith("learngene_hf."):  # the installed package (a remote-code copy is found through auto_map)
    register_auto_classes(IndividualConfig, IndividualBaseModel, IndividualForImageClassification)
