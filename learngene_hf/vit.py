"""Vision Transformer family: a collective ViT whose blocks are a linear expansion of two tensors
per parameter (TLEG, "Transformer as Linear Expansion of Learngene", Xia et al., AAAI 2024), and
ordinary timm ViT descendants of any depth built from it.

Linear expansion. Every parameter of a transformer block is kept as two tensors, ``base`` and
``inc``; block ``l`` (1-based) of an ``L``-block model uses

    theta_l = base + c(l, L) * inc,     c(l, L) = l / L          (rule "l/L", the default)

or ``c(l, L) = (l - 1) / (L - 1)`` (rule "(l-1)/(L-1)", first block = ``base``, last =
``base + inc``). The collective model learns ``base`` and ``inc`` directly (its blocks are
computed from them at every forward pass), so whatever it learns is, by construction, a
learngene from which blocks for *any* depth can be produced.

What is here (torch / timm / transformers only; no artifact or trainer import):

* :class:`LinearExpansionBlocks`: the ``base`` / ``inc`` pair standing in for timm's block stack.
* :class:`LearngeneViT`: timm's ``VisionTransformer`` with ``expansion="linear"`` (blocks above)
  or ``"none"`` (ordinary blocks); registered with timm as ``learngene_vit_{tiny,small,paper}_*``.
* :class:`ViTCollectiveConfig` / :class:`ViTCollectiveModel`: the multi-head collective model
  (one head per task) that ``learngene_hf.training.train_collective`` trains.
* :class:`ViTIndividualConfig` / :class:`ViTIndividualModel`: a descendant, an ordinary timm
  ``VisionTransformer`` of any depth (and, by evenly spaced element selection, any smaller width)
  initialised from a linear-expansion learngene, from weight selection, or from scratch.
* :func:`expansion_coefficient`, :func:`expand_block_tensors`, :func:`select_elements`: the rules.
"""

from __future__ import annotations

import copy
import os
from typing import Any, Sequence

import torch
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
from timm.models.vision_transformer import VisionTransformer
from torch import nn
from torch.func import functional_call
from transformers import PreTrainedConfig, PreTrainedModel
from transformers import initialization as init
from transformers.modeling_outputs import ImageClassifierOutput

from .layers import descendant_config_kwargs, project_error

#: Expansion rules: how block ``l`` (1-based) of ``L`` weighs the increment.
EXPANSION_RULES = ("l/L", "(l-1)/(L-1)")
DEFAULT_EXPANSION_RULE = "l/L"

#: Per-channel normalization the library trains with (``x/255`` then ``(x - mean) / std``).
DEFAULT_IMAGE_MEAN = [0.5, 0.5, 0.5]
DEFAULT_IMAGE_STD = [0.5, 0.5, 0.5]

#: Architectures by name. "vit-tiny" is for tests, "vit-small" for CPUs (width 96, 6 blocks,
#: patch 4 on 32x32 images), "vit-paper" the DeiT-Tiny scale of TLEG's experiments (width 192, 12
#: blocks, 3 heads, MLP ratio 4) on 32x32 images with patch 4.
VIT_PRESETS: dict[str, dict[str, Any]] = {
    "vit-tiny": {"embed_dim": 32, "depth": 3, "num_heads": 2, "mlp_ratio": 2.0, "patch_size": 8},
    "vit-small": {"embed_dim": 96, "depth": 6, "num_heads": 3, "mlp_ratio": 2.0, "patch_size": 4},
    "vit-paper": {"embed_dim": 192, "depth": 12, "num_heads": 3, "mlp_ratio": 4.0, "patch_size": 4},
}

#: Tensors outside the blocks that a linear-expansion learngene carries (timm names).
EMBEDDING_TENSOR_NAMES = ("patch_embed.proj.weight", "patch_embed.proj.bias", "cls_token", "pos_embed", "norm.weight", "norm.bias")

