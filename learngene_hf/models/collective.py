"""The collective model: an expandable, multi-head VGG-BN network (the paper's "collective model").

Two transformers models around the timm model :class:`~learngene_hf.models.vgg.VGGBN`, as transformers'
own vision families are laid out: :class:`CollectiveBaseModel` (``AutoModel``; conv features,
neck embedding, per-layer hidden states) and :class:`CollectiveForImageClassification`
(``AutoModelForImageClassification``; the base model under ``self.collective`` plus one linear
head per task). ``CollectiveModel`` is the classification model under its historical name.

``CollectiveConfig`` stores the *current* shape of the network (the width of every conv layer,
where the pools are, a stable name for every layer, the heads learnt so far and every growth
event), so a model grown with :meth:`CollectiveModel.widen` / :meth:`CollectiveModel.deepen`
saves with ``save_pretrained`` and comes back with ``from_pretrained`` in its grown shape.

This module depends only on torch, timm and transformers (plus its siblings ``vgg``, ``layers``,
``growth``, ``presets`` and ``modeling_utils``) so it can be pushed with ``register_for_auto_class`` and loaded with
``trust_remote_code=True`` by people who do not have learngene-hf installed.
"""

from __future__ import annotations

import copy
from typing import Any, Sequence

import torch
from torch import nn
from transformers import PreTrainedConfig, PreTrainedModel
from transformers.modeling_outputs import ImageClassifierOutput

from .growth import wider_consumer_linear
from .layers import init_vgg_weights, project_error
from .modeling_utils import (
    LOGIT_SCORES,
    OpenWorldScoreMixin,
    VGGBaseModelMixin,
    VGGClassifierMixin,
    VGGPreTrainedMixin,
    classifier_output,
    register_auto_classes,
)
from .presets import VGG_BN_ARCHS, VGG_BN_MEAN, VGG_BN_STD
from .timm_hub import drop_timm_keys
from .vgg import check_vgg_shape

#: Architectures by name (the registered timm sizes ``learngene_vgg_<name>``). "paper" is the
#: collective model of the Learngene paper; "small" and "tiny" are for CPUs and tests.
COLLECTIVE_PRESETS = VGG_BN_ARCHS


def _config_error(message: str) -> ValueError:
    return project_error("ConfigError", message)


