"""The model card (``README.md``) of a learngene repo, rendered from ``model_cards/learngene.md``.

The template is Jinja with YAML front matter and ships as package data
(``learngene_hf.model_cards``); :func:`learngene_card` fills it through
:meth:`huggingface_hub.ModelCard.from_template`, so the metadata (library name, tags, datasets,
``base_model``, license) is validated by ``huggingface_hub`` and by the Hub when pushed.
"""

from __future__ import annotations

import math
import os
import re
from importlib import resources
from typing import Any

from huggingface_hub import ModelCard, ModelCardData

TEMPLATE_NAME = "learngene.md"
VIT_TEMPLATE_NAME = "learngene_vit.md"
_REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*/[A-Za-z0-9][A-Za-z0-9_.\-]*$")


def template_path(name: str = TEMPLATE_NAME) -> str:
    """Path of a packaged model card template (default: the layer learngene's)."""
    return str(resources.files("learngene_hf.model_cards") / name)


def _is_hub_id(value: Any) -> bool:
    return isinstance(value, str) and bool(_REPO_ID.match(value)) and not os.path.exists(value)


def _human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GB"


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return "-" if not math.isfinite(value) else f"{value:.{digits}g}"
    return str(value)


def source_name(config_source: dict[str, Any]) -> str:
    """How the card names the source collective model: its repo id, else its run folder / preset."""
    if config_source.get("repo_id"):
        return str(config_source["repo_id"])
    if config_source.get("run_dir") or config_source.get("run_name"):
        run = os.path.basename(str(config_source.get("run_dir") or config_source["run_name"]).rstrip("/"))
        return f"local run `{run}` (preset `{config_source.get('preset')}`)"
    return f"an unpublished collective model (preset `{config_source.get('preset')}`)"


def _narrowed_text(src: dict[str, Any]) -> str:
    """How a learngene taken narrower than its collective model was made ("" for a plain copy)."""
    narrow = src.get("channel_selection") or {}
    if not narrow:
        return ""
    widths = "-".join(str(w) for w in narrow.get("widths", []))
    full = "-".join(str(w) for w in narrow.get("source_widths", []))
    text = f"the layers are taken at widths {widths} of the collective's {full}, keeping evenly spaced channels"
    distilled = src.get("distillation") or {}
    if distilled:
        text += (
            f", then distilled to imitate {distilled.get('target')} ({distilled.get('epochs')} epochs on "
            f"{distilled.get('images', 0):,} images of its base classes; loss {distilled.get('loss_before', 0):.3f} -> "
            f"{distilled.get('loss_after', 0):.3f})"
        )
    return text


