"""transformers glue shared by every model family of the package (VGG-BN and ViT, collective and
individual): one place for what would otherwise be written four times.

* :class:`ImageModelMixin`: ``make_image_processor`` and a ``save_pretrained`` that writes the
  image processor beside the weights (so ``pipeline("image-classification", model=folder)``
  works), for every ``PreTrainedModel`` base class of the package.
* :class:`VGGPreTrainedMixin`: the VGG-BN families' weight initialization.
* :class:`VGGBaseModelMixin`: ``__init__`` / ``init_weights`` / ``forward`` of the VGG-BN base
  models (``CollectiveBaseModel``, ``IndividualBaseModel``), built on :func:`vgg_base_forward`.
* :class:`VGGClassifierMixin`: ``vgg`` / ``blocks`` / ``neck`` / ``num_features`` of the VGG-BN
  classification models.
* :func:`classifier_output`: loss and output packing of the classification heads.
* :func:`descendant_config_kwargs`: the config keywords of a descendant built around a learngene.
* :func:`register_auto_classes`: ``AutoConfig`` / ``AutoModel`` / ``AutoModelForImageClassification``
  registration of one family.

Depends only on torch and transformers (plus the sibling ``vgg`` module), so it travels with a
model pushed as remote code.
"""

from __future__ import annotations

import os
from typing import Any

import torch
from torch import nn
from transformers import PreTrainedConfig
from transformers import initialization as init
from transformers.modeling_outputs import BaseModelOutputWithPoolingAndNoAttention, ImageClassifierOutput

from .layers import init_vgg_weights
from .vgg import VGGBN, backbone_from_config


def make_image_processor(config: Any) -> Any:
    """A :class:`transformers.ViTImageProcessor` for a model config with ``image_size``,
    ``image_mean`` and ``image_std``: resize to ``image_size`` squared, ``x/255``, then
    ``(x - mean) / std`` (what ``pipeline("image-classification")`` needs beside the weights)."""
    from transformers import ViTImageProcessor

    size = int(config.image_size)
    return ViTImageProcessor(
        do_resize=True,
        size={"height": size, "width": size},
        do_rescale=True,
        rescale_factor=1 / 255,
        do_normalize=True,
        image_mean=list(config.image_mean),
        image_std=list(config.image_std),
    )


class ImageModelMixin:
    """What every ``PreTrainedModel`` base class of the package shares (put it first among the
    bases): images in, ``make_image_processor``, and ``save_pretrained`` with the image processor."""

    main_input_name = "pixel_values"
    input_modalities = ("image",)

    def make_image_processor(self) -> Any:
        """A :class:`transformers.ViTImageProcessor` that resizes to ``config.image_size`` and
        normalizes with ``config.image_mean`` / ``image_std`` (what ``pipeline`` needs)."""
        return make_image_processor(self.config)

    def save_pretrained(
        self, save_directory: str | os.PathLike, *args: Any, save_image_processor: bool = True, **kwargs: Any
    ):
        """``PreTrainedModel.save_pretrained`` plus, by default, the image processor beside the
        weights, so ``pipeline("image-classification", model=save_directory)`` works (also used by
        ``push_to_hub``)."""
        result = super().save_pretrained(save_directory, *args, **kwargs)
        if save_image_processor and kwargs.get("is_main_process", True):
            self.make_image_processor().save_pretrained(save_directory)
        return result


class VGGPreTrainedMixin(ImageModelMixin):
    """:class:`ImageModelMixin` plus the VGG-BN families' weight initialization (He-normal convs,
    unit BatchNorm, small normal linears; loaded tensors are skipped)."""

    _no_split_modules = ["ConvNormAct"]

    def _init_weights(self, module: nn.Module) -> None:
        init_vgg_weights(module, init)


def vgg_base_forward(
    vgg: VGGBN,
    config: PreTrainedConfig,
    pixel_values: torch.Tensor,
    output_hidden_states: bool | None,
    return_dict: bool | None,
) -> BaseModelOutputWithPoolingAndNoAttention | tuple:
    """The base-model forward shared by the VGG-BN families: ``pixel_values`` [B, C, H, W] ->
    ``last_hidden_state`` [B, widths[-1], h, w], ``pooler_output`` [B, neck width] and, with
    ``output_hidden_states``, every conv block's output (after its pool)."""
    output_hidden_states = output_hidden_states if output_hidden_states is not None else config.output_hidden_states
    return_dict = return_dict if return_dict is not None else config.return_dict
    hidden_states = None
    if output_hidden_states:
        last, intermediates = vgg.forward_intermediates(pixel_values)
        hidden_states = tuple(intermediates)
    else:
        last = vgg.forward_features(pixel_values)
    pooled = vgg.forward_head(last, pre_logits=True)
    if not return_dict:
        return (last, pooled) + ((hidden_states,) if hidden_states is not None else ())
    return BaseModelOutputWithPoolingAndNoAttention(
        last_hidden_state=last, pooler_output=pooled, hidden_states=hidden_states
    )


