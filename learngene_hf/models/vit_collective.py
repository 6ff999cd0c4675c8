"""The collective ViT: a multi-head :class:`~learngene_hf.models.vit.LearngeneViT` (the TLEG
auxiliary model when its blocks are a linear expansion) that ``learngene_hf.training`` trains on a
task stream, as a transformers model (``AutoModel`` / ``AutoModelForImageClassification``).

Depends only on torch, timm and transformers (plus its siblings), so it travels as remote code.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import nn
from transformers import PreTrainedConfig, PreTrainedModel
from transformers.modeling_outputs import ImageClassifierOutput

from .modeling_utils import LOGIT_SCORES, ImageModelMixin, OpenWorldScoreMixin, register_auto_classes
from .presets import VIT_PRESETS
from .timm_hub import drop_timm_keys
from .vit import (
    DEFAULT_EXPANSION_RULE,
    DEFAULT_IMAGE_MEAN,
    DEFAULT_IMAGE_STD,
    EMBEDDING_TENSOR_NAMES,
    EXPANSION_RULES,
    RECORDED_MATRICES,
    LearngeneViT,
    check_architecture,
    config_error,
    init_vit_weights,
)


class ViTCollectiveConfig(PreTrainedConfig):
    r"""Configuration of a :class:`ViTCollectiveModel`.

    Args:
        preset: name in :data:`VIT_PRESETS` that supplies the defaults below.
        embed_dim / depth / num_heads / mlp_ratio / patch_size: the ViT (timm's meaning).
        image_size: side of the square input images; in_channels: their channels.
        expansion: ``"linear"`` (blocks = base + c(l, depth) * inc, the TLEG auxiliary model) or
            ``"none"`` (ordinary blocks: the unconstrained baseline for weight selection).
        expansion_rule: one of :data:`EXPANSION_RULES`.
        task_num_labels: classes of every task head, in task order.
        growth_log: always empty (growth is not offered for ViTs); kept so the trainer's reports
            read the same for every family.
        image_mean / image_std: normalization the model expects (for the saved image processor).
        open_world_score: the default score of ``open_world_score`` (one of
            :data:`~learngene_hf.models.modeling_utils.LOGIT_SCORES`).
    """

    model_type = "learngene_vit_collective"

    def __init__(
        self,
        preset: str = "vit-small",
        embed_dim: int | None = None,
        depth: int | None = None,
        num_heads: int | None = None,
        mlp_ratio: float | None = None,
        patch_size: int | None = None,
        image_size: int = 32,
        in_channels: int = 3,
        expansion: str = "linear",
        expansion_rule: str = DEFAULT_EXPANSION_RULE,
        task_num_labels: Sequence[int] | None = None,
        growth_log: Sequence[dict] | None = None,
        image_mean: Sequence[float] | None = None,
        image_std: Sequence[float] | None = None,
        open_world_score: str = "energy",
        **kwargs,
    ):
        if preset not in VIT_PRESETS:
            raise config_error(f"Unknown ViT preset {preset!r}; choose one of {sorted(VIT_PRESETS)}.")
        base = VIT_PRESETS[preset]
        self.preset = preset
        self.embed_dim = int(embed_dim if embed_dim is not None else base["embed_dim"])
        self.depth = int(depth if depth is not None else base["depth"])
        self.num_heads = int(num_heads if num_heads is not None else base["num_heads"])
        self.mlp_ratio = float(mlp_ratio if mlp_ratio is not None else base["mlp_ratio"])
        self.patch_size = int(patch_size if patch_size is not None else base["patch_size"])
        self.image_size = int(image_size)
        self.in_channels = int(in_channels)
        self.expansion = str(expansion)
        self.expansion_rule = str(expansion_rule)
        self.task_num_labels = [int(n) for n in (task_num_labels or [])]
        self.growth_log = [dict(e) for e in (growth_log or [])]
        self.image_mean = [float(v) for v in (image_mean if image_mean is not None else DEFAULT_IMAGE_MEAN)]
        self.image_std = [float(v) for v in (image_std if image_std is not None else DEFAULT_IMAGE_STD)]
        self.open_world_score = str(open_world_score)
        if self.open_world_score not in LOGIT_SCORES:
            raise config_error(f"open_world_score must be one of {LOGIT_SCORES}, got {self.open_world_score!r}.")
        check_architecture(self.embed_dim, self.depth, self.num_heads, self.mlp_ratio, self.patch_size, self.image_size)
        if self.expansion not in ("linear", "none"):
            raise config_error(f"expansion must be 'linear' or 'none', got {self.expansion!r}.")
        if self.expansion_rule not in EXPANSION_RULES:
            raise config_error(f"expansion_rule must be one of {list(EXPANSION_RULES)}, got {self.expansion_rule!r}.")
        if self.expansion == "linear" and self.depth < 2:
            raise config_error(
                f"A linear-expansion ViT needs depth >= 2 (it learns base and increment), got {self.depth}."
            )
        if self.task_num_labels and "id2label" not in kwargs and "num_labels" not in kwargs:
            kwargs["num_labels"] = self.task_num_labels[-1]
        drop_timm_keys(kwargs)  # timm's section of a saved config.json
        super().__init__(**kwargs)

    @property
    def num_tasks(self) -> int:
        """Number of task heads."""
        return len(self.task_num_labels)

    @property
    def num_layers(self) -> int:
        """Number of transformer blocks."""
        return self.depth

    @property
    def layer_names(self) -> list[str]:
        """Names of the weights the gradient record follows: ``base.<matrix>`` and ``inc.<matrix>``
        for a linear expansion, ``block<i>.<matrix>`` otherwise."""
        if self.expansion == "linear":
            return [f"{part}.{m}" for part in ("base", "inc") for m in RECORDED_MATRICES]
        return [f"block{i}.{m}" for i in range(self.depth) for m in RECORDED_MATRICES]


class ViTCollectivePreTrainedModel(ImageModelMixin, PreTrainedModel):
    """Weight initialization and loading glue of the ViT collective model."""

    config_class = ViTCollectiveConfig
    base_model_prefix = "vit_collective"
    _no_split_modules = ["Block"]

    def _init_weights(self, module: nn.Module) -> None:
        init_vit_weights(module)


class ViTCollectiveModel(OpenWorldScoreMixin, ViTCollectivePreTrainedModel):
    r"""Multi-head ViT collective model (the TLEG auxiliary model when ``expansion="linear"``).

    ``pixel_values`` [B, C, H, W] -> :class:`LearngeneViT` (``self.vit``; patch embedding, class
    token, blocks, final norm, class-token pooling) -> embedding [B, embed_dim] -> the head of
    ``task_id`` (``self.heads[task_id]``) -> logits [B, task_num_labels[task_id]].
    """

    def __init__(self, config: ViTCollectiveConfig):
        super().__init__(config)
        self.vit = LearngeneViT(
            expansion=config.expansion,
            expansion_rule=config.expansion_rule,
            img_size=config.image_size,
            patch_size=config.patch_size,
            in_chans=config.in_channels,
            num_classes=0,
            embed_dim=config.embed_dim,
            depth=config.depth,
            num_heads=config.num_heads,
            mlp_ratio=config.mlp_ratio,
        )
        self.heads = nn.ModuleList(nn.Linear(config.embed_dim, n) for n in config.task_num_labels)
        self.post_init()

    def embed(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Class-token embedding [B, embed_dim] shared by all task heads."""
        return self.vit.forward_head(self.vit.forward_features(pixel_values), pre_logits=True)

    def _check_task(self, task_id: int | None) -> int:
        if not self.heads:
            raise config_error("This collective model has no task head yet: call model.add_task(num_labels) first.")
        if task_id is None:
            return len(self.heads) - 1
        if not 0 <= task_id < len(self.heads):
            raise config_error(
                f"task_id {task_id} does not exist: this model has {len(self.heads)} task heads "
                f"(0..{len(self.heads) - 1})."
            )
        return task_id

    def forward(
        self, pixel_values: torch.Tensor, labels: torch.Tensor | None = None, task_id: int | None = None, **kwargs
    ) -> ImageClassifierOutput:
        r"""Classify ``pixel_values`` [B, C, H, W] with the head of ``task_id`` (default: the newest).

        Returns ``logits`` [B, num_labels of that task] and, with ``labels`` [B], the cross-entropy ``loss``.
        """
        head = self.heads[self._check_task(task_id)]
        logits = head(self.embed(pixel_values))
        loss = nn.functional.cross_entropy(logits, labels) if labels is not None else None
        return ImageClassifierOutput(loss=loss, logits=logits)

    def add_task(self, num_labels: int, id2label: dict[int, str] | None = None) -> int:
        """Add a fresh linear head with ``num_labels`` classes; returns its task id (rebuild the
        optimizer afterwards). ``config.num_labels`` / ``id2label`` then describe it
        (``id2label`` names its classes; default ``LABEL_i``)."""
        if not isinstance(num_labels, int) or num_labels <= 0:
            raise config_error(f"num_labels must be a positive integer, got {num_labels!r}.")
        if id2label is not None and sorted(int(k) for k in id2label) != list(range(num_labels)):
            raise config_error(f"id2label must name classes 0..{num_labels - 1}, got keys {sorted(id2label)}.")
        ref = next(self.parameters())
        head = nn.Linear(self.config.embed_dim, num_labels).to(device=ref.device, dtype=ref.dtype)
        nn.init.trunc_normal_(head.weight, std=0.02)
        nn.init.zeros_(head.bias)
        self.heads.append(head)
        self.config.task_num_labels.append(num_labels)
        if id2label is None:
            self.config.num_labels = num_labels
        else:
            self.config.id2label = {int(k): str(v) for k, v in id2label.items()}
            self.config.label2id = {v: k for k, v in self.config.id2label.items()}
        return len(self.heads) - 1

    # ------------------------------------------------------------------ trainer hooks
    def recorded_weights(self) -> list[tuple[str, torch.Tensor]]:
        """``(name, weight)`` of every matrix the gradient record follows (``config.layer_names``)."""
        if self.config.expansion == "linear":
            parts = {"base": self.vit.blocks.base, "inc": self.vit.blocks.inc}
            return [
                (f"{part}.{m}", parts[part].get_submodule(m).weight)
                for part in ("base", "inc")
                for m in RECORDED_MATRICES
            ]
        return [
            (f"block{i}.{m}", block.get_submodule(m).weight)
            for i, block in enumerate(self.vit.blocks)
            for m in RECORDED_MATRICES
        ]

    def shared_parameters(self) -> dict[str, nn.Parameter]:
        """Parameters shared by all tasks (everything but the heads), by stable name."""
        return {f"vit.{name}": p for name, p in self.vit.named_parameters()}

    @property
    def is_linear_expansion(self) -> bool:
        return self.config.expansion == "linear"

    def learngene_tensors(self) -> dict[str, torch.Tensor]:
        """The linear-expansion learngene: ``base.<p>``, ``inc.<p>`` (every block parameter) and
        ``embed.<name>`` (:data:`EMBEDDING_TENSOR_NAMES`), detached CPU copies."""
        if not self.is_linear_expansion:
            raise config_error(
                "This ViT collective model was trained without the linear-expansion constraint (expansion='none'); it "
                "holds "
                "no base/increment pair. Use ViTIndividualModel.from_weight_selection for it, or train with "
                "expansion='linear'."
            )
        out = {}
        for part in ("base", "inc"):
            for name, p in getattr(self.vit.blocks, part).named_parameters():
                out[f"{part}.{name}"] = p.detach().cpu().clone()
        state = self.vit.state_dict()
        for name in EMBEDDING_TENSOR_NAMES:
            out[f"embed.{name}"] = state[name].detach().cpu().clone()
        return out

    def layer_summary(self) -> list[dict[str, Any]]:
        """One row per block: ``index``, ``name``, ``kind``, width and parameters (for reports)."""
        rows = []
        per_block = sum(p.numel() for p in self.vit.blocks.parameters()) // (
            2 if self.is_linear_expansion else len(self.vit.blocks)
        )
        names = ["base", "inc"] if self.is_linear_expansion else [f"block{i}" for i in range(self.config.depth)]
        for index, name in enumerate(names):
            rows.append(
                {
                    "index": index,
                    "name": name,
                    "kind": "block",
                    "in_channels": self.config.embed_dim,
                    "out_channels": self.config.embed_dim,
                    "pool": False,
                    "parameters": per_block,
                }
            )
        return rows


if __name__.startswith("learngene_hf."):  # the installed package (a remote-code copy is found through auto_map)
    register_auto_classes(ViTCollectiveConfig, ViTCollectiveModel, ViTCollectiveModel)
