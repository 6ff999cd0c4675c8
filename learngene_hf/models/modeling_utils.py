"""transformers glue shared by every model family of the package (VGG-BN and ViT, collective and
individual): one place for what would otherwise be written four times.

* :class:`ImageModelMixin`: ``make_image_processor``, a ``save_pretrained`` that writes the
  image processor beside the weights (so ``pipeline("image-classification", model=folder)``
  works) and timm's ``config.json`` section (so ``timm.create_model("hf-hub:...")`` loads the
  repo), a ``push_to_hub`` with the package's model card, and ``to_timm``, for every
  ``PreTrainedModel`` base class of the package.
* :class:`VGGPreTrainedMixin`: the VGG-BN families' weight initialization.
* :class:`VGGBaseModelMixin`: ``__init__`` / ``init_weights`` / ``forward`` of the VGG-BN base
  models (``CollectiveBaseModel``, ``IndividualBaseModel``), built on :func:`vgg_base_forward`.
* :class:`VGGClassifierMixin`: ``vgg`` / ``blocks`` / ``neck`` / ``num_features`` of the VGG-BN
  classification models.
* :class:`OpenWorldScoreMixin`: ``open_world_score`` / ``unknown_score`` of the multi-head
  collective models, from :func:`logit_scores`.
* :func:`classifier_output`: loss and output packing of the classification heads.
* :func:`descendant_config_kwargs`: the config keywords of a descendant built around a learngene.
* :func:`register_auto_classes`: ``AutoConfig`` / ``AutoModel`` / ``AutoModelForImageClassification``
  registration of one family.

Depends only on torch, timm and transformers (plus its siblings), so it travels with a model
pushed as remote code.
"""

from __future__ import annotations

import os
import tempfile
from typing import Any

import torch
from timm.models import create_model
from torch import nn
from transformers import PreTrainedConfig
from transformers import initialization as init
from transformers.modeling_outputs import BaseModelOutputWithPoolingAndNoAttention, ImageClassifierOutput
from transformers.utils.hub import hf_api

from .hub_card import model_card
from .layers import init_vgg_weights, project_error
from .timm_hub import timm_config, timm_state_dict, write_timm_config
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
    bases): images in, ``make_image_processor``, ``save_pretrained`` with the image processor and
    timm's section, ``push_to_hub`` with the package's model card, and ``to_timm``."""

    main_input_name = "pixel_values"
    input_modalities = ("image",)

    def make_image_processor(self) -> Any:
        """A :class:`transformers.ViTImageProcessor` that resizes to ``config.image_size`` and
        normalizes with ``config.image_mean`` / ``image_std`` (what ``pipeline`` needs)."""
        return make_image_processor(self.config)

    def save_pretrained(
        self, save_directory: str | os.PathLike, *args: Any, save_image_processor: bool = True, **kwargs: Any
    ):
        """``PreTrainedModel.save_pretrained`` plus timm's section of ``config.json`` (so
        ``timm.create_model("hf-hub:org/name", pretrained=True)`` loads a pushed copy, see
        :mod:`~learngene_hf.models.timm_hub`) and, by default, the image processor beside the
        weights, so ``pipeline("image-classification", model=save_directory)`` works (also used by
        ``push_to_hub``)."""
        result = super().save_pretrained(save_directory, *args, **kwargs)
        if kwargs.get("is_main_process", True):
            processor = self.make_image_processor() if save_image_processor else None
            if processor is not None:
                processor.save_pretrained(save_directory)
            processor_type = type(processor).__name__ if processor is not None else None
            write_timm_config(os.path.join(save_directory, "config.json"), self.config, processor_type)
        return result

    def push_to_hub(
        self,
        repo_id: str,
        *,
        commit_message: str | None = None,
        commit_description: str | None = None,
        private: bool | None = None,
        token: bool | str | None = None,
        revision: str | None = None,
        create_pr: bool = False,
        max_shard_size: int | str | None = "50GB",
        tags: list[str] | None = None,
    ) -> Any:
        """transformers' ``push_to_hub`` (same arguments, one commit; returns its ``CommitInfo``)
        with this package's model card in place of the blank one: ``library_name: learngene-hf``,
        tags, ``base_model`` = the learngene repo a descendant came from, the learngene's commit
        and the papers (:mod:`~learngene_hf.models.hub_card`). The files are ``save_pretrained``'s,
        timm's ``config.json`` section included."""
        api = hf_api()
        repo_id = api.create_repo(repo_id, private=private, token=token, exist_ok=True).repo_id
        extra = [tags] if isinstance(tags, str) else list(tags or [])
        all_tags = list(getattr(self, "model_tags", None) or []) + extra
        with tempfile.TemporaryDirectory() as folder:
            self.save_pretrained(folder, max_shard_size=max_shard_size)
            with open(os.path.join(folder, "README.md"), "w", encoding="utf-8") as handle:
                handle.write(model_card(self.config, repo_id, all_tags))
            if revision is not None and not revision.startswith("refs/pr"):
                api.create_branch(repo_id=repo_id, branch=revision, token=token, exist_ok=True)
            return api.upload_folder(
                repo_id=repo_id,
                folder_path=folder,
                commit_message=commit_message or "Upload model",
                commit_description=commit_description,
                token=token,
                revision=revision,
                create_pr=create_pr,
            )

    def to_timm(self) -> nn.Module:
        """This model as a plain timm model: the registered ``learngene_vgg_*`` / ``learngene_vit_*``
        network with timm's tensor names and one classifier ``head`` (a collective model's newest
        task head), on this model's device and dtype and in its train / eval mode. Its logits equal
        ``self(pixel_values).logits``; ``timm.models.push_to_hf_hub(model.to_timm(), repo_id)``
        shares it as a timm-format repo."""
        section = timm_config(self.config)
        overlay = dict(section["pretrained_cfg"])
        if "label_names" in section:
            overlay["label_names"] = section["label_names"]
        model = create_model(
            section["architecture"],
            pretrained=False,
            pretrained_cfg_overlay=overlay,
            num_classes=section["num_classes"],
            **section["model_args"],
        )
        model.load_state_dict(timm_state_dict(self.state_dict()))
        reference = next(self.parameters())
        return model.to(device=reference.device, dtype=reference.dtype).train(self.training)


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


