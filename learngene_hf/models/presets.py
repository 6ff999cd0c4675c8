"""The named sizes of both model families, as plain data (no torch: the example scripts read
them to build their ``--help`` before any heavy import).

* :data:`VGG_BN_ARCHS`: the VGG-BN collective model sizes (``timm.create_model("learngene_vgg_<name>")``).
  "paper" is the collective model of the Learngene paper (13 conv layers, VGG-16 style pooling,
  classifier 1024-1024-n); "small" and "tiny" are for CPUs and tests.
* :data:`VIT_PRESETS`: the ViT collective model sizes. "vit-tiny" is for tests, "vit-small" for
  CPUs (width 96, 6 blocks, patch 4 on 32x32 images), "vit-paper" the DeiT-Tiny scale of TLEG's
  experiments (width 192, 12 blocks, 3 heads, MLP ratio 4) on 32x32 images with patch 4.
* :data:`VGG_DESCENDANT_SIZES` / :data:`VIT_DESCENDANT_SIZES`: the named sizes of the individual
  models a learngene starts (``from_learngene(..., size="small")``), from the learngene and a linear
  head up to the collective model's size.
* :data:`IMAGE_MEAN` / :data:`IMAGE_STD`: the per-channel normalization the library trains with
  (``x/255`` then ``(x - mean) / std``).
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "IMAGE_MEAN",
    "IMAGE_STD",
    "VGG_BN_ARCHS",
    "VGG_BN_MEAN",
    "VGG_BN_STD",
    "VGG_DESCENDANT_SIZES",
    "VIT_DESCENDANT_SIZES",
    "VIT_PRESETS",
]

VGG_BN_ARCHS: dict[str, dict[str, Any]] = {
    "paper": {
        "widths": [64, 64, 64, 64, 128, 128, 128, 256, 256, 256, 256, 256, 256],
        "pool": [False, True, False, True, False, False, True, False, False, True, False, False, True],
        "head_hidden": [1024, 1024],
        "dropout": 0.5,
    },
    "small": {
        "widths": [32, 32, 64, 64, 128, 128],
        "pool": [False, True, False, True, False, True],
        "head_hidden": [256],
        "dropout": 0.2,
    },
    "tiny": {"widths": [8, 8, 16, 16], "pool": [False, True, False, True], "head_hidden": [32], "dropout": 0.0},
}

VIT_PRESETS: dict[str, dict[str, Any]] = {
    "vit-tiny": {"embed_dim": 32, "depth": 3, "num_heads": 2, "mlp_ratio": 2.0, "patch_size": 8},
    "vit-small": {"embed_dim": 96, "depth": 6, "num_heads": 3, "mlp_ratio": 2.0, "patch_size": 4},
    "vit-paper": {"embed_dim": 192, "depth": 12, "num_heads": 3, "mlp_ratio": 4.0, "patch_size": 4},
}

IMAGE_MEAN = (0.5, 0.5, 0.5)
IMAGE_STD = (0.5, 0.5, 0.5)
VGG_BN_MEAN = IMAGE_MEAN
VGG_BN_STD = IMAGE_STD

#: Descendant sizes of a layer learngene (VGG-BN); "tiny" is the learngene and a linear head
#: (nothing fresh but the classifier), "full" the collective model's size. The fresh tail after
#: the learngene mirrors the source collective model's layers after it: ``tail_blocks`` of them (``None``: all), each
#: ``width`` times as wide; ``head_hidden``: the MLP between the pooled features and the classifier
#: (``None``: the collective's, scaled by ``width``; ``[]``: a linear classifier);
#: ``feature_pool_size``: the side of the average pool before it (``None``: the collective's).
#: A learngene at the output end of its collective has no tail: every size is then its head only.
VGG_DESCENDANT_SIZES: dict[str, dict[str, Any]] = {
    "tiny": {"tail_blocks": 0, "width": 1.0, "head_hidden": [], "feature_pool_size": 2},
    "small": {"tail_blocks": 1, "width": 0.5, "head_hidden": [], "feature_pool_size": 2},
    "medium": {"tail_blocks": None, "width": 0.5, "head_hidden": None, "feature_pool_size": None},
    "full": {"tail_blocks": None, "width": 1.0, "head_hidden": None, "feature_pool_size": None},
}

#: Descendant sizes of a linear-expansion (ViT) learngene: ``depth`` blocks (``None``: the
#: collective's), ``width`` times the learngene's embedding width (rounded to the heads).
VIT_DESCENDANT_SIZES: dict[str, dict[str, Any]] = {
    "tiny": {"depth": 2, "width": 0.5},
    "small": {"depth": 4, "width": 0.5},
    "medium": {"depth": None, "width": 0.5},
    "full": {"depth": None, "width": 1.0},
}