class CollectiveConfig(PreTrainedConfig):
    r"""Configuration of a :class:`CollectiveModel`.

    Args:
        preset: name in :data:`COLLECTIVE_PRESETS` that supplies the defaults below.
        widths: output channels of every conv layer, input to output (the *current* widths).
        pool: one flag per conv layer; ``True`` puts a 2x2 max pool after that layer.
        layer_names: a stable name per conv layer ("conv0", ...). Widening keeps the name; a layer
            added by deepening gets a new one. Gradient records and learngenes use these names.
        head_hidden: widths of the shared MLP between the pooled features and the task heads.
        dropout: dropout probability in the MLP.
        feature_pool_size: side of the adaptive average pool before flattening.
        task_num_labels: number of classes of every task head, in task order.
        growth_log: every growth event, as dicts (``op``, ``layer``, ``name``, ``old_width``,
            ``new_width``, ``task``); written by :meth:`CollectiveModel.widen` / ``deepen``.
        in_channels: channels of the input images.
        image_size: side of the (square) training images; informational, any size >= the total
            pooling factor works.
        kernel_size: conv kernel size.
        image_mean / image_std: per-channel normalization the model expects (for the image
            processor saved beside it).
        open_world_score: the default score of ``open_world_score`` (one of
            :data:`~learngene_hf.models.modeling_utils.LOGIT_SCORES`; the trainer writes the one
            its run reported).
        num_labels / id2label / label2id: through ``**kwargs``; they describe the newest task head
            (the one ``forward`` and ``pipeline`` use by default) and follow :meth:`add_task`.
    """

    model_type = "learngene_collective"

    def __init__(
        self,
        preset: str = "paper",
        widths: Sequence[int] | None = None,
        pool: Sequence[bool] | None = None,
        layer_names: Sequence[str] | None = None,
        head_hidden: Sequence[int] | None = None,
        dropout: float | None = None,
        feature_pool_size: int = 1,
        task_num_labels: Sequence[int] | None = None,
        growth_log: Sequence[dict] | None = None,
        in_channels: int = 3,
        image_size: int = 32,
        kernel_size: int = 3,
        image_mean: Sequence[float] | None = None,
        image_std: Sequence[float] | None = None,
        open_world_score: str = "energy",
        **kwargs,
    ):
        if preset not in COLLECTIVE_PRESETS:
            raise _config_error(f"Unknown preset {preset!r}; choose one of {sorted(COLLECTIVE_PRESETS)}.")
        base = COLLECTIVE_PRESETS[preset]
        self.preset = preset
        self.widths = [int(w) for w in (widths if widths is not None else base["widths"])]
        if pool is None:
            pool = base["pool"] if widths is None else [False] * len(self.widths)
        self.pool = [bool(p) for p in pool]
        self.layer_names = (
            list(layer_names) if layer_names is not None else [f"conv{i}" for i in range(len(self.widths))]
        )
        self.head_hidden = [int(w) for w in (head_hidden if head_hidden is not None else base["head_hidden"])]
        self.dropout = float(dropout if dropout is not None else base["dropout"])
        self.feature_pool_size = int(feature_pool_size)
        self.task_num_labels = [int(n) for n in (task_num_labels or [])]
        self.growth_log = [dict(event) for event in (growth_log or [])]
        self.in_channels = int(in_channels)
        self.image_size = int(image_size)
        self.kernel_size = int(kernel_size)
        self.image_mean = [float(v) for v in (image_mean if image_mean is not None else VGG_BN_MEAN)]
        self.image_std = [float(v) for v in (image_std if image_std is not None else VGG_BN_STD)]
        self.open_world_score = str(open_world_score)
        self._validate()
        if self.task_num_labels and "id2label" not in kwargs and "num_labels" not in kwargs:
            kwargs["num_labels"] = self.task_num_labels[-1]
        drop_timm_keys(kwargs)  # timm's section of a saved config.json
        super().__init__(**kwargs)

    def _validate(self) -> None:
        check_vgg_shape(self, "a collective")
        if self.open_world_score not in LOGIT_SCORES:
            raise _config_error(f"open_world_score must be one of {LOGIT_SCORES}, got {self.open_world_score!r}.")
        if len(self.layer_names) != len(self.widths) or len(set(self.layer_names)) != len(self.layer_names):
            raise _config_error(
                f"layer_names must hold one distinct name per conv layer ({len(self.widths)}), got {self.layer_names}."
            )
        for task, n in enumerate(self.task_num_labels):
            if n <= 0:
                raise _config_error(f"Task {task} has {n} labels; a task head needs at least one label.")

    @property
    def num_layers(self) -> int:
        """Number of conv layers (the depth of the backbone)."""
        return len(self.widths)

    @property
    def num_tasks(self) -> int:
        """Number of task heads."""
        return len(self.task_num_labels)


class CollectivePreTrainedModel(VGGPreTrainedMixin, PreTrainedModel):
    """Weight initialization and loading glue shared by collective models."""

    config_class = CollectiveConfig
    base_model_prefix = "collective"


class CollectiveBaseModel(VGGBaseModelMixin, CollectivePreTrainedModel):
    r"""The collective model without task heads (what ``AutoModel`` loads).

    ``pixel_values`` [B, C, H, W] -> ``self.vgg`` (a :class:`~learngene_hf.models.vgg.VGGBN` with no
    classifier): conv blocks -> feature map ``last_hidden_state`` [B, widths[-1], h, w] ->
    adaptive average pool, flatten, MLP neck -> ``pooler_output`` [B, neck_width]. With
    ``output_hidden_states`` the output of every conv block (after its pool) comes back in
    ``hidden_states``, one [B, widths[i], h_i, w_i] tensor per entry of ``config.layer_names``.
    """


