"""What timm reads when it loads one of the package's models from the Hub.

``timm.create_model("hf-hub:org/name", pretrained=True)`` downloads the repo's ``config.json`` and
reads timm's keys from it: ``architecture`` (a registered timm model name), ``model_args`` (its
keywords: the real widths, depth, pools...), ``num_classes``, ``label_names`` and
``pretrained_cfg`` (input size, normalization, classifier name). It then downloads
``model.safetensors`` and passes the tensors through the registered model's
``pretrained_filter_fn`` before ``load_state_dict``.

* :func:`timm_config`: that section for a model config of the package; the models'
  ``save_pretrained`` (and so ``push_to_hub``) writes it into ``config.json`` beside
  transformers' own keys, and the configs drop it again when they are read
  (:func:`drop_timm_keys`).
* :func:`timm_state_dict`: the ``pretrained_filter_fn`` of the ``learngene_vgg_*`` and
  ``learngene_vit_*`` timm models. The transformers models save their tensors under their module
  paths (``collective.vgg.blocks.0.conv.weight``, ``individual.vgg.neck.0.bias``, ``vit.pos_embed``,
  ``heads.3.weight``, ``classifier.weight``); it maps them to the timm network's names
  (``blocks.0.conv.weight``, ``neck.0.bias``, ``pos_embed``, ``head.weight``). A collective model
  keeps its newest task head, the one its ``forward`` uses by default. timm's own checkpoints
  pass unchanged.

Depends only on the standard library (plus the sibling ``presets``), so it travels as remote code.
"""

from __future__ import annotations

import json
import os
import tempfile
from typing import Any

from .presets import VIT_PRESETS

#: The top-level ``config.json`` keys that belong to timm (transformers' keys stay as they are).
TIMM_CONFIG_KEYS = ("architecture", "num_classes", "num_features", "label_names", "model_args", "pretrained_cfg")
#: transformers takes a local folder whose ``config.json`` has ``pretrained_cfg`` for a timm
#: checkpoint and looks for its image processor's class in ``config.json``: it is named there too
#: (the processor itself is still read from ``preprocessor_config.json``).
PROCESSOR_TYPE_KEY = "image_processor_type"

#: Module paths of the timm network inside the transformers models (stripped from tensor names).
_WRAPPER_PREFIXES = ("collective.vgg.", "individual.vgg.", "vit.")

#: The papers behind the two families (timm's ``paper_ids``).
PAPER_IDS = {"vgg": "arXiv:2106.06788", "vit": "arXiv:2312.05614"}

_VGG_TYPES = ("learngene_collective", "learngene_individual")
_VIT_TYPES = ("learngene_vit_collective", "learngene_vit_individual")


def drop_timm_keys(kwargs: dict[str, Any]) -> None:
    """Remove timm's section from the keywords a config is built from (it describes the saved
    file for timm, and is written afresh by every ``save_pretrained``)."""
    for key in (*TIMM_CONFIG_KEYS, PROCESSOR_TYPE_KEY):
        kwargs.pop(key, None)


def _num_classes(config: Any) -> int:
    """The classes of the head timm loads: the newest task head of a collective model."""
    task_num_labels = getattr(config, "task_num_labels", None)
    if task_num_labels is not None:
        return int(task_num_labels[-1]) if task_num_labels else 0
    return int(config.num_labels)


def _vgg_section(config: Any) -> tuple[str, dict[str, Any], dict[str, Any]]:
    learngene = getattr(config, "learngene", None) or {}
    preset = getattr(config, "preset", None) or (learngene.get("source") or {}).get("preset") or "small"
    model_args = {
        "widths": [int(w) for w in config.widths],
        "pool": [bool(p) for p in config.pool],
        "head_hidden": [int(w) for w in config.head_hidden],
        "in_chans": int(config.in_channels),
        "kernel_size": int(config.kernel_size),
        "feature_pool_size": int(config.feature_pool_size),
        "drop_rate": float(config.dropout),
    }
    features = model_args["head_hidden"][-1] if model_args["head_hidden"] else None
    if features is None:
        features = model_args["widths"][-1] * model_args["feature_pool_size"] ** 2
    cfg = {"first_conv": "blocks.0.conv", "fixed_input_size": False, "paper_ids": PAPER_IDS["vgg"]}
    return f"learngene_vgg_{preset}", model_args, {"num_features": features, **cfg}


