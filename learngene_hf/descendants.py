"""Which methods a learngene is compared with: frozen-feature baselines, weight selection, and
descendants of several sizes.

* :func:`baseline_methods`: logistic regression and nearest centroid on the frozen features of a
  randomly initialised descendant, of the learngene's layers, and of the whole collective model,
  plus weight selection from the collective model into the descendant's architecture (the
  methods ``examples/few_shot.py --compare`` adds).
* :func:`descendant_sizes` / :func:`size_methods` / :func:`compare_sizes`: descendants of several
  sizes from one learngene (learngene + head, + one fresh block, ..., the collective's size), each
  next to scratch and weight selection of the same size, on the same episodes.
* :func:`vit_depth_methods` / :func:`compare_vit_depths`: the same for a linear-expansion (ViT)
  learngene: TLEG descendants of several depths, each next to scratch, weight selection from an
  unconstrained collective ViT and a classifier on a random ViT's frozen features of that depth
  (learning rates tried: :data:`DEFAULT_VIT_LR_GRID`).
* :func:`size_rows` / :func:`format_sizes_table`: one row per size and method with parameters,
  inherited parameters and bytes, accuracy and the paired differences to the same-size scratch
  and to the same-size strongest method that inherits nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

from torch import nn

from .baselines import DEFAULT_L2, DEFAULT_L2_GRID, fit_frozen_features, frozen_features, vit_frozen_features, weight_selection
from .errors import ConfigError
from .fewshot import DEFAULT_LR_GRID, FewShotConfig, Method, compare_methods
from .individual import IndividualConfig, IndividualModel

#: Few-shot learning rates :func:`compare_vit_depths` tries on open-world episodes when the caller
#: gives none. The library's :data:`~learngene_hf.fewshot.DEFAULT_LR_GRID` is centred on the VGG
#: recipe's lr (0.1); with the same SGD recipe the ViT descendants picked 0.002-0.05 on open-world
#: episodes (the grid is still widened once when the pick is at an edge).
DEFAULT_VIT_LR_GRID: tuple[float, ...] = (0.002, 0.005, 0.01, 0.02, 0.05)

#: Feature sources of the frozen-feature baselines, in table order.
FEATURE_SOURCES = ("random", "learngene", "collective")
#: Frozen-feature classifiers: method name prefix -> (classifier, fit settings, settings searched).
FROZEN_CLASSIFIERS: dict[str, tuple[str, dict[str, Any], dict[str, Sequence[Any]] | None]] = {
    "logreg": ("logistic", {"l2": DEFAULT_L2}, {"l2": DEFAULT_L2_GRID}),
    "centroid": ("centroid", {}, None),
}


def _descendant(learngene: Any, num_labels: int, inherit: bool, **overrides: Any) -> IndividualModel:
    if inherit:
        return IndividualModel.from_learngene(learngene, num_labels, **overrides)
    return IndividualModel(IndividualConfig.for_learngene(learngene, num_labels, **overrides))


def baseline_methods(
    learngene: Any,
    collective: nn.Module | None = None,
    *,
    sources: Sequence[str] = FEATURE_SOURCES,
    classifiers: Sequence[str] = tuple(FROZEN_CLASSIFIERS),
    weight_selection_method: bool = True,
    **individual_overrides: Any,
) -> list[Method]:
    """Frozen-feature baselines (``{classifier}_{source}``, e.g. ``logreg_random``) and
    ``weight_selection``, as :class:`~learngene_hf.fewshot.Method` objects.

    Sources: ``random`` (every conv block of a randomly initialised descendant: the descendant's
    architecture, nothing inherited), ``learngene`` (the descendant's blocks up to the end of the
    learngene: its fresh stem, if any, then the inherited blocks) and ``collective`` (every conv
    block of ``collective``; skipped without one, as is ``weight_selection``). Classifiers:
    ``logreg`` (L2 strength picked on open-world episodes from
    :data:`~learngene_hf.baselines.DEFAULT_L2_GRID`) and ``centroid`` (cosine, no setting).
    """
    unknown = sorted(set(sources) - set(FEATURE_SOURCES)) + sorted(set(classifiers) - set(FROZEN_CLASSIFIERS))
    if unknown:
        raise ConfigError(f"Unknown baseline sources/classifiers {unknown}; use sources from {list(FEATURE_SOURCES)} "
                          f"and classifiers from {list(FROZEN_CLASSIFIERS)}.")
    overrides = {k: v for k, v in individual_overrides.items() if k != "freeze_learngene"}

    def builder(source: str, classifier: str):
        def build(n: int) -> nn.Module:
            if source == "collective":
                return frozen_features(collective, n, classifier, source="collective")
            model = _descendant(learngene, n, inherit=source == "learngene", **overrides)
            end = model.config.inherited[1] if source == "learngene" else None
            return frozen_features(model, n, classifier, end=end, source=source)
        return build

    described = {"random": "every conv block of a randomly initialised descendant (nothing inherited)",
                 "learngene": "the descendant's blocks up to the learngene's end (fresh stem, if any, then the learngene)",
                 "collective": "every conv block of the whole collective model"}
    named = {"logreg": "logistic regression (L2)", "centroid": "nearest centroid (cosine)"}
    methods = []
    for source in sources:
        if source == "collective" and collective is None:
            continue
        for prefix in classifiers:
            classifier, settings, search = FROZEN_CLASSIFIERS[prefix]
            methods.append(Method(f"{prefix}_{source}", builder(source, classifier),
                                  description=f"{named[prefix]} on standardized 2x2-pooled frozen features of {described[source]}",
                                  fit=fit_frozen_features, settings=dict(settings), search=search))
    if weight_selection_method and collective is not None:
        methods.append(Method(
            "weight_selection",
            lambda n: weight_selection(collective, _descendant(learngene, n, inherit=False, **overrides)),
            description="the descendant's architecture initialised by weight selection (Xu et al., ICLR 2024) from the "
                        "whole collective model, fine-tuned"))
    return methods


# ---------------------------------------------------------------------- descendants of several sizes
@dataclass
class DescendantSize:
    """One descendant size: the learngene (with its stem), ``tail_blocks`` fresh blocks, the head."""

    name: str
    tail_blocks: int
    overrides: dict[str, Any] = field(default_factory=dict)


def descendant_sizes(learngene: Any, tail_blocks: Sequence[int] | None = None) -> list[DescendantSize]:
    """Descendant sizes from "learngene + head" up to the collective's size.

    The fresh tail after the learngene mirrors the collective model's layers
    (``IndividualConfig.for_learngene``); a size keeps its first ``k`` blocks. Default ``k``:
    0 (``learngene+head``), 1 (``learngene+1``) and all (``full``, the collective's size), without
    duplicates; a learngene at the output end has a single size.
    """
    full = IndividualConfig.for_learngene(learngene, 2)
    end = full.inherited[1]
    widths, pool = full.widths[end:], full.pool[end:]
    counts = sorted({0, min(1, len(widths)), len(widths)} if tail_blocks is None else {int(k) for k in tail_blocks})
    bad = [k for k in counts if not 0 <= k <= len(widths)]
    if bad:
        raise ConfigError(f"tail_blocks {bad} out of range: this learngene's descendants have 0..{len(widths)} fresh "
                          "blocks after it.")
    sizes = []
    for k in counts:
        name = "full" if k == len(widths) else ("learngene+head" if k == 0 else f"learngene+{k}")
        sizes.append(DescendantSize(name, k, {"tail_widths": widths[:k], "tail_pool": pool[:k]}))
    return sizes


#: The fine-tuned methods compared at every size.
SIZE_METHODS = ("learngene", "scratch", "weight_selection")


def size_methods(
    learngene: Any,
    collective: nn.Module | None,
    sizes: Sequence[DescendantSize] | None = None,
    **individual_overrides: Any,
) -> list[Method]:
    """``learngene@SIZE``, ``scratch@SIZE`` and (with ``collective``) ``weight_selection@SIZE``
    for every size (fine-tuned)."""
    sizes = list(sizes) if sizes is not None else descendant_sizes(learngene)
    methods = []
    for size in sizes:
        over = {**individual_overrides, **size.overrides}
        methods.append(Method(f"learngene@{size.name}", lambda n, o=over: _descendant(learngene, n, True, **o),
                              description=f"the learngene, {size.tail_blocks} fresh blocks after it, the head"))
        methods.append(Method(f"scratch@{size.name}", lambda n, o=over: _descendant(learngene, n, False, **o),
                              description=f"the same architecture as learngene@{size.name}, random initialization"))
        if collective is not None:
            methods.append(Method(
                f"weight_selection@{size.name}",
                lambda n, o=over: weight_selection(collective, _descendant(learngene, n, False, **o)),
                description=f"the same architecture as learngene@{size.name}, weight selection from the collective model"))
    return methods


def size_rows(results: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per (size, method) of a :func:`compare_sizes` results dict: ``size``, ``method``,
    ``name``, ``parameters`` (at inference), ``inherited_parameters``, ``inherited_bytes``,
    ``mean``, ``ci95``, ``diff_vs_scratch`` (paired, against the scratch model of that size) and
    ``diff_vs_strongest`` (paired, against the best method of that size that inherits nothing,
    named in ``baseline``; ``None`` for that method itself)."""
    from .stats import paired_difference

    def diff(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
        d_mean, d_half = paired_difference(a["accuracies"], b["accuracies"])
        return {"mean": d_mean, "ci95": d_half if d_half == d_half else None}

    rows = []
    methods = results["methods"]
    strongest: dict[str, str] = {}
    for name, m in methods.items():
        kind, _, size = name.partition("@")
        if size and int(m.get("inherited_parameters", 0) or 0) == 0:
            if size not in strongest or m["mean"] > methods[strongest[size]]["mean"]:
                strongest[size] = name
    for name, m in methods.items():
        kind, _, size = name.partition("@")
        if not size:
            continue
        row = {"size": size, "method": kind, "name": name, "parameters": m["parameters"],
               "inherited_parameters": m.get("inherited_parameters", 0), "inherited_bytes": m.get("inherited_bytes", 0),
               "mean": m["mean"], "ci95": m["ci95"], "lr": m.get("lr"), "settings": m.get("settings"),
               "diff_vs_scratch": None, "diff_vs_strongest": None}
        scratch = methods.get(f"scratch@{size}")
        if scratch is not None and kind != "scratch":
            row["diff_vs_scratch"] = diff(m, scratch)
        best = strongest.get(size)
        if best is not None and best != name:
            row["diff_vs_strongest"] = {"baseline": best.partition("@")[0], **diff(m, methods[best])}
        rows.append(row)
    return rows


def compare_sizes(
    learngene: Any,
    collective: nn.Module | None,
    episodes: Sequence[Any],
    cfg: FewShotConfig,
    *,
    sizes: Sequence[DescendantSize] | None = None,
    tune_lr_episodes: Sequence[Any] | None = None,
    lr_grid: Sequence[float] = DEFAULT_LR_GRID,
    accelerator: Any | None = None,
    seed: int = 0,
    progress: bool = True,
    **individual_overrides: Any,
) -> dict[str, Any]:
    """Descendants of several sizes vs scratch and weight selection of the same size, on the same
    episodes (:func:`~learngene_hf.fewshot.compare_methods` with :func:`size_methods`; every lr
    picked on ``tune_lr_episodes``, open-world episodes, when given). The results dict gains
    ``sizes`` (:func:`size_rows`)."""
    if not episodes:
        raise ConfigError("compare_sizes needs at least one episode.")
    methods = size_methods(learngene, collective, sizes, **individual_overrides)
    results = compare_methods(learngene, episodes, cfg, methods=methods, tune_lr_episodes=tune_lr_episodes,
                              lr_grid=lr_grid, accelerator=accelerator, seed=seed, progress=progress)
    results["sizes"] = size_rows(results)
    return results


def vit_depth_methods(
    learngene: Any,
    plain_collective: nn.Module | None,
    depths: Sequence[int],
    *,
    classifiers: Sequence[str] = ("logreg",),
) -> list[Method]:
    """For every depth ``L``: ``tleg@L`` (a descendant of a linear-expansion learngene, block
    ``l`` = base + c(l, L) * inc), ``scratch@L`` (the same ViT, random initialization),
    ``weight_selection@L`` (its first ``L`` blocks from ``plain_collective``, an unconstrained
    collective ViT; skipped without one or when ``L`` exceeds its depth) and a classifier on the
    frozen features of a random ViT of that shape for each of ``classifiers`` (``logreg_random@L``,
    ``centroid_random@L``). The fine-tuned ones are trained by ``run_episodes`` (stacked per depth,
    :class:`~learngene_hf.stacked.StackedViTs`, unless the config says ``stack=False``); the others go
    through ``fit_frozen_features``."""
    from .vit import ViTIndividualConfig, ViTIndividualModel

    unknown = sorted(set(classifiers) - set(FROZEN_CLASSIFIERS))
    if unknown:
        raise ConfigError(f"Unknown frozen-feature classifiers {unknown}; use some of {list(FROZEN_CLASSIFIERS)}.")
    if not getattr(learngene.config, "expansion", None):
        raise ConfigError("vit_depth_methods needs a linear-expansion (ViT) learngene; for layer learngenes use size_methods.")
    methods = []
    for depth in depths:
        depth = int(depth)

        def scratch(n: int, d: int = depth) -> nn.Module:
            return ViTIndividualModel(ViTIndividualConfig.for_learngene(learngene, n, num_blocks=d))

        methods.append(Method(f"tleg@{depth}", lambda n, d=depth: ViTIndividualModel.from_learngene(learngene, n, num_blocks=d),
                              description=f"{depth}-block ViT, block l = base + c(l, {depth}) * inc of the learngene (TLEG)"))
        methods.append(Method(f"scratch@{depth}", scratch, description=f"the same {depth}-block ViT, random initialization"))
        if plain_collective is not None and depth <= int(plain_collective.config.depth):
            methods.append(Method(
                f"weight_selection@{depth}",
                lambda n, d=depth: ViTIndividualModel.from_weight_selection(plain_collective, n, num_blocks=d),
                description=f"the same {depth}-block ViT, first {depth} blocks of the unconstrained collective ViT"))
        for prefix in classifiers:
            classifier, settings, search = FROZEN_CLASSIFIERS[prefix]
            methods.append(Method(
                f"{prefix}_random@{depth}",
                lambda n, d=depth, c=classifier: vit_frozen_features(scratch(n, d), n, c, source="random"),
                description=f"{prefix} on the frozen class and mean patch tokens of a random {depth}-block ViT (nothing inherited)",
                fit=fit_frozen_features, settings=dict(settings), search=search))
    return methods


def compare_vit_depths(
    learngene: Any,
    plain_collective: nn.Module | None,
    episodes: Sequence[Any],
    cfg: FewShotConfig,
    depths: Sequence[int],
    *,
    classifiers: Sequence[str] = ("logreg",),
    tune_lr_episodes: Sequence[Any] | None = None,
    lr_grid: Sequence[float] | None = None,
    accelerator: Any | None = None,
    seed: int = 0,
    progress: bool = True,
) -> dict[str, Any]:
    """ViT descendants of several depths from a linear-expansion learngene vs scratch, weight
    selection and frozen random features of the same depth, on the same episodes
    (:func:`~learngene_hf.fewshot.compare_methods` with :func:`vit_depth_methods`; learning rates
    and L2 strengths picked on ``tune_lr_episodes``, open-world episodes, when given). The
    results dict gains ``sizes`` (:func:`size_rows`, one size per depth). ``lr_grid`` defaults to
    :data:`DEFAULT_VIT_LR_GRID` (not the VGG-centred ``DEFAULT_LR_GRID``)."""
    if not episodes:
        raise ConfigError("compare_vit_depths needs at least one episode.")
    methods = vit_depth_methods(learngene, plain_collective, depths, classifiers=classifiers)
    results = compare_methods(learngene, episodes, cfg, methods=methods, tune_lr_episodes=tune_lr_episodes,
                              lr_grid=DEFAULT_VIT_LR_GRID if lr_grid is None else lr_grid, accelerator=accelerator, seed=seed, progress=progress)
    results["sizes"] = size_rows(results)
    return results


def format_sizes_table(rows: Sequence[dict[str, Any]]) -> str:
    """Markdown: size, method, parameters, inherited parameters and bytes, accuracy, vs same-size scratch."""
    lines = ["| size | method | parameters | inherited parameters | inherited bytes | accuracy (%) | vs scratch of that size |",
             "| --- | --- | ---: | ---: | ---: | --- | --- |"]

    def pm(mean: float, half: float | None) -> str:
        return f"{100 * mean:.1f} +/- {100 * half:.1f}" if half is not None else f"{100 * mean:.1f}"

    for r in rows:
        d = r.get("diff_vs_scratch")
        vs = ("+" if d["mean"] >= 0 else "") + pm(d["mean"], d["ci95"]) if d else "-"
        lines.append(f"| {r['size']} | {r['method']} | {r['parameters']:,} | {r['inherited_parameters']:,} | "
                     f"{r['inherited_bytes']:,} | {pm(r['mean'], r['ci95'])} | {vs} |")
    return "\n".join(lines)


def write_sizes(results: dict[str, Any], output_dir: str, plot: bool = True) -> dict[str, str]:
    """Write ``sizes.json`` (the :func:`compare_sizes` results), ``sizes.md`` (the table) and
    ``sizes.png`` (:func:`~learngene_hf.plots.sizes.plot_descendant_sizes`) atomically to
    ``output_dir``; returns their paths."""
    from pathlib import Path

    from .io import write_json_atomic, write_text_atomic

    out = Path(output_dir)
    s = results["setting"]
    title = f"{s['ways']}-way {s['shots']}-shot, {s['episodes']} episodes"
    paths = {"results": str(write_json_atomic(out / "sizes.json", results)),
             "table": str(write_text_atomic(out / "sizes.md", f"{title} (accuracy in %, mean +/- 95% CI)\n\n"
                                            + format_sizes_table(results["sizes"]) + "\n"))}
    if plot:
        from .plots.sizes import plot_descendant_sizes

        paths["plot"] = plot_descendant_sizes(results["sizes"], out / "sizes.png", title=title)
    return paths