#: Parameters of one timm ``Block`` (pre-norm attention + MLP, qkv bias), state-dict order.
BLOCK_PARAMETER_NAMES = (
    "norm1.weight",
    "norm1.bias",
    "attn.qkv.weight",
    "attn.qkv.bias",
    "attn.proj.weight",
    "attn.proj.bias",
    "norm2.weight",
    "norm2.bias",
    "mlp.fc1.weight",
    "mlp.fc1.bias",
    "mlp.fc2.weight",
    "mlp.fc2.bias",
)

#: Block matrices whose gradients the collective trainer records.
RECORDED_MATRICES = ("attn.qkv", "attn.proj", "mlp.fc1", "mlp.fc2")


def _config_error(message: str) -> ValueError:
    return project_error("ConfigError", message)


def _incompatible(message: str) -> ValueError:
    return project_error("IncompatibleLearngeneError", message)


# ---------------------------------------------------------------------------------------------- rules
def expansion_coefficient(layer: int, depth: int, rule: str = DEFAULT_EXPANSION_RULE) -> float:
    """The weight of the increment in block ``layer`` (1-based) of a ``depth``-block model."""
    if rule not in EXPANSION_RULES:
        raise _config_error(f"Unknown expansion rule {rule!r}; choose one of {list(EXPANSION_RULES)}.")
    if not 1 <= layer <= depth:
        raise _config_error(f"Block {layer} does not exist in a {depth}-block model (blocks are numbered 1..{depth}).")
    if rule == "l/L":
        return layer / depth
    return (layer - 1) / (depth - 1) if depth > 1 else 0.0


def expand_block_tensors(
    base: dict[str, torch.Tensor], inc: dict[str, torch.Tensor], depth: int, rule: str = DEFAULT_EXPANSION_RULE
) -> list[dict[str, torch.Tensor]]:
    """The parameters of every block of a ``depth``-block model: ``base + c(l, depth) * inc``.

    ``base`` / ``inc`` map block-relative names (``attn.qkv.weight``, ...) to tensors of equal
    shapes. Returns one dict per block, input to output.
    """
    if set(base) != set(inc):
        raise _incompatible(f"base and inc hold different tensors: {sorted(set(base) ^ set(inc))}.")
    if not isinstance(depth, int) or depth < 1:
        raise _config_error(f"num_blocks must be a positive integer, got {depth!r}.")
    return [
        {name: base[name] + expansion_coefficient(layer, depth, rule) * inc[name] for name in base}
        for layer in range(1, depth + 1)
    ]