def learngene_card(learngene: Any, repo_id: str | None = None) -> ModelCard:
    """Render the model card of ``learngene`` (``repo_id`` appears in the usage snippet)."""
    cfg = learngene.config
    sel = cfg.selection or {}
    src = cfg.source or {}
    stream = cfg.task_stream or {}
    dataset = stream.get("dataset") or {}
    base_model = src.get("repo_id") if _is_hub_id(src.get("repo_id")) else None
    datasets = [dataset["source"]] if _is_hub_id(dataset.get("source")) else None
    tags = ["learngene", "few-shot", "image-classification", "learngene-hf", f"learngene-{cfg.position}"]
    card_data = ModelCardData(
        library_name="learngene-hf",
        license="apache-2.0",
        tags=tags,
        datasets=datasets,
        base_model=base_model,
        pipeline_tag="image-classification",
    )
    scores = sel.get("scores") or {}
    criterion = sel.get("criterion")
    layer_rows = [
        {
            "j": j,
            "name": row["name"],
            "source_index": row.get("source_index", "-"),
            "in_channels": row["in_channels"],
            "out_channels": row["out_channels"],
            "kernel_size": row["kernel_size"],
            "pool": "yes" if row.get("pool") else "no",
            "score": _fmt(scores.get(row["name"])),
        }
        for j, row in enumerate(cfg.layers)
    ]
    chosen = set(cfg.layer_names)
    all_scores = [{"name": n, "score": _fmt(v), "chosen": "yes" if n in chosen else ""} for n, v in scores.items()]
    candidates = [
        {
            "layers": f"{c['layers'][0]}-{c['layers'][-1]}",
            "origin": ", ".join(c.get("origin", [])),
            "mean": f"{100 * c['mean']:.1f}%"
            if c.get("mean") is not None
            else f"not probed: {c.get('skipped', 'no result')}",
            "ci95": f"{100 * c['ci95']:.1f}" if c.get("ci95") is not None else "-",
        }
        for c in sel.get("candidates", [])
    ]
    for name, c in (sel.get("budget_candidates") or {}).items():
        mean = f"{100 * c['mean']:.1f}%" if c.get("mean") is not None else f"not probed: {c.get('skipped')}"
        candidates.append({"layers": name, "origin": f"{c['bytes']:,} bytes", "mean": mean,
                           "ci95": f"{100 * c['ci95']:.1f}" if c.get("ci95") is not None else "-"})  # fmt: skip
    sizes = cfg.sizes or {}
    if stream:
        planned = stream.get("planned_tasks")
        partly = f" (stopped early: {planned} were planned)" if planned and planned != stream.get("num_tasks") else ""
        stream_text = (
            f"{stream.get('num_tasks', '?')} tasks{partly} of {stream.get('ways', '?')} ways on "
            f"{dataset.get('source') or 'the embedded procedural dataset'}"
            f"{' (' + str(len(stream['classes'])) + ' classes)' if stream.get('classes') else ''}"
        )
    else:
        stream_text = "not recorded"
    fraction = sizes.get("parameter_fraction")
    if cfg.form == "linear_expansion":
        return _linear_expansion_card(learngene, card_data, repo_id, stream_text)
    return ModelCard.from_template(
        card_data,
        template_path=template_path(),
        model_title=f"Learngene: {', '.join(cfg.layer_names)} of {source_name(src)}",
        repo_id=repo_id or "path/to/this/learngene",
        num_layers=cfg.num_layers,
        source_name=source_name(src),
        source_revision=src.get("revision"),
        source_commit=src.get("commit_sha"),
        source_preset=src.get("preset"),
        source_widths=src.get("widths"),
        narrowed=_narrowed_text(src),
        learngene_parameters=f"{sizes.get('learngene_parameters', learngene.num_parameters()):,}",
        learngene_size=_human_bytes(sizes.get("learngene_bytes", learngene.num_bytes())),
        collective_parameters=f"{sizes['collective_parameters']:,}" if "collective_parameters" in sizes else "unknown",
        collective_size=_human_bytes(sizes["collective_bytes"]) if "collective_bytes" in sizes else "unknown size",
        parameter_percent=f"{100 * fraction:.1f}%" if fraction is not None else "an unknown share",
        in_channels=cfg.in_channels,
        out_channels=cfg.out_channels,
        position=cfg.position,
        input_stride=cfg.input_stride,
        preprocessing=", ".join(f"{k}={v}" for k, v in (cfg.preprocessing or {}).items()),
        layer_rows=layer_rows,
        criterion=criterion,
        criterion_label=criterion or "criterion",
        threshold=sel.get("threshold"),
        strategy=sel.get("strategy", "not recorded"),
        reason=sel.get("reason", "not recorded"),
        candidates=candidates,
        all_scores=all_scores,
        task_stream_text=stream_text,
        format_version=cfg.format_version,
    )


def _linear_expansion_card(
    learngene: Any, card_data: ModelCardData, repo_id: str | None, stream_text: str
) -> ModelCard:
    cfg = learngene.config
    arch = cfg.expansion
    sizes = cfg.sizes or {}
    src = cfg.source or {}
    pair = sum(t.numel() for name, t in learngene.tensors.items() if name.startswith(("base.", "inc.")))
    card_data.tags = [t for t in card_data.tags if not t.startswith("learngene-")] + [
        "learngene-hf",
        "vision-transformer",
        "tleg",
    ]
    return ModelCard.from_template(
        card_data,
        template_path=template_path(VIT_TEMPLATE_NAME),
        model_title=f"Linear-expansion learngene of {source_name(src)}",
        repo_id=repo_id or "path/to/this/learngene",
        rule=arch["rule"],
        depth=arch["depth"],
        embed_dim=arch["embed_dim"],
        num_heads=arch["num_heads"],
        mlp_ratio=arch["mlp_ratio"],
        patch_size=arch["patch_size"],
        image_size=arch["image_size"],
        learngene_parameters=f"{learngene.num_parameters():,}",
        learngene_size=_human_bytes(learngene.num_bytes()),
        pair_parameters=f"{pair:,}",
        collective_parameters=f"{sizes['collective_parameters']:,}"
        if "collective_parameters" in sizes
        else "an unknown number of",
        source_name=source_name(src),
        task_stream_text=stream_text,
        preprocessing=", ".join(f"{k}={v}" for k, v in (cfg.preprocessing or {}).items()),
        format_version=cfg.format_version,
    )
