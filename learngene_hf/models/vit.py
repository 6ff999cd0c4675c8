"""Vision Transformer family, the shared part: linear expansion (TLEG, "Transformer as Linear
Expansion of Learngene", Xia et al., AAAI 2024) and the timm model.

Linear expansion. Every parameter of a transformer block is kept as two tensors, ``base`` and
``inc``; block ``l`` (1-based) of an ``L``-block model uses

    theta_l = base + c(l, L) * inc,     c(l, L) = l / L          (rule "l/L", the default)

or ``c(l, L) = (l - 1) / (L - 1)`` (rule "(l-1)/(L-1)", first block = ``base``, last =
``base + inc``). The collective model learns ``base`` and ``inc`` directly (its blocks are
computed from them at every forward pass), so whatever it learns is, by construction, a
learngene from which blocks for *any* depth can be produced.

What is here (torch / timm / transformers only):

* :func:`expansion_coefficient`, :func:`expand_block_tensors`, :func:`select_elements`: the rules;
  :func:`block_tensor_shapes`, :func:`embedding_tensor_shapes`: the shapes a learngene holds.
* :class:`LinearExpansionBlocks`: the ``base`` / ``inc`` pair standing in for timm's block stack.
* :class:`LearngeneViT`: timm's ``VisionTransformer`` with ``expansion="linear"`` (blocks above)
  or ``"none"`` (ordinary blocks); registered with timm as ``learngene_vit_{tiny,small,paper}_*``.

The transformers models live beside it: ``vit_collective.py`` (the multi-head collective ViT that
``learngene_hf.training`` trains) and ``vit_individual.py`` (descendants of any depth and width).
"""

from __future__ import annotations

import copy
from typing import Any, Sequence

import torch
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
from timm.models.vision_transformer import VisionTransformer
from torch import nn
from torch.func import functional_call
from transformers import initialization as init

from .layers import project_error
from .presets import IMAGE_MEAN, IMAGE_STD, VIT_PRESETS
from .timm_hub import timm_state_dict

#: Expansion rules: how block ``l`` (1-based) of ``L`` weighs the increment.
EXPANSION_RULES = ("l/L", "(l-1)/(L-1)")
DEFAULT_EXPANSION_RULE = "l/L"

#: Per-channel normalization the library trains with (``x/255`` then ``(x - mean) / std``).
DEFAULT_IMAGE_MEAN = list(IMAGE_MEAN)
DEFAULT_IMAGE_STD = list(IMAGE_STD)

#: Tensors outside the blocks that a linear-expansion learngene carries (timm names).
EMBEDDING_TENSOR_NAMES = (
    "patch_embed.proj.weight",
    "patch_embed.proj.bias",
    "cls_token",
    "pos_embed",
    "norm.weight",
    "norm.bias",
)

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


def config_error(message: str) -> ValueError:
    return project_error("ConfigError", message)


def incompatible(message: str) -> ValueError:
    return project_error("IncompatibleLearngeneError", message)


# ---------------------------------------------------------------------------------------------- rules
def expansion_coefficient(layer: int, depth: int, rule: str = DEFAULT_EXPANSION_RULE) -> float:
    """The weight of the increment in block ``layer`` (1-based) of a ``depth``-block model."""
    if rule not in EXPANSION_RULES:
        raise config_error(f"Unknown expansion rule {rule!r}; choose one of {list(EXPANSION_RULES)}.")
    if not 1 <= layer <= depth:
        raise config_error(f"Block {layer} does not exist in a {depth}-block model (blocks are numbered 1..{depth}).")
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
        raise incompatible(f"base and inc hold different tensors: {sorted(set(base) ^ set(inc))}.")
    if not isinstance(depth, int) or depth < 1:
        raise config_error(f"num_blocks must be a positive integer, got {depth!r}.")
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
        raise incompatible(
            f"Cannot select a {list(shape)} tensor out of a {list(tensor.shape)} one; the target must not be larger."
        )
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


def embedding_tensor_shapes(
    embed_dim: int, patch_size: int, in_channels: int, image_size: int
) -> dict[str, tuple[int, ...]]:
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
            raise config_error(f"expansion must be 'linear' or 'none', got {expansion!r}.")
        super().__init__(**kwargs)
        self.expansion = expansion
        if expansion == "linear":
            depth = len(self.blocks)
            self.blocks = LinearExpansionBlocks(self.blocks[0], copy.deepcopy(self.blocks[-1]), depth, expansion_rule)

    def block_state_dicts(self) -> list[dict[str, torch.Tensor]]:
        """The parameters every block computes with (expanded or not), input to output, detached."""
        with torch.no_grad():
            if isinstance(self.blocks, LinearExpansionBlocks):
                return [
                    {k: v.detach().clone() for k, v in self.blocks.block_parameters(i).items()}
                    for i in range(len(self.blocks))
                ]
            return [{k: v.detach().clone() for k, v in block.named_parameters()} for block in self.blocks]


def _create(variant: str, pretrained: bool = False, **kwargs: Any) -> LearngeneViT:
    out_indices = kwargs.pop("out_indices", 3)
    feature_cfg = (
        None if kwargs.get("expansion", "linear") == "linear" else dict(out_indices=out_indices, feature_cls="getter")
    )
    return build_model_with_cfg(
        LearngeneViT, variant, pretrained, feature_cfg=feature_cfg, pretrained_filter_fn=timm_state_dict, **kwargs
    )


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


def init_vit_weights(module: nn.Module) -> None:
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


def check_architecture(
    embed_dim: int, depth: int, num_heads: int, mlp_ratio: float, patch_size: int, image_size: int
) -> None:
    if min(embed_dim, depth, num_heads, patch_size, image_size) <= 0 or mlp_ratio <= 0:
        raise config_error(
            f"embed_dim, depth, num_heads, patch_size, image_size and mlp_ratio must be positive, got "
            f"{embed_dim}, {depth}, {num_heads}, {patch_size}, {image_size}, {mlp_ratio}."
        )
    if embed_dim % num_heads:
        raise config_error(
            f"embed_dim={embed_dim} is not divisible by num_heads={num_heads}; pick a width that is a multiple of the "
            "heads."
        )
    if image_size % patch_size:
        raise config_error(f"image_size={image_size} is not a multiple of patch_size={patch_size}.")