def select_elements(tensor: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    """Evenly spaced elements of ``tensor`` along every dimension, giving ``shape`` (weight
    selection, Xu et al., ICLR 2024: along a dimension of size ``n`` shrunk to ``m``, take every
    ``n // m``-th index, starting at 0, and keep the first ``m``)."""
    shape = tuple(int(s) for s in shape)
    if len(shape) != tensor.dim() or any(s > n or s <= 0 for s, n in zip(shape, tensor.shape)):
        raise _incompatible(f"Cannot select a {list(shape)} tensor out of a {list(tensor.shape)} one; the target must not be larger.")
    out = tensor
    for dim, (m, n) in enumerate(zip(shape, tensor.shape)):
        if m != n:
            index = torch.arange(0, n, n // m, device=tensor.device)[:m]
            out = out.index_select(dim, index)
    return out.contiguous()


def mlp_hidden(embed_dim: int, mlp_ratio: float) -> int:
    """Hidden width of a block's MLP (timm rounds ``embed_dim * mlp_ratio`` down)."""
    return int(embed_dim * mlp_ratio)


def block_tensor_shapes(embed_dim: int, hidden: int) -> dict[str, tuple[int, ...]]:
    """Shape of every parameter of one block (names of :data:`BLOCK_PARAMETER_NAMES`)."""
    d, h = int(embed_dim), int(hidden)
    return {
        "norm1.weight": (d,),
        "norm1.bias": (d,),
        "attn.qkv.weight": (3 * d, d),
        "attn.qkv.bias": (3 * d,),
        "attn.proj.weight": (d, d),
        "attn.proj.bias": (d,),
        "norm2.weight": (d,),
        "norm2.bias": (d,),
        "mlp.fc1.weight": (h, d),
        "mlp.fc1.bias": (h,),
        "mlp.fc2.weight": (d, h),
        "mlp.fc2.bias": (d,),
    }


def embedding_tensor_shapes(embed_dim: int, patch_size: int, in_channels: int, image_size: int) -> dict[str, tuple[int, ...]]:
    """Shape of every tensor of :data:`EMBEDDING_TENSOR_NAMES` (one class token, learnt positions)."""
    tokens = (int(image_size) // int(patch_size)) ** 2 + 1
    d = int(embed_dim)
    return {
        "patch_embed.proj.weight": (d, int(in_channels), int(patch_size), int(patch_size)),
        "patch_embed.proj.bias": (d,),
        "cls_token": (1, 1, d),
        "pos_embed": (1, tokens, d),
        "norm.weight": (d,),
        "norm.bias": (d,),
    }


# ---------------------------------------------------------------------------------------------- timm modules
class LinearExpansionBlocks(nn.Module):
    """A stack of ``depth`` timm blocks computed from two blocks' worth of parameters.

    ``base`` and ``inc`` are timm ``Block`` modules of identical shape; block ``l`` runs ``base``'s
    computation with parameters ``base + c(l, depth) * inc`` (:func:`expansion_coefficient`).
    ``x`` [B, N, D] -> [B, N, D], a drop-in replacement for ``VisionTransformer.blocks``.
    """

    def __init__(self, base: nn.Module, inc: nn.Module, depth: int, rule: str = DEFAULT_EXPANSION_RULE):
        super().__init__()
        expansion_coefficient(1, depth, rule)  # validates the rule and the depth
        self.base = base
        self.inc = inc
        self.depth = int(depth)
        self.rule = rule

    def __len__(self) -> int:
        return self.depth

    def block_parameters(self, index: int) -> dict[str, torch.Tensor]:
        """Parameters of block ``index`` (0-based), by block-relative name (differentiable)."""
        c = expansion_coefficient(index + 1, self.depth, self.rule)
        inc = dict(self.inc.named_parameters())
        return {name: p + c * inc[name] for name, p in self.base.named_parameters()}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for index in range(self.depth):
            x = functional_call(self.base, self.block_parameters(index), (x,))
        return x

    def extra_repr(self) -> str:
        return f"depth={self.depth}, rule={self.rule!r}"


class LearngeneViT(VisionTransformer):
    """timm's ``VisionTransformer`` with its blocks as a linear expansion (``expansion="linear"``)
    or ordinary (``expansion="none"``). All other keyword arguments are timm's."""

    def __init__(self, *, expansion: str = "linear", expansion_rule: str = DEFAULT_EXPANSION_RULE, **kwargs: Any):
        if expansion not in ("linear", "none"):
            raise _config_error(f"expansion must be 'linear' or 'none', got {expansion!r}.")
        super().__init__(**kwargs)
        self.expansion = expansion
        if expansion == "linear":
            depth = len(self.blocks)
            self.blocks = LinearExpansionBlocks(self.blocks[0], copy.deepcopy(self.blocks[-1]), depth, expansion_rule)

    def block_state_dicts(self) -> list[dict[str, torch.Tensor]]:
        """The parameters every block computes with (expanded or not), input to output, detached."""
        with torch.no_grad():
            if isinstance(self.blocks, LinearExpansionBlocks):
                return [{k: v.detach().clone() for k, v in self.blocks.block_parameters(i).items()} for i in range(len(self.blocks))]
            return [{k: v.detach().clone() for k, v in block.named_parameters()} for block in self.blocks]


def _create(variant: str, pretrained: bool = False, **kwargs: Any) -> LearngeneViT:
    out_indices = kwargs.pop("out_indices", 3)
    feature_cfg = None if kwargs.get("expansion", "linear") == "linear" else dict(out_indices=out_indices, feature_cls="getter")
    return build_model_with_cfg(LearngeneViT, variant, pretrained, feature_cfg=feature_cfg, **kwargs)


def _cfg(**kwargs: Any) -> dict[str, Any]:
    return {
        "url": "",
        "num_classes": 0,
        "input_size": (3, 32, 32),
        "pool_size": None,
        "crop_pct": 1.0,
        "interpolation": "bilinear",
        "fixed_input_size": True,
        "mean": tuple(DEFAULT_IMAGE_MEAN),
        "std": tuple(DEFAULT_IMAGE_STD),
        "first_conv": "patch_embed.proj",
        "classifier": "head",
        **kwargs,
    }


default_cfgs = generate_default_cfgs(
    {
        "learngene_vit_tiny_patch8_32": _cfg(),
        "learngene_vit_small_patch4_32": _cfg(),
        "learngene_vit_paper_patch4_32": _cfg(),
    }
)


def _preset_args(preset: str) -> dict[str, Any]:
    return {**VIT_PRESETS[preset], "img_size": 32}


@register_model
def learngene_vit_tiny_patch8_32(pretrained: bool = False, **kwargs: Any) -> LearngeneViT:
    """Test-sized linear-expansion ViT: width 32, 3 blocks, 2 heads, patch 8 on 32x32."""
    return _create("learngene_vit_tiny_patch8_32", pretrained, **{**_preset_args("vit-tiny"), **kwargs})


@register_model
def learngene_vit_small_patch4_32(pretrained: bool = False, **kwargs: Any) -> LearngeneViT:
    """CPU-sized linear-expansion ViT: width 96, 6 blocks, 3 heads, patch 4 on 32x32."""
    return _create("learngene_vit_small_patch4_32", pretrained, **{**_preset_args("vit-small"), **kwargs})


@register_model
def learngene_vit_paper_patch4_32(pretrained: bool = False, **kwargs: Any) -> LearngeneViT:
    """Paper-scale linear-expansion ViT (DeiT-Tiny widths): width 192, 12 blocks, 3 heads, patch 4 on 32x32."""
    return _create("learngene_vit_paper_patch4_32", pretrained, **{**_preset_args("vit-paper"), **kwargs})


def _init_vit_weights(module: nn.Module) -> None:
    """timm's ViT initialisation through ``transformers.initialization`` (skips loaded tensors);
    the increment's LayerNorm scales start at 0 so every expanded block starts with unit norms."""
    if isinstance(module, nn.Linear):
        init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        init.ones_(module.weight)
        init.zeros_(module.bias)
    elif isinstance(module, nn.Conv2d):
        init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            init.zeros_(module.bias)
    elif isinstance(module, VisionTransformer):
        # transformers visits modules that hold parameters of their own, children first: the
        # expansion's LayerNorms were set to 1 already, the increment's are reset to 0 here
        init.trunc_normal_(module.pos_embed, std=0.02)
        if module.cls_token is not None:
            init.normal_(module.cls_token, std=1e-6)
        if isinstance(module.blocks, LinearExpansionBlocks):
            for m in module.blocks.inc.modules():
                if isinstance(m, nn.LayerNorm):
                    init.zeros_(m.weight)


def _check_architecture(embed_dim: int, depth: int, num_heads: int, mlp_ratio: float, patch_size: int, image_size: int) -> None:
    if min(embed_dim, depth, num_heads, patch_size, image_size) <= 0 or mlp_ratio <= 0:
        raise _config_error(
            f"embed_dim, depth, num_heads, patch_size, image_size and mlp_ratio must be positive, got "
            f"{embed_dim}, {depth}, {num_heads}, {patch_size}, {image_size}, {mlp_ratio}."
        )
    if embed_dim % num_heads:
        raise _config_error(f"embed_dim={embed_dim} is not divisible by num_heads={num_heads}; pick a width that is a multiple of the heads.")
    if image_size % patch_size:
        raise _config_error(f"image_size={image_size} is not a multiple of patch_size={patch_size}.")


# ---------------------------------------------------------------------------------------------- collective
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
        **kwargs,
    ):
        if preset not in VIT_PRESETS:
            raise _config_error(f"Unknown ViT preset {preset!r}; choose one of {sorted(VIT_PRESETS)}.")
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
        _check_architecture(self.embed_dim, self.depth, self.num_heads, self.mlp_ratio, self.patch_size, self.image_size)
        if self.expansion not in ("linear", "none"):
            raise _config_error(f"expansion must be 'linear' or 'none', got {self.expansion!r}.")
        if self.expansion_rule not in EXPANSION_RULES:
            raise _config_error(f"expansion_rule must be one of {list(EXPANSION_RULES)}, got {self.expansion_rule!r}.")
        if self.expansion == "linear" and self.depth < 2:
            raise _config_error(f"A linear-expansion ViT needs depth >= 2 (it learns base and increment), got {self.depth}.")
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


def _unknown_score(embedding: torch.Tensor, heads: Sequence[nn.Module], method: str) -> torch.Tensor:
    per_head = []
    for head in heads:
        logits = head(embedding).float()
        per_head.append(torch.logsumexp(logits, 1) if method == "energy" else logits.softmax(1).amax(1))
    return -torch.stack(per_head, 1).amax(1)


class ViTCollectivePreTrainedModel(PreTrainedModel):
    """Weight initialization and loading glue of the ViT collective model."""

    config_class = ViTCollectiveConfig
    base_model_prefix = "vit_collective"
    main_input_name = "pixel_values"
    input_modalities = ("image",)
    _no_split_modules = ["Block"]

    def _init_weights(self, module: nn.Module) -> None:
        _init_vit_weights(module)


class ViTCollectiveModel(ViTCollectivePreTrainedModel):
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
            raise _config_error("This collective model has no task head yet: call model.add_task(num_labels) first.")
        if task_id is None:
            return len(self.heads) - 1
        if not 0 <= task_id < len(self.heads):
            raise _config_error(f"task_id {task_id} does not exist: this model has {len(self.heads)} task heads (0..{len(self.heads) - 1}).")
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

    @torch.no_grad()
    def unknown_score(self, pixel_values: torch.Tensor, task_ids: Sequence[int] | None = None, method: str = "energy") -> torch.Tensor:
        """How unfamiliar each image is to the heads learnt so far ([B]; higher = more unknown),
        by ``"energy"`` or ``"msp"`` over the heads ``task_ids`` (default: all)."""
        if method not in ("energy", "msp"):
            raise _config_error(f"Unknown open-world score {method!r}; use 'energy' or 'msp'.")
        ids = range(len(self.heads)) if task_ids is None else [self._check_task(t) for t in task_ids]
        if not self.heads:
            raise _config_error("No task head yet: the unknown score needs at least one learnt task.")
        return _unknown_score(self.embed(pixel_values), [self.heads[t] for t in ids], method)

    def add_task(self, num_labels: int) -> int:
        """Add a fresh linear head with ``num_labels`` classes; returns its task id (rebuild the
        optimizer afterwards)."""
        if not isinstance(num_labels, int) or num_labels <= 0:
            raise _config_error(f"num_labels must be a positive integer, got {num_labels!r}.")
        ref = next(self.parameters())
        head = nn.Linear(self.config.embed_dim, num_labels).to(device=ref.device, dtype=ref.dtype)
        nn.init.trunc_normal_(head.weight, std=0.02)
        nn.init.zeros_(head.bias)
        self.heads.append(head)
        self.config.task_num_labels.append(num_labels)
        return len(self.heads) - 1

    # ------------------------------------------------------------------ trainer hooks
    def recorded_weights(self) -> list[tuple[str, torch.Tensor]]:
        """``(name, weight)`` of every matrix the gradient record follows (``config.layer_names``)."""
        if self.config.expansion == "linear":
            parts = {"base": self.vit.blocks.base, "inc": self.vit.blocks.inc}
            return [(f"{part}.{m}", parts[part].get_submodule(m).weight) for part in ("base", "inc") for m in RECORDED_MATRICES]
        return [(f"block{i}.{m}", block.get_submodule(m).weight) for i, block in enumerate(self.vit.blocks) for m in RECORDED_MATRICES]

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
            raise _config_error(
                "This ViT collective model was trained without the linear-expansion constraint (expansion='none'); it holds "
                "no base/increment pair. Use ViTIndividualModel.from_weight_selection for it, or train with expansion='linear'."
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
        per_block = sum(p.numel() for p in self.vit.blocks.parameters()) // (2 if self.is_linear_expansion else len(self.vit.blocks))
        names = ["base", "inc"] if self.is_linear_expansion else [f"block{i}" for i in range(self.config.depth)]
        for index, name in enumerate(names):
            rows.append({"index": index, "name": name, "kind": "block", "in_channels": self.config.embed_dim,
                         "out_channels": self.config.embed_dim, "pool": False, "parameters": per_block})
        return rows


# ---------------------------------------------------------------------------------------------- descendants
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
        _check_architecture(self.embed_dim, self.depth, self.num_heads, self.mlp_ratio, self.patch_size, self.image_size)
        super().__init__(**kwargs)

    @classmethod
    def for_learngene(
        cls, learngene: Any, num_labels: int, num_blocks: int | None = None, embed_dim: int | None = None, **overrides: Any
    ) -> "ViTIndividualConfig":
        """The descendant architecture of a linear-expansion learngene (no weights loaded: also
        the scratch baseline). ``num_blocks`` defaults to the collective model's depth,
        ``embed_dim`` to its width (a smaller width divisible by the heads is allowed: the
        tensors are then reduced by evenly spaced selection)."""
        arch = dict(getattr(learngene.config, "expansion", None) or {})
        if not arch:
            raise _incompatible(
                "This learngene is not a linear-expansion learngene (its config has no 'expansion' section); layer "
                "learngenes build VGG individual models with IndividualModel.from_learngene."
            )
        return cls._for_architecture(arch, num_labels, num_blocks, embed_dim, learngene.config.preprocessing or {}, **overrides)

    @classmethod
    def _for_architecture(
        cls, arch: dict, num_labels: int, num_blocks: int | None, embed_dim: int | None, preprocessing: dict, **overrides: Any
    ) -> "ViTIndividualConfig":
        if not isinstance(num_labels, int) or isinstance(num_labels, bool) or num_labels <= 0:
            raise _config_error(f"num_labels must be a positive integer, got {num_labels!r}.")
        depth = int(arch["depth"]) if num_blocks is None else num_blocks
        if not isinstance(depth, int) or isinstance(depth, bool) or depth < 1:
            raise _config_error(f"num_blocks must be a positive integer, got {num_blocks!r}.")
        width = int(arch["embed_dim"]) if embed_dim is None else int(embed_dim)
        if width > int(arch["embed_dim"]):
            raise _incompatible(
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


class ViTIndividualPreTrainedModel(PreTrainedModel):
    """Weight initialization and loading glue of ViT descendants."""

    config_class = ViTIndividualConfig
    base_model_prefix = "vit_individual"
    main_input_name = "pixel_values"
    input_modalities = ("image",)
    _no_split_modules = ["Block"]

    def _init_weights(self, module: nn.Module) -> None:
        _init_vit_weights(module)


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

    def forward(self, pixel_values: torch.Tensor, labels: torch.Tensor | None = None, **kwargs) -> ImageClassifierOutput:
        r"""Classify ``pixel_values`` [B, C, H, W] (float, normalized): ``logits`` [B, num_labels],
        and the cross-entropy ``loss`` when ``labels`` [B] is given."""
        logits = self.vit(pixel_values)
        loss = nn.functional.cross_entropy(logits, labels) if labels is not None else None
        return ImageClassifierOutput(loss=loss, logits=logits)

    # ------------------------------------------------------------------ inheriting
    @torch.no_grad()
    def _load_vit_tensors(self, blocks: Sequence[dict[str, torch.Tensor]], embeddings: dict[str, torch.Tensor]) -> None:
        if len(blocks) != len(self.vit.blocks):
            raise _incompatible(f"{len(blocks)} blocks of weights for a {len(self.vit.blocks)}-block model.")
        state = self.vit.state_dict()
        new: dict[str, torch.Tensor] = {}
        for i, tensors in enumerate(blocks):
            for name in BLOCK_PARAMETER_NAMES:
                if name not in tensors:
                    raise _incompatible(f"Block tensor {name} is missing; the learngene is incomplete, extract it again.")
                key = f"blocks.{i}.{name}"
                new[key] = select_elements(tensors[name], state[key].shape)
        for name in EMBEDDING_TENSOR_NAMES:
            if name not in embeddings:
                raise _incompatible(f"Embedding tensor {name} is missing; the learngene is incomplete, extract it again.")
            if name == "pos_embed" and embeddings[name].shape[1] != state[name].shape[1]:
                raise _incompatible(
                    f"The learngene's position embedding has {embeddings[name].shape[1]} tokens but this model needs "
                    f"{state[name].shape[1]}; keep the learngene's image_size and patch_size."
                )
            new[name] = select_elements(embeddings[name], state[name].shape)
        self.vit.load_state_dict({k: v.to(state[k].dtype) for k, v in new.items()}, strict=False)

    def load_linear_expansion(
        self,
        tensors: dict[str, torch.Tensor],
        rule: str = DEFAULT_EXPANSION_RULE,
        origin: dict[str, Any] | None = None,
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
        self.inheritance_record = {"parameters": self.num_inherited_parameters(),
                                   "bytes": int(sum(t.numel() * t.element_size() for t in tensors.values()))}

    @classmethod
    def from_learngene(
        cls,
        learngene_or_repo_id_or_dir: Any,
        num_labels: int,
        num_blocks: int | None = None,
        embed_dim: int | None = None,
        revision: str | None = None,
        token: str | bool | None = None,
        cache_dir: str | os.PathLike | None = None,
        endpoint: str | None = None,
        origin: dict[str, Any] | None = None,
        **config_overrides: Any,
    ) -> "ViTIndividualModel":
        """A descendant of ``num_blocks`` blocks (default: the collective's depth) and width
        ``embed_dim`` (default: the learngene's) initialised from a linear-expansion learngene
        (a ``Learngene``, a folder or a Hub repo id). The config records where it came from."""
        if isinstance(learngene_or_repo_id_or_dir, (str, os.PathLike)):
            try:  # loading an artifact by name is the artifact module's job (remote-code copies lack it)
                from learngene_hf.learngene import resolve_learngene
            except ImportError as err:  # pragma: no cover - only without the package
                raise ImportError("Loading a learngene by name needs the learngene-hf package: pip install learngene-hf.") from err
        else:
            from .individual import learngene_origin as resolve_learngene
        learngene, resolved = resolve_learngene(
            learngene_or_repo_id_or_dir, revision=revision, token=token, cache_dir=cache_dir, endpoint=endpoint
        )
        origin = {**resolved, **(origin or {})}
        config = ViTIndividualConfig.for_learngene(learngene, num_labels, num_blocks, embed_dim, **config_overrides)
        model = cls(config)
        arch = learngene.config.expansion
        origin = {**origin, "source_depth": int(arch["depth"]), "source_embed_dim": int(arch["embed_dim"])}
        model.load_linear_expansion(learngene.tensors, arch.get("rule", DEFAULT_EXPANSION_RULE), origin)
        return model

    @classmethod
    def from_weight_selection(
        cls, collective: ViTCollectiveModel, num_labels: int, num_blocks: int | None = None, embed_dim: int | None = None, **overrides: Any
    ) -> "ViTIndividualModel":
        """Weight selection (Xu et al., ICLR 2024) from an unconstrained collective ViT: the first
        ``num_blocks`` blocks (their "first-N" layer selection) and, for a narrower model, evenly
        spaced elements of every tensor; embeddings and final norm likewise. The head is fresh."""
        cfg = collective.config
        depth = cfg.depth if num_blocks is None else num_blocks
        if isinstance(depth, int) and depth > cfg.depth:
            raise _incompatible(
                f"Weight selection takes the first {depth} blocks but the collective model has only {cfg.depth}; "
                f"use num_blocks <= {cfg.depth} (a linear-expansion learngene has no such limit)."
            )
        arch = {"embed_dim": cfg.embed_dim, "depth": cfg.depth, "num_heads": cfg.num_heads, "mlp_ratio": cfg.mlp_ratio,
                "patch_size": cfg.patch_size, "image_size": cfg.image_size, "in_channels": cfg.in_channels}
        config = ViTIndividualConfig._for_architecture(arch, num_labels, num_blocks, embed_dim, {}, **overrides)
        model = cls(config)
        blocks = collective.vit.block_state_dicts()[: config.depth]
        state = collective.vit.state_dict()
        model._load_vit_tensors(blocks, {name: state[name].detach() for name in EMBEDDING_TENSOR_NAMES})
        model.config.learngene = {"form": "weight_selection", "source_depth": cfg.depth, "source_embed_dim": cfg.embed_dim,
                                  "source_expansion": cfg.expansion, "layers": list(range(config.depth))}
        selected = [p for name, p in model.vit.named_parameters() if not name.startswith("head.")]
        model.inheritance_record = {"parameters": int(sum(p.numel() for p in selected)),
                                    "bytes": int(sum(p.numel() * p.element_size() for p in selected))}
        return model

    # ------------------------------------------------------------------ ecosystem
    def make_image_processor(self):
        """A :class:`transformers.ViTImageProcessor` for ``config.image_size`` / mean / std."""
        from transformers import ViTImageProcessor

        size = self.config.image_size
        return ViTImageProcessor(
            do_resize=True,
            size={"height": size, "width": size},
            do_rescale=True,
            rescale_factor=1 / 255,
            do_normalize=True,
            image_mean=list(self.config.image_mean),
            image_std=list(self.config.image_std),
        )

    def save_pretrained(self, save_directory: str | os.PathLike, *args, save_image_processor: bool = True, **kwargs):
        """``PreTrainedModel.save_pretrained`` plus the image processor beside it (for ``pipeline``)."""
        result = super().save_pretrained(save_directory, *args, **kwargs)
        if save_image_processor and kwargs.get("is_main_process", True):
            self.make_image_processor().save_pretrained(save_directory)
        return result


def _register_auto_classes() -> None:
    """``AutoConfig`` / ``AutoModel`` / ``AutoModelForImageClassification`` know the ViT family."""
    from transformers import AutoConfig, AutoModel, AutoModelForImageClassification

    for config_cls, model_cls in ((ViTCollectiveConfig, ViTCollectiveModel), (ViTIndividualConfig, ViTIndividualModel)):
        AutoConfig.register(config_cls.model_type, config_cls, exist_ok=True)
        AutoModel.register(config_cls, model_cls, exist_ok=True)
        AutoModelForImageClassification.register(config_cls, model_cls, exist_ok=True)


if __name__.startswith("learngene_hf."):  # the installed package (a remote-code copy is found through auto_map)
    _register_auto_classes()