class CollectiveForImageClassification(OpenWorldScoreMixin, VGGClassifierMixin, CollectivePreTrainedModel):
    r"""Expandable multi-head VGG-BN classifier (``AutoModelForImageClassification``).

    ``pixel_values`` [B, C, H, W] -> :class:`CollectiveBaseModel` (``self.collective``; its timm
    network is ``self.vgg``, conv blocks ``self.blocks``, MLP ``self.neck``) -> one linear head
    per task (``self.heads[task_id]``) -> logits [B, task_num_labels[task_id]].

    Grow it with :meth:`widen` and :meth:`deepen` (function preserving), add tasks with
    :meth:`add_task`. ``config.num_labels`` / ``id2label`` describe the newest head, the one
    ``forward`` (and so ``pipeline("image-classification")``) uses by default.
    """

    def __init__(self, config: CollectiveConfig):
        super().__init__(config)
        self.collective = CollectiveBaseModel(config, init_by_parent=True)
        self.heads = nn.ModuleList(nn.Linear(self.neck_width, n) for n in config.task_num_labels)
        self.post_init()

    # ------------------------------------------------------------------ structure
    @property
    def neck_width(self) -> int:
        """Width of the MLP output that the task heads read."""
        return self.config.head_hidden[-1] if self.config.head_hidden else self.num_features

    def _check_layer(self, layer: int) -> int:
        n = self.config.num_layers
        if not isinstance(layer, int) or not -n <= layer < n:
            raise _config_error(
                f"Conv layer index {layer!r} is out of range: this model has {n} conv layers (0..{n - 1})."
            )
        return layer % n

    # ------------------------------------------------------------------ forward
    def forward_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Conv feature map [B, widths[-1], h, w] of ``pixel_values`` [B, C, H, W]."""
        return self.vgg.forward_features(pixel_values)

    def embed(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """MLP embedding [B, neck_width] shared by all task heads."""
        return self.vgg.forward_head(self.vgg.forward_features(pixel_values), pre_logits=True)

    def forward(
        self,
        pixel_values: torch.Tensor,
        labels: torch.Tensor | None = None,
        task_id: int | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> ImageClassifierOutput | tuple:
        r"""Classify ``pixel_values`` [B, C, H, W] with the head of ``task_id`` (default: the newest).

        Returns an :class:`~transformers.modeling_outputs.ImageClassifierOutput`
        with ``logits`` [B, num_labels of that task], the cross-entropy ``loss`` when ``labels``
        [B] (int64) is given, and the per-layer ``hidden_states`` when ``output_hidden_states``;
        a tuple ``([loss,] logits[, hidden_states])`` when ``return_dict`` is False.
        """
        if not self.heads:
            raise _config_error("This collective model has no task head yet: call model.add_task(num_labels) first.")
        head = self.heads[self._check_task(task_id)]
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        base = self.collective(pixel_values, output_hidden_states=output_hidden_states, return_dict=return_dict)
        logits = head(base[1])
        return classifier_output(logits, labels, base, return_dict)

    def _check_task(self, task_id: int | None) -> int:
        if task_id is None:
            return len(self.heads) - 1
        if not 0 <= task_id < len(self.heads):
            raise _config_error(
                f"task_id {task_id} does not exist: this model has {len(self.heads)} task heads "
                f"(0..{len(self.heads) - 1})."
            )
        return task_id

    # ------------------------------------------------------------------ tasks and growth
    def add_task(self, num_labels: int, id2label: dict[int, str] | None = None) -> int:
        """Add a fresh linear head for a new task with ``num_labels`` classes; returns its task id.

        The head is created on the model's device and dtype and becomes the default one:
        ``config.num_labels`` / ``id2label`` now describe it (``id2label`` names its classes;
        default ``LABEL_i``). Rebuild the optimizer afterwards (the new head's parameters are not
        in an optimizer built before).
        """
        if not isinstance(num_labels, int) or isinstance(num_labels, bool) or num_labels <= 0:
            raise _config_error(f"num_labels must be a positive integer, got {num_labels!r}.")
        if id2label is not None and sorted(int(k) for k in id2label) != list(range(num_labels)):
            raise _config_error(f"id2label must name classes 0..{num_labels - 1}, got keys {sorted(id2label)}.")
        ref = next(self.parameters())
        head = nn.Linear(self.neck_width, num_labels).to(device=ref.device, dtype=ref.dtype)
        init_vgg_weights(head, nn.init)
        self.heads.append(head)
        self.config.task_num_labels.append(num_labels)
        if id2label is None:
            self.config.num_labels = num_labels
        else:
            self.config.id2label = {int(k): str(v) for k, v in id2label.items()}
            self.config.label2id = {v: k for k, v in self.config.id2label.items()}
        return len(self.heads) - 1

    def _log_growth(self, **event) -> None:
        event["task"] = self.config.num_tasks - 1 if self.config.num_tasks else None
        self.config.growth_log.append(event)

    def _sync_shape(self) -> None:
        self.config.widths = list(self.vgg.widths)
        self.config.pool = list(self.vgg.pool)

    @torch.no_grad()
    def widen(self, layer: int, width: int, generator: torch.Generator | None = None) -> None:
        """Widen conv layer ``layer`` (0-based) to ``width`` output channels with Net2WiderNet.

        New filters copy randomly chosen existing ones (``generator`` makes the choice
        reproducible) together with their BatchNorm parameters and running statistics; the next
        conv layer (or the first linear layer after the last conv) divides the incoming weights of
        replicated channels by their copy count. The model computes the same function in eval
        mode. The config is updated and the event logged in ``config.growth_log``.

        The parameter tensors of the grown layers are new objects: **rebuild the optimizer** after
        calling this.
        """
        layer = self._check_layer(layer)
        old = self.config.widths[layer]
        if not isinstance(width, int) or width < old:
            raise _config_error(
                f"Cannot widen conv layer {layer} to {width!r} channels: it already has {old}; the new width must be "
                f">= {old}."
            )
        if width == old:
            return
        mapping = self.vgg.widen(layer, width, generator)
        if layer == self.config.num_layers - 1 and not len(self.neck):
            per_channel = self.config.feature_pool_size**2
            for t, head in enumerate(self.heads):
                self.heads[t] = wider_consumer_linear(head, mapping, per_channel)
        self._sync_shape()
        self._log_growth(op="widen", layer=layer, name=self.config.layer_names[layer], old_width=old, new_width=width)

    @torch.no_grad()
    def deepen(self, layer: int) -> None:
        """Insert a new conv + BatchNorm layer right after conv layer ``layer`` (after its pool, if
        any), initialized to the identity (Net2DeeperNet), so the model computes the same function
        in eval mode. The new layer has the width of ``layer``, no pool, and a new stable name.

        The module list changes: **rebuild the optimizer** after calling this.
        """
        layer = self._check_layer(layer)
        self.vgg.deepen(layer)
        self._sync_shape()
        name = self._new_layer_name()
        self.config.layer_names.insert(layer + 1, name)
        self._log_growth(op="deepen", layer=layer + 1, name=name, old_width=None, new_width=self.config.widths[layer])

    def _new_layer_name(self) -> str:
        used = {int(n[4:]) for n in self.config.layer_names if n.startswith("conv") and n[4:].isdigit()}
        return f"conv{max(used, default=-1) + 1}"

    # ------------------------------------------------------------------ reporting
    def layer_summary(self) -> list[dict[str, Any]]:
        """One row per layer, input to output: ``index``, ``name``, ``kind`` ("conv", "mlp",
        "head"), ``in_channels``, ``out_channels``, ``pool`` and ``parameters``."""
        rows = []
        for index, (name, block) in enumerate(zip(self.config.layer_names, self.blocks)):
            rows.append(
                {
                    "index": index,
                    "name": name,
                    "kind": "conv",
                    "in_channels": block.conv.in_channels,
                    "out_channels": block.conv.out_channels,
                    "pool": self.config.pool[index],
                    "parameters": sum(p.numel() for p in block.parameters()),
                }
            )
        linears = [m for m in self.neck if isinstance(m, nn.Linear)]
        for index, linear in enumerate(linears):
            rows.append(_linear_row(f"mlp{index}", "mlp", linear))
        for task, head in enumerate(self.heads):
            rows.append(_linear_row(f"head{task}", "head", head))
        return rows

    def conv_parameters(self, layer: int) -> dict[str, nn.Parameter]:
        """The parameters of conv layer ``layer`` by their name inside the block."""
        return dict(self.blocks[self._check_layer(layer)].named_parameters())

    def copy(self) -> "CollectiveForImageClassification":
        """A deep copy (config included), handy before an experiment that grows the model."""
        return copy.deepcopy(self)


#: The classification model under the name the library has always used.
CollectiveModel = CollectiveForImageClassification


def _linear_row(name: str, kind: str, linear: nn.Linear) -> dict[str, Any]:
    return {
        "index": None,
        "name": name,
        "kind": kind,
        "in_channels": linear.in_features,
        "out_channels": linear.out_features,
        "pool": False,
        "parameters": sum(p.numel() for p in linear.parameters()),
    }


if __name__.startswith("learngene_hf."):  # the installed package (a remote-code copy is found through auto_map)
    register_auto_classes(CollectiveConfig, CollectiveBaseModel, CollectiveForImageClassification)
