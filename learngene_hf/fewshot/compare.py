"""The comparison: every method on identical episodes, summarised, tabled and written.

* :func:`compare_methods`: tune every method on open-world episodes (when asked), run them all on the
  novel episodes, and summarise each (mean accuracy, 95% CI, paired difference to scratch, parameters
  and bytes inherited); :func:`add_strongest_baseline` adds the paired difference to the best method
  that inherits nothing.
* :func:`format_table` / :func:`method_label` / :func:`write_results`: ``results.md``,
  ``results.json`` and ``accuracy.png``.
* :func:`compare_sizes` / :func:`compare_vit_depths`: descendants of several sizes (or ViT depths)
  vs scratch and weight selection of the same size; :func:`size_rows`, :func:`format_sizes_table`
  and :func:`write_sizes` give their rows, table and files (``sizes.json`` / ``.md`` / ``.png``).

This is what ``examples/few_shot.py`` and the pipeline's few-shot stage run. The methods come from
:mod:`~learngene_hf.fewshot.methods`, the tuning from :mod:`~learngene_hf.fewshot.tuning`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

from ..errors import ConfigError
from ..flops import forward_flops
from ..io import write_json_atomic, write_text_atomic
from ..logs import get_logger
from ..machine import machine_record
from ..stats import mean_ci, paired_difference
from .baselines import inheritance
from .config import DEFAULT_LR_GRID, DEFAULT_VIT_LR_GRID, FewShotConfig
from .methods import DescendantSize, comparison_methods, size_methods, vit_depth_methods
from .runner import Method, as_method, run_episodes
from .tuning import INTEGER_FIELDS, TuningResult, tune_recipe, tune_settings

logger = get_logger(__name__)


def _with_recipe_values(method: Method, values: dict[str, Any]) -> Method:
    """``method`` training with the recipe ``values`` (chosen by tuning, or a one-value grid):
    ``lr`` becomes its lr, every other field goes into its recipe overrides."""
    lr = float(values["lr"]) if "lr" in values else method.lr
    recipe = {**(method.recipe or {}), **{k: v for k, v in values.items() if k != "lr"}}
    return replace(method, lr=lr, recipe=recipe or None)


@dataclass
class _Tuned:
    """What tuning found, by method name: ``searches`` (per fine-tuned method, lr -> best mean
    accuracy; per frozen-feature one, settings -> mean accuracy), ``tunings`` (the
    :class:`~learngene_hf.fewshot.tuning.TuningResult` of every tuned fine-tuned method) and
    ``settings_edges`` (frozen-feature settings still at an edge of their widened grid)."""

    searches: dict[str, dict[str, float] | None] = field(default_factory=dict)
    tunings: dict[str, TuningResult] = field(default_factory=dict)
    settings_edges: dict[str, list[str]] = field(default_factory=dict)


def _tune_methods(
    methods: Sequence[Method],
    tune_lr_episodes: Sequence[Any],
    grid: dict[str, Sequence[float]],
    cfg: FewShotConfig,
    accelerator: Any | None,
    seed: int,
    progress: bool,
    widen: int,
) -> tuple[list[Method], _Tuned]:
    """Every method with its tuned values (in order): the recipe values of fine-tuned methods from
    ``grid`` (:func:`~learngene_hf.fewshot.tuning.tune_recipe`; a grid of one value per field is
    applied without tuning runs), the fit settings of frozen-feature ones from their ``search``
    (:func:`~learngene_hf.fewshot.tuning.tune_settings`); methods with nothing to tune as they are."""
    found = _Tuned()
    tuned = []
    ep0 = tune_lr_episodes[0]
    tune_ways = len(ep0.classes)
    tune_shots = int(ep0.support_labels.shape[0]) // max(tune_ways, 1)
    grid_text = "; ".join(
        f"{name} " + ", ".join(f"{v:g}" for v in sorted({float(x) for x in values})) for name, values in grid.items()
    )
    fixed = {name: sorted({float(v) for v in values}) for name, values in grid.items()}
    fixed = {name: (int(v[0]) if name in INTEGER_FIELDS else v[0]) for name, v in fixed.items() if len(v) == 1}
    for i, method in enumerate(methods, start=1):
        if method.fine_tunes and len(fixed) == len(grid):  # one value per field: nothing to choose, nothing to run
            tuned.append(_with_recipe_values(method, fixed))
            continue
        if method.fine_tunes:
            what = (
                f"{'lr' if list(grid) == ['lr'] else 'recipe'} tuning {i}/{len(methods)}: {method.name}, "
                f"{tune_ways}-way {tune_shots}-shot, {grid_text} on {len(tune_lr_episodes)} open-world episodes"
            )
        elif method.search:
            values = "; ".join(
                f"{k} {', '.join(f'{v:g}' if isinstance(v, float) else str(v) for v in grid)}"
                for k, grid in method.search.items()
            )
            what = (
                f"tuning {i}/{len(methods)}: {method.name}, {tune_ways}-way {tune_shots}-shot, {values} "
                f"on {len(tune_lr_episodes)} open-world episodes"
            )
        else:
            tuned.append(method)  # nothing to tune (e.g. nearest centroid)
            continue
        if not progress:
            logger.info(what)
        if method.fine_tunes:
            result = tune_recipe(
                method.builder,
                tune_lr_episodes,
                grid,
                method.config(cfg),
                accelerator,
                seed + 1,
                progress=progress,
                widen=widen,
                desc=what,
            )
            found.tunings[method.name] = result
            if "lr" in result.chosen:
                by_lr: dict[str, float] = {}
                for row in result.means:
                    key = f"{row['lr']:g}"
                    by_lr[key] = max(by_lr.get(key, 0.0), row["accuracy"])
                found.searches[method.name] = by_lr
            tuned.append(_with_recipe_values(method, result.chosen))
        else:
            best_settings, means, edge = tune_settings(
                method, tune_lr_episodes, cfg, accelerator, seed + 1, progress=progress, desc=what, widen=widen
            )
            found.searches[method.name] = means
            found.settings_edges[method.name] = edge
            tuned.append(replace(method, settings=best_settings))
    return tuned, found


def _summarise(
    method: Method,
    rows: list[dict[str, Any]],
    cfg: FewShotConfig,
    ways: int,
    scratch: list[float] | None,
    found: _Tuned,
    rows_shape: Sequence[int],
) -> dict[str, Any]:
    """The results entry of one method: its recipe or fit settings and their tuning, its accuracies
    over ``rows`` with mean and 95% CI, its parameters (and those inherited, built once more under a
    forked RNG) and the paired difference to ``scratch``'s accuracies (unless it is scratch)."""
    accs = [r["accuracy"][method.name] for r in rows]
    mean, half = mean_ci(accs)
    tunings = found.tunings
    entry: dict[str, Any] = {
        "description": method.description,
        "same_as": method.same_as,
        "kind": "fine-tuned" if method.fine_tunes else "frozen features",
        "lr": float(method.config(cfg).lr) if method.fine_tunes else None,
        "lr_search": found.searches.get(method.name) if method.fine_tunes else None,
        "settings": dict(method.settings) or None,
        "settings_search": None if method.fine_tunes else found.searches.get(method.name),
        "recipe": (
            {k: v for k, v in method.config(cfg).to_dict().items() if k not in ("device", "eval_batch_size")}
            if method.fine_tunes
            else None
        ),
        "tuning": tunings[method.name].to_dict() if method.name in tunings else None,
        "edge_of_grid": (
            list(tunings[method.name].edge) if method.name in tunings else found.settings_edges.get(method.name, [])
        ),
        "accuracies": accs,
        "mean": mean,
        "ci95": _finite(half),
    }
    with torch.random.fork_rng(devices=[]):
        model = method.builder(ways)
    inherited = inheritance(model)
    entry["parameters"] = sum(p.numel() for p in model.parameters())  # needed at inference
    entry["flops_per_image"] = forward_flops(model, tuple(rows_shape))
    entry["inherited_parameters"] = inherited["parameters"]
    entry["inherited_bytes"] = inherited["bytes"]
    if scratch is not None and method.name != "scratch":
        d_mean, d_half = paired_difference(accs, scratch)
        entry["diff_vs_scratch"] = {"mean": d_mean, "ci95": _finite(d_half)}
    return entry


