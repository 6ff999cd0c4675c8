"""ViT descendants: an ordinary timm ``VisionTransformer`` of any depth (and, by evenly spaced
element selection, any smaller width) with a classifier head, initialised from a linear-expansion
learngene (TLEG), from weight selection of an unconstrained collective ViT, or from scratch.

Depends only on torch, timm and transformers (plus its siblings), so it travels as remote code.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
from timm.models.vision_transformer import VisionTransformer
from torch import nn
from transformers import PreTrainedConfig, PreTrainedModel
from transformers.modeling_outputs import ImageClassifierOutput

from .modeling_utils import ImageModelMixin, descendant_config_kwargs, register_auto_classes
from .presets import VIT_DESCENDANT_SIZES
from .timm_hub import drop_timm_keys
from .vit import (
    BLOCK_PARAMETER_NAMES,
    DEFAULT_EXPANSION_RULE,
    DEFAULT_IMAGE_MEAN,
    DEFAULT_IMAGE_STD,
    EMBEDDING_TENSOR_NAMES,
    check_architecture,
    config_error,
    expand_block_tensors,
    incompatible,
    init_vit_weights,
    select_elements,
)
from .vit_collective import ViTCollectiveModel


class ViTIndividualConfig(PreTrainedConfig):
    r"""Configuration of a :class:`ViTIndividualModel` (an ordinary timm ViT + classifier).

    Args:
        embed_dim / depth / num_heads / mlp_ratio / patch_size / image_size / in_channels: the ViT.
        learngene: where the initial weights came from (``form``, ``repo_id``, ``revision``,
            ``commit_sha``, ``rule``, ``source_depth``, ``source_embed_dim``...); ``None`` = scratch.
        image_mean / image_std: normalization the model expects (for the saved image processor).
        num_labels / id2label / label2id: through ``**kwargs``.
    """

    model_type = "learngene_vit_individual"

    def __init__(
        self,
        embed_dim: int = 96,
        depth: int = 6,
        num_heads: int = 3,
        mlp_ratio: float = 2.0,
        patch_size: int = 4,
        image_size: int = 32,
        in_channels: int = 3,
        learngene: dict[str, Any] | None = None,
        image_mean: Sequence[float] | None = None,
        image_std: Sequence[float] | None = None,
        **kwargs,
    ):
        self.embed_dim = int(embed_dim)
        self.depth = int(depth)
        self.num_heads = int(num_heads)
        self.mlp_ratio = float(mlp_ratio)
        self.patch_size = int(patch_size)
        self.image_size = int(image_size)
        self.in_channels = int(in_channels)
        self.learngene = dict(learngene) if learngene is not None else None
        self.image_mean = [float(v) for v in (image_mean if image_mean is not None else DEFAULT_IMAGE_MEAN)]
        self.image_std = [float(v) for v in (image_std if image_std is not None else DEFAULT_IMAGE_STD)]
        check_architecture(self.embed_dim, self.depth, self.num_heads, self.mlp_ratio, self.patch_size, self.image_size)
        drop_timm_keys(kwargs)  # timm's section of a saved config.json
        super().__init__(**kwargs)

    @classmethod
    def for_learngene(
        cls,
        learngene: Any,
        num_labels: int,
        num_blocks: int | None = None,
        embed_dim: int | None = None,
        size: str | None = None,
        **overrides: Any,
    ) -> "ViTIndividualConfig":
        """The descendant architecture of a linear-expansion learngene (no weights loaded: also
        the scratch baseline). ``num_blocks`` defaults to the collective model's depth,
        ``embed_dim`` to its width (a smaller width divisible by the heads is allowed: the
        tensors are then reduced by evenly spaced selection). ``size``: a name of
        :data:`~learngene_hf.models.presets.VIT_DESCENDANT_SIZES` that sets both (explicit
        ``num_blocks`` / ``embed_dim`` win)."""
        arch = dict(getattr(learngene.config, "expansion", None) or {})
        if not arch:
            raise incompatible(
                "This learngene is not a linear-expansion learngene (its config has no 'expansion' section); layer "
                "learngenes build VGG individual models with IndividualModel.from_learngene."
            )
        if size is not None:
            depth, width = vit_descendant_size(arch, size)
            num_blocks = depth if num_blocks is None else num_blocks
            embed_dim = width if embed_dim is None else embed_dim
        return cls._for_architecture(
            arch, num_labels, num_blocks, embed_dim, learngene.config.preprocessing or {}, **overrides
        )

    @classmethod
    def _for_architecture(
        cls,
        arch: dict,
        num_labels: int,
        num_blocks: int | None,
        embed_dim: int | None,
        preprocessing: dict,
        **overrides: Any,
    ) -> "ViTIndividualConfig":
        if not isinstance(num_labels, int) or isinstance(num_labels, bool) or num_labels <= 0:
            raise config_error(f"num_labels must be a positive integer, got {num_labels!r}.")
        depth = int(arch["depth"]) if num_blocks is None else num_blocks
        if not isinstance(depth, int) or isinstance(depth, bool) or depth < 1:
            raise config_error(f"num_blocks must be a positive integer, got {num_blocks!r}.")
        width = int(arch["embed_dim"]) if embed_dim is None else int(embed_dim)
        if width > int(arch["embed_dim"]):
            raise incompatible(
                f"embed_dim={width} is wider than the learngene's {arch['embed_dim']}: tensors can be selected down, "
                f"not up. Use embed_dim <= {arch['embed_dim']}."
            )
        kwargs: dict[str, Any] = {
            "embed_dim": width,
            "depth": depth,
            "num_heads": int(arch["num_heads"]),
            "mlp_ratio": float(arch["mlp_ratio"]),
            "patch_size": int(arch["patch_size"]),
            "image_size": int(arch["image_size"]),
            "in_channels": int(arch.get("in_channels", 3)),
        }
        return cls(**descendant_config_kwargs(kwargs, preprocessing, num_labels, overrides))


def vit_descendant_size(arch: dict[str, Any], size: str) -> tuple[int, int]:
    """``(depth, embed_dim)`` of the named descendant ``size`` (:data:`VIT_DESCENDANT_SIZES`) of a
    linear-expansion learngene's architecture ``arch``: the width rounded down to a multiple of the
    heads (at least one per head)."""
    if size not in VIT_DESCENDANT_SIZES:
        raise config_error(f"Unknown descendant size {size!r}; choose one of {list(VIT_DESCENDANT_SIZES)}.")
    spec, heads = VIT_DESCENDANT_SIZES[size], int(arch["num_heads"])
    depth = int(arch["depth"]) if spec["depth"] is None else int(spec["depth"])
    width = max(heads, int(int(arch["embed_dim"]) * float(spec["width"])) // heads * heads)
    return depth, width


class ViTIndividualPreTrainedModel(ImageModelMixin, PreTrainedModel):
    """Weight initialization and loading glue of ViT descendants."""

    config_class = ViTIndividualConfig
    base_model_prefix = "vit_individual"
    _no_split_modules = ["Block"]

    def _init_weights(self, module: nn.Module) -> None:
        init_vit_weights(module)


class ViTIndividualModel(ViTIndividualPreTrainedModel):
    r"""A descendant: an ordinary timm ``VisionTransformer`` (``self.vit``) with a classifier head.

    ``pixel_values`` [B, C, H, W] -> logits [B, num_labels]. Build it with :meth:`from_learngene`
    (TLEG: block ``l`` of ``num_blocks`` = base + c(l, num_blocks) * inc), with
    :meth:`from_weight_selection` (first blocks and evenly spaced elements of an unconstrained
    collective ViT), or ``ViTIndividualModel(ViTIndividualConfig.for_learngene(...))`` (scratch).
    Nothing is tied or constrained after initialisation: all blocks train freely.
    """

    def __init__(self, config: ViTIndividualConfig):
        super().__init__(config)
        self.vit = VisionTransformer(
            img_size=config.image_size,
            patch_size=config.patch_size,
            in_chans=config.in_channels,
            num_classes=config.num_labels,
            embed_dim=config.embed_dim,
            depth=config.depth,
            num_heads=config.num_heads,
            mlp_ratio=config.mlp_ratio,
        )
        self.post_init()

    @property
    def has_learngene(self) -> bool:
        """Whether inherited weights were loaded (``config.learngene``)."""
        return self.config.learngene is not None

    def inherited_batchnorms(self) -> list[nn.Module]:
        """ViTs have no BatchNorm: nothing to re-estimate."""
        return []

    def num_inherited_parameters(self) -> int:
        """Parameters initialised from the learngene (blocks, embeddings and final norm; not the head)."""
        if not self.has_learngene:
            return 0
        return sum(p.numel() for name, p in self.vit.named_parameters() if not name.startswith("head."))

    def head_modules(self) -> list[nn.Module]:
        """The modules of the few-shot recipe's ``"head"`` group (the classifier); the rest is the body."""
        return [self.vit.head]

    def forward(
        self, pixel_values: torch.Tensor, labels: torch.Tensor | None = None, **kwargs
    ) -> ImageClassifierOutput:
        r"""Classify ``pixel_values`` [B, C, H, W] (float, normalized): ``logits`` [B, num_labels],
        and the cross-entropy ``loss`` when ``labels`` [B] is given."""
        logits = self.vit(pixel_values)
        loss = nn.functional.cross_entropy(logits, labels) if labels is not None else None
        return ImageClassifierOutput(loss=loss, logits=logits)

    # ------------------------------------------------------------------ inheriting
    @torch.no_grad()
    def _load_vit_tensors(self, blocks: Sequence[dict[str, torch.Tensor]], embeddings: dict[str, torch.Tensor]) -> None:
        if len(blocks) != len(self.vit.blocks):
            raise incompatible(f"{len(blocks)} blocks of weights for a {len(self.vit.blocks)}-block model.")
        state = self.vit.state_dict()
        new: dict[str, torch.Tensor] = {}
        for i, tensors in enumerate(blocks):
            for name in BLOCK_PARAMETER_NAMES:
                if name not in tensors:
                    raise incompatible(
                        f"Block tensor {name} is missing; the learngene is incomplete, extract it again."
                    )
                key = f"blocks.{i}.{name}"
                new[key] = select_elements(tensors[name], state[key].shape)
        for name in EMBEDDING_TENSOR_NAMES:
            if name not in embeddings:
                raise incompatible(
                    f"Embedding tensor {name} is missing; the learngene is incomplete, extract it again."
                )
            if name == "pos_embed" and embeddings[name].shape[1] != state[name].shape[1]:
                raise incompatible(
                    f"The learngene's position embedding has {embeddings[name].shape[1]} tokens but this model needs "
                    f"{state[name].shape[1]}; keep the learngene's image_size and patch_size."
                )
            new[name] = select_elements(embeddings[name], state[name].shape)
        self.vit.load_state_dict({k: v.to(state[k].dtype) for k, v in new.items()}, strict=False)

    def load_linear_expansion(
        self, tensors: dict[str, torch.Tensor], rule: str = DEFAULT_EXPANSION_RULE, origin: dict[str, Any] | None = None
    ) -> None:
        """Initialise every block as ``base + c(l, depth) * inc`` and the embeddings / final norm
        as stored. ``tensors`` holds ``base.<p>``, ``inc.<p>`` and ``embed.<name>`` (the
        learngene's tensors); a narrower model takes evenly spaced elements. The head stays fresh.
        ``origin`` is recorded in ``config.learngene``."""
        base = {k[5:]: v for k, v in tensors.items() if k.startswith("base.")}
        inc = {k[4:]: v for k, v in tensors.items() if k.startswith("inc.")}
        embeddings = {k[6:]: v for k, v in tensors.items() if k.startswith("embed.")}
        self._load_vit_tensors(expand_block_tensors(base, inc, self.config.depth, rule), embeddings)
        self.config.learngene = {"form": "linear_expansion", "rule": rule, **(origin or {})}
        # what was inherited: every non-head parameter was initialised from it, and the learngene's
        # stored tensors are what had to be downloaded (the same pair serves any depth)
        self.inheritance_record = {
            "parameters": self.num_inherited_parameters(),
            "bytes": int(sum(t.numel() * t.element_size() for t in tensors.values())),
        }

    @classmethod
    def from_learngene(
        cls,
        learngene: Any,
        num_labels: int,
        num_blocks: int | None = None,
        embed_dim: int | None = None,
        origin: dict[str, Any] | None = None,
        **config_overrides: Any,
    ) -> "ViTIndividualModel":
        """A descendant of ``num_blocks`` blocks (default: the collective's depth) and width
        ``embed_dim`` (default: the learngene's) initialised from a linear-expansion
        :class:`~learngene_hf.artifact.learngene.Learngene` (to start from a folder or a Hub repo
        id, use :func:`learngene_hf.from_learngene`). ``origin`` (default: the learngene's own)
        is recorded in ``config.learngene`` with the source depth and width."""
        if not hasattr(learngene, "config") or not hasattr(learngene, "tensors"):
            raise config_error(
                f"ViTIndividualModel.from_learngene takes a Learngene, got {type(learngene).__name__}; load a folder "
                "or a "
                "Hub repo id with learngene_hf.from_learngene(name, num_labels=...) or Learngene.from_pretrained(name)."
            )
        origin = dict(origin if origin is not None else getattr(learngene, "origin", None) or {})
        config = ViTIndividualConfig.for_learngene(learngene, num_labels, num_blocks, embed_dim, **config_overrides)
        model = cls(config)
        arch = learngene.config.expansion
        origin = {**origin, "source_depth": int(arch["depth"]), "source_embed_dim": int(arch["embed_dim"])}
        model.load_linear_expansion(learngene.tensors, arch.get("rule", DEFAULT_EXPANSION_RULE), origin)
        return model

    @classmethod
    def from_weight_selection(
        cls,
        collective: ViTCollectiveModel,
        num_labels: int,
        num_blocks: int | None = None,
        embed_dim: int | None = None,
        **overrides: Any,
    ) -> "ViTIndividualModel":
        """Weight selection (Xu et al., ICLR 2024) from an unconstrained collective ViT: the first
        ``num_blocks`` blocks (their "first-N" layer selection) and, for a narrower model, evenly
        spaced elements of every tensor; embeddings and final norm likewise. The head is fresh."""
        cfg = collective.config
        depth = cfg.depth if num_blocks is None else num_blocks
        if isinstance(depth, int) and depth > cfg.depth:
            raise incompatible(
                f"Weight selection takes the first {depth} blocks but the collective model has only {cfg.depth}; "
                f"use num_blocks <= {cfg.depth} (a linear-expansion learngene has no such limit)."
            )
        arch = {
            "embed_dim": cfg.embed_dim,
            "depth": cfg.depth,
            "num_heads": cfg.num_heads,
            "mlp_ratio": cfg.mlp_ratio,
            "patch_size": cfg.patch_size,
            "image_size": cfg.image_size,
            "in_channels": cfg.in_channels,
        }
        config = ViTIndividualConfig._for_architecture(arch, num_labels, num_blocks, embed_dim, {}, **overrides)
        model = cls(config)
        blocks = collective.vit.block_state_dicts()[: config.depth]
        state = collective.vit.state_dict()
        model._load_vit_tensors(blocks, {name: state[name].detach() for name in EMBEDDING_TENSOR_NAMES})
        model.config.learngene = {
            "form": "weight_selection",
            "source_depth": cfg.depth,
            "source_embed_dim": cfg.embed_dim,
            "source_expansion": cfg.expansion,
            "layers": list(range(config.depth)),
        }
        selected = [p for name, p in model.vit.named_parameters() if not name.startswith("head.")]
        model.inheritance_record = {
            "parameters": int(sum(p.numel() for p in selected)),
            "bytes": int(sum(p.numel() * p.element_size() for p in selected)),
        }
        return model


if __name__.startswith("learngene_hf."):  # the installed package (a remote-code copy is found through auto_map)
    register_auto_classes(ViTIndividualConfig, ViTIndividualModel, ViTIndividualModel)
