"""The model card (``README.md``) that the package's models write when they are pushed with
``push_to_hub``: ``library_name: learngene-hf``, tags (``learngene``, the family, the role),
``base_model`` = the learngene repo a descendant was built from, that learngene's commit, the
papers, and how to load the repo with transformers and with timm.

The models travel alone as remote code, so the card is written here with the standard library
(its YAML front matter holds only strings and lists of strings, written as JSON scalars, which
YAML reads as they are); the learngene artifact's cards keep their Jinja templates in
``model_cards/``.
"""

from __future__ import annotations

import json
import re
from typing import Any

#: "Learngene: From Open-World to Your Learning Task" (Wang et al., AAAI 2022).
LEARNGENE_PAPER = "https://arxiv.org/abs/2106.06788"
#: "Transformer as Linear Expansion of Learngene" (Xia et al., AAAI 2024), the ViT learngenes.
TLEG_PAPER = "https://arxiv.org/abs/2312.05614"

_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*/[A-Za-z0-9][A-Za-z0-9_.\-]*$")

_FAMILIES = {
    "learngene_collective": ("vgg-bn", "collective-model", "VGG-BN collective model"),
    "learngene_individual": ("vgg-bn", "individual-model", "VGG-BN individual model"),
    "learngene_vit_collective": ("vision-transformer", "collective-model", "ViT collective model"),
    "learngene_vit_individual": ("vision-transformer", "individual-model", "ViT individual model"),
}


def is_hub_id(value: Any) -> bool:
    """Whether ``value`` looks like a Hub repo id (``owner/name``), not a local path."""
    return isinstance(value, str) and bool(_HUB_ID.match(value))


def learngene_origin(config: Any) -> dict[str, Any]:
    """Where a descendant's inherited weights came from (``config.learngene``; empty for scratch
    models and collective models)."""
    return dict(getattr(config, "learngene", None) or {})


def card_metadata(config: Any, tags: list[str] | None = None) -> dict[str, Any]:
    """The card's YAML metadata: ``library_name``, ``pipeline_tag``, ``tags`` and, for a
    descendant of a learngene on the Hub, ``base_model`` (that learngene's repo id)."""
    family, role, _ = _FAMILIES[config.model_type]
    origin = learngene_origin(config)
    all_tags = ["learngene", "learngene-hf", family, role, "image-classification", "timm"]
    if origin.get("form") == "linear_expansion":
        all_tags.append("tleg")
    for tag in tags or []:
        if tag not in all_tags:
            all_tags.append(str(tag))
    metadata: dict[str, Any] = {
        "library_name": "learngene-hf",
        "pipeline_tag": "image-classification",
        "tags": all_tags,
    }
    if is_hub_id(origin.get("repo_id")):
        metadata["base_model"] = origin["repo_id"]
    return metadata


def _front_matter(metadata: dict[str, Any]) -> str:
    lines = ["---"]
    for key, value in metadata.items():
        if isinstance(value, list):
            lines.append(f"{key}:")
            lines.extend(f"- {json.dumps(str(v))}" for v in value)
        else:
            lines.append(f"{key}: {json.dumps(str(value))}")
    lines.append("---")
    return "\n".join(lines)


def _lineage(config: Any) -> list[str]:
    origin = learngene_origin(config)
    if not origin:
        if config.model_type.endswith("collective"):
            return [
                "A collective model: it learnt a stream of tasks, one head per task; `learngene_hf.Inheritor` "
                "extracts its learngene."
            ]
        return ["Trained from scratch: no learngene was inherited."]
    form = origin.get("form", "layers")
    if form == "weight_selection":
        return [
            f"Initialised by weight selection from a collective ViT ({origin.get('source_depth')} blocks, width "
            f"{origin.get('source_embed_dim')}), not from a learngene."
        ]
    where = f"`{origin['repo_id']}`" if origin.get("repo_id") else "a local learngene"
    lines = [f"- Learngene: {where}"]
    if origin.get("revision"):
        lines.append(f"- Revision: `{origin['revision']}`")
    if origin.get("commit_sha"):
        lines.append(f"- Learngene commit: `{origin['commit_sha']}`")
    if form == "linear_expansion":
        lines.append(
            f"- Linear expansion (rule `{origin.get('rule')}`) of a {origin.get('source_depth')}-block, width-"
            f"{origin.get('source_embed_dim')} learngene into {config.depth} blocks of width {config.embed_dim}"
        )
    else:
        lines.append(f"- Inherited layers: {', '.join(origin.get('layers') or [])} ({origin.get('position')} end)")
        source = origin.get("source") or {}
        if source.get("repo_id"):
            lines.append(f"- The learngene's collective model: `{source['repo_id']}`")
    return lines


def _architecture(config: Any) -> str:
    labels = getattr(config, "id2label", None) or {}
    names = ", ".join(str(labels[k]) for k in sorted(labels)) if labels else "-"
    if config.model_type.startswith("learngene_vit"):
        shape = f"timm VisionTransformer, {config.depth} blocks, width {config.embed_dim}, patch {config.patch_size}"
    else:
        shape = f"VGG-BN, conv widths {list(config.widths)}, MLP {list(config.head_hidden)}"
        if getattr(config, "inherited", None):
            shape += f", blocks {config.inherited[0]}..{config.inherited[1] - 1} inherited"
    return f"{shape}; {config.image_size}x{config.image_size} inputs; classes: {names}"


def model_card(config: Any, repo_id: str, tags: list[str] | None = None) -> str:
    """The ``README.md`` of ``repo_id`` holding a model with ``config`` (front matter + body)."""
    _, _, title = _FAMILIES[config.model_type]
    papers = f"[Learngene: From Open-World to Your Learning Task]({LEARNGENE_PAPER}) (AAAI 2022)"
    if config.model_type.startswith("learngene_vit"):
        papers += f" and [Transformer as Linear Expansion of Learngene]({TLEG_PAPER}) (AAAI 2024)"
    body = [
        f"# {title}",
        "",
        f"A {title} made with [learngene-hf](https://github.com/learngene-hf/learngene-hf), after {papers}.",
        "",
        f"Architecture: {_architecture(config)}.",
        "",
        "## Lineage",
        "",
        *_lineage(config),
        "",
        "## Usage",
        "",
        "```python",
        "import learngene_hf  # registers the model classes with transformers and timm",
        "from transformers import AutoModelForImageClassification, pipeline",
        "",
        f'model = AutoModelForImageClassification.from_pretrained("{repo_id}")',
        f'classifier = pipeline("image-classification", model="{repo_id}")',
        "```",
        "",
        "With timm (same logits; a collective model keeps its newest task head):",
        "",
        "```python",
        "import learngene_hf, timm",
        "",
        f'model = timm.create_model("hf-hub:{repo_id}", pretrained=True)',
        "```",
        "",
    ]
    return _front_matter(card_metadata(config, tags)) + "\n\n" + "\n".join(body)