def compare_methods(
    learngene: Any,
    episodes: Sequence[Any],
    cfg: FewShotConfig,
    *,
    methods: Sequence[Method] | None = None,
    compare: bool = False,
    collective_run: str | None = None,
    tune_lr_episodes: Sequence[Any] | None = None,
    lr_grid: Sequence[float] = DEFAULT_LR_GRID,
    tune_grid: dict[str, Sequence[float]] | None = None,
    widen: int = 1,
    accelerator: Any | None = None,
    seed: int = 0,
    progress: bool = True,
    **individual_overrides: Any,
) -> dict[str, Any]:
    """Run the learngene, scratch (and with ``compare`` the other blocks) on identical episodes.

    With ``tune_lr_episodes`` (open-world episodes, never novel ones) every method, scratch
    included, first gets its own recipe values picked by :func:`~learngene_hf.fewshot.tuning.tune_recipe`
    from ``tune_grid`` (default ``{"lr": lr_grid}``; e.g. ``{"lr": [...], "steps": [...]}``), the grid
    widened up to ``widen`` times where the best value sits at its edge. A grid of one value per field
    is applied to every fine-tuned method without tuning runs (the frozen-feature baselines are
    still tuned, by :func:`~learngene_hf.fewshot.tuning.tune_settings`, their grids widened the same
    way: their fits are cheap). Returns the results dict that ``results.json`` holds: ``setting``,
    ``config``, ``learngene``, ``methods`` (per method: ``description``, ``lr``, ``lr_search``,
    ``recipe`` (the values it trained with),
    ``tuning`` (grid, means, chosen values, ``edge``), ``edge_of_grid``, ``parameters``,
    ``accuracies`` (episode order), ``mean``, ``ci95``, ``diff_vs_scratch`` {``mean``,
    ``ci95``}) and ``episodes`` (per episode: ``index``, ``seed``, ``classes``, ``accuracy`` per
    method).
    """
    if methods is None:
        methods = comparison_methods(learngene, compare=compare, collective_run=collective_run, **individual_overrides)
    methods = [as_method(m) for m in methods]
    if not episodes:
        raise ConfigError("compare_methods needs at least one episode.")
    if cfg.total_steps(int(episodes[0].support_labels.shape[0])) <= 0 and not cfg.lp_init:
        raise ConfigError(
            f"steps={cfg.steps}, epochs={cfg.epochs} trains nothing: the table would compare "
            "untrained models. Give at least one step (--steps 1 or more), or fit the classifier first (--lp-init)."
        )
    if len(episodes[0].classes) < 2:
        raise ConfigError(
            f"{len(episodes[0].classes)}-way episodes score 100% by construction; use at least 2 ways (--ways 2)."
        )
    found = _Tuned()
    if tune_lr_episodes:
        grid = dict(tune_grid) if tune_grid else {"lr": list(lr_grid)}
        methods, found = _tune_methods(methods, tune_lr_episodes, grid, cfg, accelerator, seed, progress, widen)
    rows = run_episodes(methods, episodes, cfg, accelerator, progress, seed)
    ways = len(episodes[0].classes)
    scratch = [r["accuracy"]["scratch"] for r in rows] if any(m.name == "scratch" for m in methods) else None
    shape = tuple(episodes[0].query_images.shape[1:])
    summary: dict[str, Any] = {m.name: _summarise(m, rows, cfg, ways, scratch, found, shape) for m in methods}
    strongest = add_strongest_baseline(summary)
    shots = int(episodes[0].support_labels.shape[0]) // max(ways, 1)
    queries = int(episodes[0].query_labels.shape[0]) // max(ways, 1)
    lg = learngene.config
    return {
        "setting": {
            "episodes": len(rows),
            "ways": ways,
            "shots": shots,
            "queries": queries,
            "seed": seed,
            "lr_tuned_on": "open-world classes" if tune_lr_episodes else None,
            "lr_tuning_episodes": len(tune_lr_episodes or []),
            "recipe": cfg.recipe,
            "tune_grid": ((dict(tune_grid) if tune_grid else {"lr": list(lr_grid)}) if tune_lr_episodes else None),
        },
        "config": cfg.to_dict(),
        "machine": machine_record(accelerator, device=cfg.resolved_device()),
        "learngene": {
            "layers": lg.layer_names,
            "position": lg.position,
            "source": dict(lg.source or {}),
            "sizes": dict(lg.sizes or {}),
        },
        "methods": summary,
        "strongest_baseline": strongest,
        "episodes": rows,
    }


