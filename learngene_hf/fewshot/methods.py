"""The method catalog: which methods a learngene is compared with, as :class:`~learngene_hf.fewshot.runner.Method`s.

* :func:`comparison_methods`: ``learngene`` and ``scratch``, and with ``compare`` the other blocks of the
  collective run (whole / last-k / first-k / worst-k) and the baselines below.
* :func:`baseline_methods`: logistic regression and nearest centroid on the frozen features of a
  randomly initialised descendant, of the learngene's layers, and of the whole collective model,
  plus weight selection from the collective model into the descendant's architecture (the
  methods ``examples/few_shot.py --compare`` adds); :data:`FEATURE_SOURCES`, :data:`FROZEN_CLASSIFIERS`.
* :func:`descendant_sizes` / :func:`size_methods`: descendants of several sizes from one learngene
  (learngene + head, + one fresh block, ..., the collective's size), each next to scratch and weight
  selection of the same size (:data:`SIZE_METHODS`).
* :func:`vit_depth_methods`: the same for a linear-expansion (ViT) learngene: TLEG descendants of
  several depths, each next to scratch, weight selection from an unconstrained collective ViT and a
  classifier on a random ViT's frozen features of that depth.

The frozen-feature classifiers and weight selection are in :mod:`~learngene_hf.fewshot.baselines`;
:mod:`~learngene_hf.fewshot.compare` runs and tables the methods.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Callable, Sequence

from torch import nn

from ..artifact.learngene import Learngene
from ..errors import ConfigError
from ..models.individual import IndividualConfig, IndividualModel
from ..models.presets import VGG_DESCENDANT_SIZES
from ..models.vit_individual import ViTIndividualConfig, ViTIndividualModel
from ..selection.config import DEFAULT_CRITERION
from ..selection.criterion import first_block, layer_scores, paper_block, rank_blocks
from ..training.run import load_run
from .baselines import (
    DEFAULT_L2,
    DEFAULT_L2_GRID,
    fit_frozen_features,
    frozen_features,
    vit_frozen_features,
    weight_selection,
)
from .config import descendant_recipe
from .loading import collective_run_dir
from .runner import Method


def comparison_methods(
    learngene: Any,
    *,
    compare: bool = False,
    collective_run: str | None = None,
    freeze_learngene: bool = False,
    baselines: bool = True,
    blocks: bool = True,
    **individual_overrides: Any,
) -> list[Method]:
    """The methods compared by :func:`~learngene_hf.fewshot.compare.compare_methods`.

    Always ``learngene`` (the given learngene inherited) and ``scratch`` (the same architecture,
    random init). With ``compare=True``, from the collective run (``collective_run``, default the
    learngene's ``config.source["run_dir"]``) and with ``k`` = the learngene's number of layers:
    ``whole`` (every conv layer), ``last_k`` (the paper's choice), ``first_k`` and ``worst_k`` (the
    block the learngene's criterion ranks worst), and with ``baselines`` (default) the methods of
    :func:`baseline_methods`: logistic regression and nearest centroid on
    the frozen features of a random descendant, of the learngene and of the whole collective model,
    and weight selection from the collective model. ``blocks=False`` leaves out the methods that
    fine-tune a whole network besides learngene and scratch (the other blocks and weight
    selection): the frozen-feature baselines stay, and cost little. Each inherited variant's
    scratch twin is not needed: ``scratch`` is the reference for the given learngene's architecture.
    """

    def from_lg(lg: Any) -> Callable[[int], IndividualModel]:
        return lambda n: IndividualModel.from_learngene(
            lg, n, freeze_learngene=freeze_learngene, **individual_overrides
        )

    methods = [
        Method(
            "learngene",
            from_lg(learngene),
            description=f"inherits {learngene.config.layer_names} ({learngene.config.position})",
        ),
        Method(
            "scratch",
            lambda n: IndividualModel(IndividualConfig.for_learngene(learngene, n, **individual_overrides)),
            description="same architecture as 'learngene', random initialization",
        ),
    ]
    if not compare:
        return methods
    run_dir = collective_run_dir(learngene, collective_run)
    run = load_run(run_dir)
    model = run.model
    n, k = model.config.num_layers, learngene.config.num_layers
    selection = dict(learngene.config.selection or {})
    criterion = selection.get("criterion") or DEFAULT_CRITERION
    candidates = {
        "whole": (list(range(n)), "every conv layer of the collective model"),
        f"last_{k}": (paper_block(n, k), f"the paper's choice: the last {k} conv layers"),
        f"first_{k}": (first_block(n, k), f"the first {k} conv layers"),
    }
    if run.record is not None and n > k:
        try:
            scores = layer_scores(run.record, criterion, threshold=selection.get("threshold"))
            ranking = rank_blocks([scores.get(name, float("nan")) for name in model.config.layer_names], k)
            candidates[f"worst_{k}"] = (ranking[-1]["layers"], f"the block the {criterion!r} criterion ranks worst")
        except Exception as err:  # noqa: BLE001 - reported, the other methods still run
            candidates[f"worst_{k}"] = None
            selection["_worst_error"] = str(err)
    source = {"run_dir": str(run_dir)}
    own_layers = [int(row.get("source_index", -1)) for row in learngene.config.layers]
    for name, entry in (candidates if blocks else {}).items():
        if entry is None:
            continue
        layers, description = entry
        if list(layers) == own_layers:  # the learngene itself: its row already reports this block
            methods[0].description += f"; the same block as {name} ({description})"
            methods[0].same_as = [*(methods[0].same_as or []), name]
            continue
        lg = Learngene.from_collective(
            model,
            layers,
            source=dict(source),
            task_stream=dict(learngene.config.task_stream or {}),
            preprocessing=dict(learngene.config.preprocessing or {}),
        )
        methods.append(Method(name, from_lg(lg), description=f"{description}: {lg.config.layer_names}"))
    if baselines:
        methods += baseline_methods(learngene, model, weight_selection_method=blocks, **individual_overrides)
    return methods


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
    ``weight_selection``, as :class:`~learngene_hf.fewshot.runner.Method` objects.

    Sources: ``random`` (every conv block of a randomly initialised descendant: the descendant's
    architecture, nothing inherited), ``learngene`` (the descendant's blocks up to the end of the
    learngene: its fresh stem, if any, then the inherited blocks) and ``collective`` (every conv
    block of ``collective``; skipped without one, as is ``weight_selection``). Classifiers:
    ``logreg`` (L2 strength picked on open-world episodes from
    :data:`~learngene_hf.fewshot.baselines.DEFAULT_L2_GRID`) and ``centroid`` (cosine, no setting).
    """
    unknown = sorted(set(sources) - set(FEATURE_SOURCES)) + sorted(set(classifiers) - set(FROZEN_CLASSIFIERS))
    if unknown:
        raise ConfigError(
            f"Unknown baseline sources/classifiers {unknown}; use sources from {list(FEATURE_SOURCES)} "
            f"and classifiers from {list(FROZEN_CLASSIFIERS)}."
        )
    overrides = {k: v for k, v in individual_overrides.items() if k != "freeze_learngene"}

    def builder(source: str, classifier: str):
        def build(n: int) -> nn.Module:
            if source == "collective":
                return frozen_features(collective, n, classifier, source="collective")
            model = _descendant(learngene, n, inherit=source == "learngene", **overrides)
            end = model.config.inherited[1] if source == "learngene" else None
            return frozen_features(model, n, classifier, end=end, source=source)

        return build

    described = {
        "random": "every conv block of a randomly initialised descendant (nothing inherited)",
        "learngene": "the descendant's blocks up to the learngene's end (fresh stem, if any, then the learngene)",
        "collective": "every conv block of the whole collective model",
    }
    named = {"logreg": "logistic regression (L2)", "centroid": "nearest centroid (cosine)"}
    methods = []
    for source in sources:
        if source == "collective" and collective is None:
            continue
        for prefix in classifiers:
            classifier, settings, search = FROZEN_CLASSIFIERS[prefix]
            methods.append(
                Method(
                    f"{prefix}_{source}",
                    builder(source, classifier),
                    description=f"{named[prefix]} on standardized 2x2-pooled frozen features of {described[source]}",
                    fit=fit_frozen_features,
                    settings=dict(settings),
                    search=search,
                )
            )
    if weight_selection_method and collective is not None:
        methods.append(
            Method(
                "weight_selection",
                lambda n: weight_selection(collective, _descendant(learngene, n, inherit=False, **overrides)),
                description="the descendant's architecture initialised by weight selection (Xu et al., ICLR 2024) from "
                "the "
                "whole collective model, fine-tuned",
            )
        )
    return methods


# ---------------------------------------------------------------------- descendants of several sizes
@dataclass
class DescendantSize:
    """One descendant size: its ``name`` (a name of ``VGG_DESCENDANT_SIZES``, or your own), the
    architecture ``overrides`` of :meth:`IndividualConfig.for_learngene` it stands for (``{"size":
    name}`` for a named one) and the ``recipe`` fields it trains with (:func:`descendant_recipe`)."""

    name: str
    overrides: dict[str, Any] = field(default_factory=dict)
    recipe: dict[str, Any] = field(default_factory=dict)


def descendant_sizes(names: Sequence[str] | None = None) -> list[DescendantSize]:
    """The named descendant sizes ``names`` (default: every one of ``VGG_DESCENDANT_SIZES``, from
    "tiny", the learngene and a linear head, to "full", the collective's size), each with its recipe."""
    names = list(VGG_DESCENDANT_SIZES) if names is None else list(names)
    unknown = [name for name in names if name not in VGG_DESCENDANT_SIZES]
    if unknown:
        raise ConfigError(f"Unknown descendant sizes {unknown}; choose from {list(VGG_DESCENDANT_SIZES)}.")
    return [DescendantSize(name, {"size": name}, descendant_recipe(name)) for name in names]


#: The fine-tuned methods compared at every size, and the frozen-feature ones on a random network of it.
SIZE_METHODS = ("learngene", "scratch", "weight_selection")
SIZE_BASELINES = ("logreg_random", "centroid_random")


def size_methods(
    learngene: Any,
    collective: nn.Module | None,
    sizes: Sequence[DescendantSize] | None = None,
    **individual_overrides: Any,
) -> list[Method]:
    """For every size: ``learngene@SIZE``, ``scratch@SIZE`` and (with ``collective``)
    ``weight_selection@SIZE``, fine-tuned with the size's recipe, and ``logreg_random@SIZE`` /
    ``centroid_random@SIZE`` on the frozen features of a random network of that architecture."""
    sizes = list(sizes) if sizes is not None else descendant_sizes()
    methods = []
    for size in sizes:
        over = {**individual_overrides, **size.overrides}
        recipe = dict(size.recipe) or None
        described = f"the {size.name} descendant"
        methods.append(Method(f"learngene@{size.name}", lambda n, o=over: _descendant(learngene, n, True, **o),
                              description=f"{described} of the learngene", recipe=recipe))  # fmt: skip
        scratch = f"{described}'s architecture, random initialization"
        methods.append(Method(f"scratch@{size.name}", lambda n, o=over: _descendant(learngene, n, False, **o),
                              description=scratch, recipe=recipe))  # fmt: skip
        if collective is not None:
            methods.append(Method(
                f"weight_selection@{size.name}",
                lambda n, o=over: weight_selection(collective, _descendant(learngene, n, False, **o)),
                description=f"{described}'s architecture, weight selection from the collective model", recipe=recipe,
            ))  # fmt: skip
        for method in baseline_methods(learngene, None, sources=("random",), weight_selection_method=False, **over):
            methods.append(replace(method, name=f"{method.name}@{size.name}",
                                   description=f"{method.description} ({size.name} architecture)"))  # fmt: skip
    return methods


def vit_depth_methods(
    learngene: Any,
    plain_collective: nn.Module | None,
    depths: Sequence[int],
    *,
    classifiers: Sequence[str] = ("logreg",),
    widths: Sequence[int | None] = (None,),
) -> list[Method]:
    """For every depth ``L`` and embedding width ``W`` of ``widths`` (``None``: the learngene's;
    sizes are named ``L``, else ``LwW``, e.g. ``tleg@4w32``): ``tleg@L`` (a descendant of a
    linear-expansion learngene, block ``l`` = base + c(l, L) * inc), ``scratch@L`` (the same ViT,
    random initialization), ``weight_selection@L`` (its first ``L`` blocks from
    ``plain_collective``, an unconstrained collective ViT; skipped without one or when ``L``
    exceeds its depth) and a classifier on the frozen features of a random ViT of that shape for
    each of ``classifiers`` (``logreg_random@L``, ``centroid_random@L``). The fine-tuned ones are
    trained by ``run_episodes`` (stacked per depth, :class:`~learngene_hf.fewshot.stacks.StackedViTs`,
    unless the config says ``stack=False``); the others go through ``fit_frozen_features``."""
    unknown = sorted(set(classifiers) - set(FROZEN_CLASSIFIERS))
    if unknown:
        raise ConfigError(f"Unknown frozen-feature classifiers {unknown}; use some of {list(FROZEN_CLASSIFIERS)}.")
    if not getattr(learngene.config, "expansion", None):
        raise ConfigError(
            "vit_depth_methods needs a linear-expansion (ViT) learngene; for layer learngenes use size_methods."
        )
    methods = []
    for depth in depths:
        for width in widths:
            methods += _vit_methods_at(learngene, plain_collective, int(depth), width, classifiers)
    return methods


def _vit_methods_at(
    learngene: Any, plain: nn.Module | None, depth: int, width: int | None, classifiers: Sequence[str]
) -> list[Method]:
    """The methods of :func:`vit_depth_methods` at one depth and width."""
    size = f"{depth}" if width is None else f"{depth}w{int(width)}"
    shape = f"{depth}-block ViT" + ("" if width is None else f" of width {int(width)}")

    def scratch(n: int) -> nn.Module:
        return ViTIndividualModel(ViTIndividualConfig.for_learngene(learngene, n, num_blocks=depth, embed_dim=width))

    methods = [
        Method(f"tleg@{size}",
               lambda n: ViTIndividualModel.from_learngene(learngene, n, num_blocks=depth, embed_dim=width),
               description=f"{shape}, block l = base + c(l, {depth}) * inc of the learngene (TLEG)"),
        Method(f"scratch@{size}", scratch, description=f"the same {shape}, random initialization"),
    ]  # fmt: skip
    if plain is not None and depth <= int(plain.config.depth):
        methods.append(Method(
            f"weight_selection@{size}",
            lambda n: ViTIndividualModel.from_weight_selection(plain, n, num_blocks=depth, embed_dim=width),
            description=f"the same {shape}, first {depth} blocks of the unconstrained collective ViT",
        ))  # fmt: skip
    for prefix in classifiers:
        classifier, settings, search = FROZEN_CLASSIFIERS[prefix]
        methods.append(Method(
            f"{prefix}_random@{size}",
            lambda n, c=classifier: vit_frozen_features(scratch(n), n, c, source="random"),
            description=f"{prefix} on the frozen class and mean patch tokens of a random {shape} (nothing inherited)",
            fit=fit_frozen_features, settings=dict(settings), search=search,
        ))  # fmt: skip
    return methods