class VGGBaseModelMixin:
    """``__init__``, ``init_weights`` and ``forward`` of a VGG-BN base model (``self.vgg``, a
    :class:`~learngene_hf.models.vgg.VGGBN` without classifier). Put it first among the bases,
    before the family's ``PreTrainedModel`` class.

    ``init_by_parent``: inside a classification model the parent's ``post_init`` initializes
    these weights, in the same module order (and so from the same random stream) as a single
    flat model would.
    """

    def __init__(self, config: PreTrainedConfig, init_by_parent: bool = False):
        super().__init__(config)
        self.init_by_parent = init_by_parent
        self.vgg = backbone_from_config(config)
        self.post_init()

    def init_weights(self) -> None:
        if not self.init_by_parent:
            super().init_weights()

    def forward(
        self,
        pixel_values: torch.Tensor,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **kwargs: Any,
    ) -> BaseModelOutputWithPoolingAndNoAttention | tuple:
        """Features of ``pixel_values`` [B, C, H, W]; a tuple ``(last_hidden_state, pooler_output
        [, hidden_states])`` when ``return_dict`` is False."""
        return vgg_base_forward(self.vgg, self.config, pixel_values, output_hidden_states, return_dict)


class VGGClassifierMixin:
    """The structure of a VGG-BN classification model whose base model (``self.base_model``, a
    :class:`VGGBaseModelMixin` model) holds the timm network: ``vgg``, ``blocks``, ``neck``,
    ``num_features``."""

    @property
    def vgg(self) -> VGGBN:
        """The timm network (conv blocks, pool, neck; no classifier)."""
        return self.base_model.vgg

    @property
    def blocks(self) -> nn.ModuleList:
        """The conv blocks (timm ``ConvNormAct``), input to output."""
        return self.base_model.vgg.blocks

    @property
    def neck(self) -> nn.Sequential:
        """The MLP between the pooled features and the classifier(s)."""
        return self.base_model.vgg.neck

    @property
    def num_features(self) -> int:
        """Width of the flattened pooled feature map that enters the MLP."""
        return self.config.widths[-1] * self.config.feature_pool_size**2


def classifier_output(
    logits: torch.Tensor, labels: torch.Tensor | None, base_output: Any, return_dict: bool
) -> ImageClassifierOutput | tuple:
    """Loss (cross-entropy when ``labels`` [B] is given) and output packing shared by the heads."""
    loss = nn.functional.cross_entropy(logits, labels) if labels is not None else None
    if not return_dict:
        out = (logits,) + tuple(base_output[2:])
        return ((loss,) + out) if loss is not None else out
    return ImageClassifierOutput(loss=loss, logits=logits, hidden_states=base_output.hidden_states)


def descendant_config_kwargs(kwargs: dict, preprocessing: dict, num_labels: int, overrides: dict) -> dict:
    """The config keywords of a descendant built around a learngene: ``kwargs`` (its architecture),
    the learngene's normalization ``preprocessing["mean"/"std"]`` unless ``overrides`` set
    ``image_mean`` / ``image_std``, ``num_labels`` unless ``overrides`` give ``id2label``, then
    ``overrides`` on top."""
    kwargs = dict(kwargs)
    if "mean" in preprocessing and "image_mean" not in overrides:
        kwargs["image_mean"] = preprocessing["mean"]
    if "std" in preprocessing and "image_std" not in overrides:
        kwargs["image_std"] = preprocessing["std"]
    if "id2label" not in overrides:
        kwargs["num_labels"] = num_labels
    kwargs.update(overrides)
    return kwargs


def register_auto_classes(config_class: type, base_model: type, classification_model: type) -> None:
    """Make ``AutoConfig`` / ``AutoModel`` / ``AutoModelForImageClassification`` know a family."""
    from transformers import AutoConfig, AutoModel, AutoModelForImageClassification

    AutoConfig.register(config_class.model_type, config_class, exist_ok=True)
    AutoModel.register(config_class, base_model, exist_ok=True)
    AutoModelForImageClassification.register(config_class, classification_model, exist_ok=True)