def _vit_section(config: Any) -> tuple[str, dict[str, Any], dict[str, Any]]:
    model_args = {
        "expansion": str(getattr(config, "expansion", "none")),
        "embed_dim": int(config.embed_dim),
        "depth": int(config.depth),
        "num_heads": int(config.num_heads),
        "mlp_ratio": float(config.mlp_ratio),
        "patch_size": int(config.patch_size),
        "img_size": int(config.image_size),
        "in_chans": int(config.in_channels),
    }
    if model_args["expansion"] == "linear":
        model_args["expansion_rule"] = str(config.expansion_rule)
    preset = getattr(config, "preset", None) or "vit-small"
    patch = VIT_PRESETS.get(preset, VIT_PRESETS["vit-small"])["patch_size"]
    name = f"learngene_{preset.replace('-', '_')}_patch{patch}_32"
    cfg = {"first_conv": "patch_embed.proj", "fixed_input_size": True, "paper_ids": PAPER_IDS["vit"]}
    return name, model_args, {"num_features": model_args["embed_dim"], **cfg}


def timm_config(config: Any) -> dict[str, Any]:
    """timm's ``config.json`` section for a model config of the package (collective or
    individual, VGG-BN or ViT): ``architecture``, ``model_args``, ``num_classes``,
    ``num_features``, ``label_names`` and ``pretrained_cfg``."""
    if config.model_type in _VGG_TYPES:
        architecture, model_args, extra = _vgg_section(config)
    elif config.model_type in _VIT_TYPES:
        architecture, model_args, extra = _vit_section(config)
    else:
        raise ValueError(f"No timm section for model type {config.model_type!r}.")
    num_classes = _num_classes(config)
    size = int(config.image_size)
    pretrained_cfg = {
        "input_size": [int(config.in_channels), size, size],
        "fixed_input_size": extra["fixed_input_size"],
        "interpolation": "bilinear",
        "crop_pct": 1.0,
        "crop_mode": "center",
        "mean": [float(v) for v in config.image_mean],
        "std": [float(v) for v in config.image_std],
        "num_classes": num_classes,
        "first_conv": extra["first_conv"],
        "classifier": "head",
        "paper_ids": extra["paper_ids"],
    }
    section: dict[str, Any] = {
        "architecture": architecture,
        "num_classes": num_classes,
        "num_features": int(extra["num_features"]),
        "model_args": model_args,
        "pretrained_cfg": pretrained_cfg,
    }
    id2label = {int(k): str(v) for k, v in (getattr(config, "id2label", None) or {}).items()}
    if num_classes and sorted(id2label) == list(range(num_classes)):
        section["label_names"] = [id2label[i] for i in range(num_classes)]
    return section


def write_timm_config(config_file: str | os.PathLike, config: Any, image_processor_type: str | None = None) -> None:
    """Add :func:`timm_config` (and the class name of the image processor saved beside it, if
    any) to a saved ``config.json``, replacing an older section, through a temporary file and a
    rename."""
    with open(config_file, encoding="utf-8") as handle:
        saved = json.load(handle)
    for key in (*TIMM_CONFIG_KEYS, PROCESSOR_TYPE_KEY):
        saved.pop(key, None)
    saved.update(timm_config(config))
    if image_processor_type:
        saved[PROCESSOR_TYPE_KEY] = image_processor_type
    folder = os.path.dirname(os.path.abspath(config_file))
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".config.", suffix=".json")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(json.dumps(saved, indent=2, sort_keys=True) + "\n")
        mode = os.stat(config_file).st_mode & 0o777
        os.chmod(tmp, mode)
        os.replace(tmp, config_file)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _timm_name(key: str, newest_head: int | None) -> str | None:
    for prefix in _WRAPPER_PREFIXES:
        if key.startswith(prefix):
            return key[len(prefix) :]
    if key.startswith("heads."):
        index, _, rest = key[len("heads.") :].partition(".")
        return f"head.{rest}" if int(index) == newest_head else None
    if key.startswith("classifier."):
        return "head." + key[len("classifier.") :]
    return key


def timm_state_dict(state_dict: dict[str, Any], model: Any = None) -> dict[str, Any]:
    """``state_dict`` with the tensor names of the timm network (timm's ``pretrained_filter_fn``).

    Names saved by the transformers models lose their wrapper prefix (``collective.vgg.``,
    ``individual.vgg.``, ``vit.``); ``classifier.*`` and the newest ``heads.<i>.*`` become
    ``head.*``; older task heads are left out. Names that are timm's already are kept.
    """
    heads = [int(key.split(".")[1]) for key in state_dict if key.startswith("heads.")]
    newest = max(heads) if heads else None
    out = {}
    for key, value in state_dict.items():
        name = _timm_name(key, newest)
        if name is not None:
            out[name] = value
    return out