def add_strongest_baseline(methods: dict[str, dict[str, Any]]) -> dict[str, Any] | None:
    """Find the strongest method that inherits nothing and add every other method's paired
    difference to it.

    Among the methods whose ``inherited_parameters`` is 0 (scratch, classifiers on random
    features...), the one with the best mean accuracy is the baseline a learngene has to beat.
    Every other method gets ``diff_vs_strongest_baseline`` = {``baseline``, ``mean``, ``ci95``}
    (paired over the episodes, in accuracy units). Returns ``{"name", "mean", "candidates"}``, or
    ``None`` when no method inherits nothing.
    """
    candidates = [name for name, m in methods.items() if int(m.get("inherited_parameters", 0) or 0) == 0]
    if not candidates:
        return None
    best = max(candidates, key=lambda name: methods[name]["mean"])
    reference = methods[best]["accuracies"]
    for name, m in methods.items():
        if name == best:
            continue
        d_mean, d_half = paired_difference(m["accuracies"], reference)
        m["diff_vs_strongest_baseline"] = {"baseline": best, "mean": d_mean, "ci95": _finite(d_half)}
    return {"name": best, "mean": methods[best]["mean"], "candidates": candidates}


def _finite(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


def method_label(name: str, entry: dict[str, Any]) -> str:
    """``name``, plus the ``--compare`` blocks it covers: ``"learngene (= first_3, worst_3)"``."""
    return f"{name} (= {', '.join(entry['same_as'])})" if entry.get("same_as") else name


def format_table(results: dict[str, Any]) -> str:
    """A markdown table: method, lr (fine-tuned) or fit settings (frozen features), mean accuracy +/- 95%
    CI, paired difference to scratch (points), inherited / all parameters (all = what inference
    needs) and inherited bytes."""
    s = results["setting"]
    lines = [
        f"{s['ways']}-way {s['shots']}-shot, {s['queries']} queries per class, {s['episodes']} episodes "
        f"(accuracy in %, mean +/- 95% CI)",
        "",
        "| method | lr | accuracy | vs scratch | vs strongest baseline | inherited / all parameters "
        "| inherited bytes |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]

    def pm(mean: float, half: float | None) -> str:
        return f"{100 * mean:.1f} +/- {100 * half:.1f}" if half is not None else f"{100 * mean:.1f}"

    edges = []
    for name, m in results["methods"].items():
        diff = m.get("diff_vs_scratch")
        vs = ("+" if diff["mean"] >= 0 else "") + pm(diff["mean"], diff["ci95"]) if diff else "-"
        label = method_label(name, m)
        sizes = f"{m.get('inherited_parameters', 0):,} / {m['parameters']:,}"
        fit = _fit_label(m)
        if m.get("edge_of_grid"):
            fit += " (edge)"
            chosen = (m.get("tuning") or {}).get("chosen") or m.get("settings") or {}
            edges.append(
                f"{name}: "
                + ", ".join(
                    f"{f}={chosen.get(f, '?'):g}" if isinstance(chosen.get(f), (int, float)) else f
                    for f in m["edge_of_grid"]
                )
            )
        strong = m.get("diff_vs_strongest_baseline")
        vs_strong = ("+" if strong["mean"] >= 0 else "") + pm(strong["mean"], strong["ci95"]) if strong else "-"
        lines.append(
            f"| {label} | {fit} | {pm(m['mean'], m['ci95'])} | {vs} | {vs_strong} | {sizes} | "
            f"{m.get('inherited_bytes', 0):,} |"
        )
    best = results.get("strongest_baseline")
    if best:
        lines += [
            "",
            f"vs strongest baseline: paired difference in points to {best['name']}, the best of the methods "
            f"that inherit nothing ({', '.join(best['candidates'])}).",
        ]
    if edges:
        lines += [
            "",
            "(edge): the chosen value is the smallest or largest of its tuning grid, even after widening; "
            "a wider grid may do better (" + "; ".join(edges) + ").",
        ]
    return "\n".join(lines)


def _fit_label(entry: dict[str, Any]) -> str:
    """The lr of a fine-tuned method, or the fit settings of a frozen-feature one (``l2=0.01``)."""
    if entry.get("lr") is not None:
        return f"{entry['lr']:g}"
    settings = entry.get("settings") or {}
    return ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in settings.items()) or "-"


def write_results(results: dict[str, Any], output_dir: str, plot: bool = True) -> dict[str, str]:
    """Write ``results.json``, ``results.md`` (the table) and ``accuracy.png`` (atomically) to
    ``output_dir``; returns their paths."""
    out = Path(output_dir)
    paths = {
        "results": str(write_json_atomic(out / "results.json", results)),
        "table": str(write_text_atomic(out / "results.md", format_table(results) + "\n")),
    }
    if plot:
        from ..plots.accuracy import plot_method_accuracy

        labels = {name: method_label(name, m) for name, m in results["methods"].items()}
        paths["plot"] = plot_method_accuracy(results, out / "accuracy.png", labels=labels)
    return paths


def size_rows(results: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per (size, method) of a :func:`compare_sizes` results dict: ``size``, ``method``,
    ``name``, ``parameters`` and ``flops_per_image`` (at inference), ``inherited_parameters``, ``inherited_bytes``,
    ``mean``, ``ci95``, ``diff_vs_scratch`` (paired, against the scratch model of that size) and
    ``diff_vs_strongest`` (paired, against the best method of that size that inherits nothing,
    named in ``baseline``; ``None`` for that method itself)."""

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
        row = {
            "size": size,
            "method": kind,
            "name": name,
            "parameters": m["parameters"],
            "flops_per_image": m.get("flops_per_image"),
            "inherited_parameters": m.get("inherited_parameters", 0),
            "inherited_bytes": m.get("inherited_bytes", 0),
            "mean": m["mean"],
            "ci95": m["ci95"],
            "lr": m.get("lr"),
            "settings": m.get("settings"),
            "diff_vs_scratch": None,
            "diff_vs_strongest": None,
        }
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
    episodes (:func:`compare_methods` with :func:`~learngene_hf.fewshot.methods.size_methods`; every lr
    picked on ``tune_lr_episodes``, open-world episodes, when given). The results dict gains
    ``sizes`` (:func:`size_rows`)."""
    if not episodes:
        raise ConfigError("compare_sizes needs at least one episode.")
    methods = size_methods(learngene, collective, sizes, **individual_overrides)
    run = {"tune_lr_episodes": tune_lr_episodes, "accelerator": accelerator, "seed": seed, "progress": progress}
    return _with_size_rows(compare_methods(learngene, episodes, cfg, methods=methods, lr_grid=lr_grid, **run))


def compare_vit_depths(
    learngene: Any,
    plain_collective: nn.Module | None,
    episodes: Sequence[Any],
    cfg: FewShotConfig,
    depths: Sequence[int],
    *,
    classifiers: Sequence[str] = ("logreg",),
    widths: Sequence[int | None] = (None,),
    tune_lr_episodes: Sequence[Any] | None = None,
    lr_grid: Sequence[float] | None = None,
    accelerator: Any | None = None,
    seed: int = 0,
    progress: bool = True,
) -> dict[str, Any]:
    """ViT descendants of several depths from a linear-expansion learngene vs scratch, weight
    selection and frozen random features of the same depth (and embedding width, for each of ``widths``;
    ``None``: the learngene's), on the same episodes
    (:func:`compare_methods` with :func:`~learngene_hf.fewshot.methods.vit_depth_methods`; learning rates
    and L2 strengths picked on ``tune_lr_episodes``, open-world episodes, when given). The
    results dict gains ``sizes`` (:func:`size_rows`, one size per depth). ``lr_grid`` defaults to
    :data:`~learngene_hf.fewshot.config.DEFAULT_VIT_LR_GRID` (not the VGG-centred ``DEFAULT_LR_GRID``)."""
    if not episodes:
        raise ConfigError("compare_vit_depths needs at least one episode.")
    methods = vit_depth_methods(learngene, plain_collective, depths, classifiers=classifiers, widths=widths)
    lr_grid = DEFAULT_VIT_LR_GRID if lr_grid is None else lr_grid
    run = {"tune_lr_episodes": tune_lr_episodes, "accelerator": accelerator, "seed": seed, "progress": progress}
    return _with_size_rows(compare_methods(learngene, episodes, cfg, methods=methods, lr_grid=lr_grid, **run))


def _with_size_rows(results: dict[str, Any]) -> dict[str, Any]:
    """``results`` with ``sizes``: one row per (size, method) (:func:`size_rows`)."""
    results["sizes"] = size_rows(results)
    return results


def format_sizes_table(rows: Sequence[dict[str, Any]]) -> str:
    """Markdown: size, method, parameters, inherited parameters and bytes, accuracy, vs same-size scratch."""
    lines = [
        "| size | method | parameters | inherited parameters | inherited bytes | accuracy (%) "
        "| vs scratch of that size |",
        "| --- | --- | ---: | ---: | ---: | --- | --- |",
    ]

    def pm(mean: float, half: float | None) -> str:
        return f"{100 * mean:.1f} +/- {100 * half:.1f}" if half is not None else f"{100 * mean:.1f}"

    for r in rows:
        d = r.get("diff_vs_scratch")
        vs = ("+" if d["mean"] >= 0 else "") + pm(d["mean"], d["ci95"]) if d else "-"
        lines.append(
            f"| {r['size']} | {r['method']} | {r['parameters']:,} | {r['inherited_parameters']:,} | "
            f"{r['inherited_bytes']:,} | {pm(r['mean'], r['ci95'])} | {vs} |"
        )
    return "\n".join(lines)


def write_sizes(results: dict[str, Any], output_dir: str, plot: bool = True) -> dict[str, str]:
    """Write ``sizes.json`` (the :func:`compare_sizes` results), ``sizes.md`` (the table) and
    ``sizes.png`` (:func:`~learngene_hf.plots.sizes.plot_descendant_sizes`) atomically to
    ``output_dir``; returns their paths."""
    out = Path(output_dir)
    s = results["setting"]
    title = f"{s['ways']}-way {s['shots']}-shot, {s['episodes']} episodes"
    paths = {
        "results": str(write_json_atomic(out / "sizes.json", results)),
        "table": str(
            write_text_atomic(
                out / "sizes.md",
                f"{title} (accuracy in %, mean +/- 95% CI)\n\n" + format_sizes_table(results["sizes"]) + "\n",
            )
        ),
    }
    if plot:
        from ..plots.sizes import plot_descendant_sizes

        paths["plot"] = plot_descendant_sizes(results["sizes"], out / "sizes.png", title=title, ways=s["ways"])
    return paths