#: The open-world scores a collective model computes from its task heads alone (higher = more unknown).
LOGIT_SCORES = ("energy", "msp", "maxlogit")


def logit_scores(embedding: torch.Tensor, heads: Any) -> dict[str, torch.Tensor]:
    """Every :data:`LOGIT_SCORES` score of ``embedding`` [B, D] over ``heads`` (linear layers to
    each task's logits): ``{"energy": [B], "msp": [B], "maxlogit": [B]}``, higher = more unknown.

    ``energy`` is minus the largest log-sum-exp of the logits over the heads, ``msp`` minus the
    largest maximum softmax probability and ``maxlogit`` minus the largest logit (Vaze et al.,
    ICLR 2022): an image is familiar when *some* head is confident about it."""
    energy, msp, maxlogit = [], [], []
    for head in heads:
        logits = head(embedding).float()
        energy.append(torch.logsumexp(logits, 1))
        msp.append(logits.softmax(1).amax(1))
        maxlogit.append(logits.amax(1))
    return {
        "energy": -torch.stack(energy, 1).amax(1),
        "msp": -torch.stack(msp, 1).amax(1),
        "maxlogit": -torch.stack(maxlogit, 1).amax(1),
    }


class OpenWorldScoreMixin:
    """``open_world_score`` of a multi-head collective model (needs ``embed``, ``heads``,
    ``_check_task`` and ``config.open_world_score``)."""

    @torch.no_grad()
    def open_world_score(
        self, pixel_values: torch.Tensor, task_ids: Any = None, method: str | None = None
    ) -> torch.Tensor:
        """How unfamiliar each image of ``pixel_values`` [B, C, H, W] is to the tasks learnt so far:
        a [B] float tensor, higher = more likely a class the model never learnt.

        ``method`` is one of :data:`LOGIT_SCORES` (default: ``config.open_world_score``, the score
        the collective run reported); ``task_ids`` restricts the heads asked (default: all, the
        question "is this any class I know?"). The scale depends on the model: threshold it at a
        quantile of the scores of images of known classes (see the collective guide).
        """
        method = method or getattr(self.config, "open_world_score", "energy")
        if method not in LOGIT_SCORES:
            raise project_error(
                "ConfigError",
                f"Unknown open-world score {method!r} for a model alone; use one of {LOGIT_SCORES} "
                "('mahalanobis' and 'knn' need the run's open_world.safetensors: "
                "learngene_hf.training.openworld.unknown_scores).",
            )
        if not len(self.heads):
            raise project_error("ConfigError", "No task head yet: the open-world score needs at least one learnt task.")
        ids = range(len(self.heads)) if task_ids is None else [self._check_task(t) for t in task_ids]
        return logit_scores(self.embed(pixel_values), [self.heads[t] for t in ids])[method]

    def unknown_score(self, pixel_values: torch.Tensor, task_ids: Any = None, method: str = "energy") -> torch.Tensor:
        """:meth:`open_world_score` with the energy score by default (the name of earlier releases)."""
        return self.open_world_score(pixel_values, task_ids, method)


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
