"""Which conv layers should become the learngene: criteria, block ranking and selection.

Every criterion turns a collective run's :class:`~learngene_hf.training.record.GradientRecord` into one score
per conv layer, **lower = more stable = better**:

``"paper"``
    The Learngene paper's statistic: the fraction of gradient entries whose magnitude is above an
    absolute threshold (default 5e-10, the paper's CIFAR value), averaged over the epochs of every
    task. It is not scale-free: with BatchNorm after every conv, it mostly tracks gradient scale.
``"relative_activity"``
    A scale-free activity: the effective fraction of active gradient entries,
    ``(mean|g| / rms(g))**2`` per epoch, averaged over tasks. It equals the fraction of non-zero
    entries when the active ones share one magnitude and is unchanged when the gradient is scaled.
``"stability"``
    How much a layer's gradient scale varies across tasks: per task, each layer's RMS gradient is
    divided by the geometric mean over the layers of that task (removing changes of the whole
    network's scale); the score is the coefficient of variation of that ratio across tasks.
``"weight_change"``
    The mean relative weight change ``||W_end - W_start|| / ||W_start||`` per task.

A candidate learngene is a block of ``k`` contiguous conv layers; its score is the mean of its
layers' scores and all blocks are ranked (:func:`rank_blocks`). :func:`select_layers` implements the
``"paper"`` (last ``k`` layers), ``"criterion"`` (best-ranked block) and explicit-list strategies;
:func:`validated_selection` scores the top candidates, the paper's block and the first block by
few-shot probes (a callable supplied by the caller, see
:class:`~learngene_hf.selection.inheritor.Inheritor`) and keeps the best. The result is a
:class:`Selection`, stored JSON-ready in ``LearngeneConfig.selection``. The names (:data:`CRITERIA`,
:data:`STRATEGIES`, the defaults) and :func:`parse_layers` live in the light
:mod:`learngene_hf.selection.config`.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from ..errors import ConfigError
from ..stats import mean_ci
from ..training.record import GradientRecord
from .config import CRITERIA, DEFAULT_CRITERION, DEFAULT_K, PAPER_THRESHOLD, STRATEGIES


def _check_criterion(criterion: str) -> str:
    if criterion not in CRITERIA:
        raise ConfigError(f"Unknown criterion {criterion!r}; choose one of {list(CRITERIA)}.")
    return criterion


def _task_columns(tasks: list[int], from_task: int | None) -> np.ndarray:
    keep = np.array([from_task is None or t >= from_task for t in tasks], dtype=bool)
    if tasks and not keep.any():
        raise ConfigError(f"from_task={from_task} leaves no recorded task (tasks {tasks[0]}..{tasks[-1]}); lower it.")
    return keep


def _nanmean_rows(array: np.ndarray) -> np.ndarray:
    out = np.full(array.shape[0], np.nan)
    for i, row in enumerate(array):
        finite = row[np.isfinite(row)]
        if finite.size:
            out[i] = float(finite.mean())
    return out


def layer_scores(
    record: GradientRecord,
    criterion: str = DEFAULT_CRITERION,
    *,
    threshold: float | None = None,
    from_task: int | None = None,
) -> dict[str, float]:
    """One score per conv layer of ``record`` (``{layer_name: score}``, lower = better).

    Args:
        record: the gradient record of a collective run.
        criterion: one of :data:`CRITERIA` (see the module docstring).
        threshold: the absolute threshold of ``"paper"`` (default :data:`PAPER_THRESHOLD`; it must be
            one of ``record.thresholds``). Ignored by the other criteria.
        from_task: only tasks with id >= ``from_task`` count (the paper reads the record after
            the growth phase). ``None`` = all tasks.

    A layer with no data (e.g. added late and never recorded) scores NaN and ranks last.
    """
    _check_criterion(criterion)
    if not record.layer_names or not record.tasks:
        raise ConfigError("The gradient record is empty: train the collective model (with a GradientRecorder) first.")
    if criterion == "paper":
        names, tasks, array = record.matrix("frac_above", PAPER_THRESHOLD if threshold is None else threshold)
        values = _nanmean_rows(array[:, _task_columns(tasks, from_task)])
    elif criterion == "weight_change":
        names, tasks, array = record.matrix("rel_weight_change")
        values = _nanmean_rows(array[:, _task_columns(tasks, from_task)])
    elif criterion == "relative_activity":
        names, tasks, mean_abs = record.matrix("mean_abs")
        _, _, rms = record.matrix("rms")
        with np.errstate(all="ignore"):
            ratio = np.where(rms > 0, (mean_abs / rms) ** 2, np.nan)
        values = _nanmean_rows(ratio[:, _task_columns(tasks, from_task)])
    else:  # stability
        names, tasks, rms = record.matrix("rms")
        rms = rms[:, _task_columns(tasks, from_task)]
        with np.errstate(all="ignore"):
            logs = np.where(rms > 0, np.log(rms), np.nan)
            column_mean = np.array([np.nanmean(c) if np.isfinite(c).any() else np.nan for c in logs.T])
            normalized = np.exp(logs - column_mean[None, :])
        values = np.full(len(names), np.nan)
        for i, row in enumerate(normalized):
            finite = row[np.isfinite(row)]
            if finite.size >= 2 and finite.mean() > 0:
                values[i] = float(finite.std() / finite.mean())
            elif finite.size == 1:
                values[i] = 0.0
    return {name: float(v) for name, v in zip(names, values)}


def rank_blocks(scores: Sequence[float], k: int = DEFAULT_K) -> list[dict[str, Any]]:
    """Rank every block of ``k`` contiguous layers by the mean of its layers' ``scores``.

    Returns dicts ``{"rank", "layers", "score"}`` best first (lowest score; ties to 10 significant
    digits: the earlier block);
    blocks containing a NaN score come last with ``score`` NaN.
    """
    n = len(scores)
    if not isinstance(k, int) or not 1 <= k <= n:
        raise ConfigError(f"k={k!r} is not a valid block size for {n} conv layers; use 1 <= k <= {n}.")
    blocks = []
    for start in range(n - k + 1):
        part = [float(s) for s in scores[start : start + k]]
        score = float(np.mean(part)) if all(math.isfinite(s) for s in part) else float("nan")
        blocks.append((start, score))
    # scores equal to 10 significant digits are ties (float noise must not decide): the earlier block wins
    blocks.sort(
        key=lambda item: (
            not math.isfinite(item[1]),
            float(f"{item[1]:.10g}") if math.isfinite(item[1]) else 0.0,
            item[0],
        )
    )
    return [{"rank": r + 1, "layers": list(range(s, s + k)), "score": score} for r, (s, score) in enumerate(blocks)]


def paper_block(num_layers: int, k: int = DEFAULT_K) -> list[int]:
    """The paper's choice: the last ``k`` conv layers."""
    if not 1 <= k <= num_layers:
        raise ConfigError(f"k={k} is not a valid block size for {num_layers} conv layers; use 1 <= k <= {num_layers}.")
    return list(range(num_layers - k, num_layers))


def first_block(num_layers: int, k: int = DEFAULT_K) -> list[int]:
    """The first ``k`` conv layers (the input end)."""
    if not 1 <= k <= num_layers:
        raise ConfigError(f"k={k} is not a valid block size for {num_layers} conv layers; use 1 <= k <= {num_layers}.")
    return list(range(k))


@dataclass
class Selection:
    """How the learngene's layers were chosen (JSON-ready through :meth:`to_dict`).

    Attributes:
        layers: chosen conv layer indices (contiguous, increasing).
        strategy: ``"validated"``, ``"criterion"``, ``"paper"`` or ``"layers"``.
        criterion: the criterion used for the ranking (``None`` without a gradient record).
        threshold: the absolute threshold of the ``"paper"`` criterion, else ``None``.
        k: block size.
        layer_names: stable names of all conv layers of the collective model, in order.
        chosen_names: stable names of the chosen layers.
        scores: ``{layer_name: criterion score}`` (lower = better; NaN stored as ``None``).
        ranking: every block, best first (``rank``, ``layers``, ``score``).
        candidates: probed candidates (``layers``, ``origin`` list, ``accuracies``, ``mean``,
            ``ci95``), in probing order; empty unless validated.
        probe: probe settings (classes, episodes, ways, shots, queries, epochs, seed).
        reason: one sentence saying why these layers won.
    """

    layers: list[int]
    strategy: str
    criterion: str | None
    reason: str
    k: int
    layer_names: list[str]
    threshold: float | None = None
    from_task: int | None = None
    scores: dict[str, float | None] = field(default_factory=dict)
    ranking: list[dict[str, Any]] = field(default_factory=list)
    candidates: list[dict[str, Any]] = field(default_factory=list)
    probe: dict[str, Any] = field(default_factory=dict)

    @property
    def chosen_names(self) -> list[str]:
        return [self.layer_names[i] for i in self.layers]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (NaN scores become ``None``)."""
        data = dataclasses.asdict(self)
        data["chosen_names"] = self.chosen_names
        data["scores"] = {n: _finite_or_none(v) for n, v in self.scores.items()}
        data["ranking"] = [{**row, "score": _finite_or_none(row["score"])} for row in self.ranking]
        data["candidates"] = [
            {**c, **{key: _finite_or_none(c[key]) for key in ("mean", "ci95") if key in c}} for c in self.candidates
        ]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Selection":
        known = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        values["scores"] = {n: (float("nan") if v is None else float(v)) for n, v in values.get("scores", {}).items()}
        values["ranking"] = [
            {**row, "score": float("nan") if row.get("score") is None else float(row["score"])}
            for row in values.get("ranking", [])
        ]
        return cls(**values)

    def table(self) -> str:
        """A plain-text table of the layers, their scores and the chosen block (for printing)."""
        chosen = set(self.layers)
        lines = [f"{'idx':>3}  {'layer':<10} {self.criterion or 'score':>18}  chosen"]
        for i, name in enumerate(self.layer_names):
            score = self.scores.get(name)
            text = "-" if score is None or not math.isfinite(score) else f"{score:.6g}"
            lines.append(f"{i:>3}  {name:<10} {text:>18}  {'*' if i in chosen else ''}")
        return "\n".join(lines)


def _finite_or_none(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(float(value)) else float(value)


def _check_explicit(layers: Sequence[int], num_layers: int) -> list[int]:
    try:
        layers = [int(i) for i in layers]
    except (TypeError, ValueError) as err:
        raise ConfigError(f"layers must be a list of conv layer indices, got {layers!r}.") from err
    if not layers:
        raise ConfigError("layers is empty; pass at least one conv layer index, e.g. layers=[0, 1, 2].")
    if any(not 0 <= i < num_layers for i in layers):
        raise ConfigError(
            f"Layer indices {layers} are out of range: the collective model has {num_layers} conv layers "
            f"(0..{num_layers - 1})."
        )
    if layers != list(range(layers[0], layers[0] + len(layers))):
        raise ConfigError(
            f"Learngene layers must be contiguous and increasing, got {layers}; e.g. [{layers[0]}, {layers[0] + 1}]."
        )
    return layers


def _ranking_for(
    record: GradientRecord | None,
    layer_names: Sequence[str],
    criterion: str,
    k: int,
    threshold: float | None,
    from_task: int | None,
) -> tuple[dict[str, float], list[dict[str, Any]]]:
    if record is None:
        return {}, []
    scores = layer_scores(record, criterion, threshold=threshold, from_task=from_task)
    missing = [n for n in layer_names if n not in scores]
    if missing:
        raise ConfigError(
            f"The gradient record has no data for conv layers {missing} of the collective model; "
            "use the record written by the same collective run."
        )
    return scores, rank_blocks([scores[n] for n in layer_names], k)


def select_layers(
    layer_names: Sequence[str],
    record: GradientRecord | None = None,
    strategy: str = "criterion",
    *,
    criterion: str = DEFAULT_CRITERION,
    k: int = DEFAULT_K,
    layers: Sequence[int] | None = None,
    threshold: float | None = None,
    from_task: int | None = None,
) -> Selection:
    """Choose the learngene's layers without probes: ``"paper"``, ``"criterion"`` or ``"layers"``.

    Args:
        layer_names: stable names of the collective model's conv layers, in order.
        record: its gradient record (needed by ``"criterion"``; optional otherwise, it adds the
            scores and the ranking to the result).
        strategy: ``"paper"`` (last ``k`` layers), ``"criterion"`` (the best-ranked block) or
            ``"layers"`` (the explicit ``layers``).
        criterion, threshold, from_task: see :func:`layer_scores`.
        k: block size.
        layers: explicit contiguous layer indices (strategy ``"layers"``; passing ``layers`` with
            another strategy is an error).
    """
    n = len(layer_names)
    _check_criterion(criterion)
    if strategy == "validated":
        raise ConfigError(
            "select_layers does not run probes; use Inheritor.select(strategy='validated') or validated_selection()."
        )
    if strategy not in STRATEGIES:
        raise ConfigError(f"Unknown strategy {strategy!r}; choose one of {list(STRATEGIES)}.")
    if layers is not None and strategy != "layers":
        raise ConfigError(
            f"layers={list(layers)} was given with strategy={strategy!r}; use strategy='layers' for an explicit list."
        )
    if strategy == "layers":
        if layers is None:
            raise ConfigError("strategy='layers' needs layers=[...], e.g. layers=[0, 1, 2].")
        chosen = _check_explicit(layers, n)
        k = len(chosen)
    elif strategy == "criterion" and record is None:
        raise ConfigError(
            "strategy='criterion' needs the gradient record of the collective run; pass record=... or "
            "use strategy='paper'."
        )
    if not 1 <= k <= n:
        raise ConfigError(f"k={k} is not a valid block size for {n} conv layers; use 1 <= k <= {n}.")
    scores, ranking = _ranking_for(record, layer_names, criterion, k, threshold, from_task)
    if strategy == "paper":
        chosen = paper_block(n, k)
        reason = f"strategy 'paper': the last {k} conv layers, as in the Learngene paper."
    elif strategy == "criterion":
        best = ranking[0]
        if best["score"] is None or not math.isfinite(best["score"]):
            raise ConfigError(f"No block of {k} layers has a finite '{criterion}' score; check the gradient record.")
        chosen = best["layers"]
        reason = (
            f"strategy 'criterion': the best-ranked block of {k} layers by '{criterion}' (mean score "
            f"{best['score']:.4g}, lower = more stable)."
        )
    else:
        reason = f"strategy 'layers': layers {chosen} were given explicitly."
    return Selection(
        layers=list(chosen),
        strategy=strategy,
        criterion=criterion if record is not None else None,
        reason=reason,
        k=k,
        layer_names=list(layer_names),
        threshold=(
            (PAPER_THRESHOLD if threshold is None else float(threshold))
            if criterion == "paper" and record is not None
            else None
        ),
        from_task=from_task,
        scores=scores,
        ranking=ranking,
    )


def candidate_blocks(
    num_layers: int, ranking: Sequence[dict[str, Any]], k: int = DEFAULT_K, top: int = 2
) -> list[dict[str, Any]]:
    """The validated strategy's candidates: the ``top`` blocks of ``ranking`` (finite scores only),
    the paper's block and the first block, deduplicated, each with the list of its ``origin`` s."""
    candidates: list[dict[str, Any]] = []

    def add(block: list[int], origin: str) -> None:
        for cand in candidates:
            if cand["layers"] == block:
                cand["origin"].append(origin)
                return
        candidates.append({"layers": list(block), "origin": [origin]})

    finite = [row for row in ranking if row["score"] is not None and math.isfinite(row["score"])]
    for row in finite[:top]:
        add(row["layers"], f"criterion #{row['rank']}")
    add(paper_block(num_layers, k), "paper")
    add(first_block(num_layers, k), "first")
    return candidates


def validated_selection(
    layer_names: Sequence[str],
    probe: Callable[[list[int]], Sequence[float]] | None,
    record: GradientRecord | None = None,
    *,
    criterion: str = DEFAULT_CRITERION,
    k: int = DEFAULT_K,
    top: int = 2,
    threshold: float | None = None,
    from_task: int | None = None,
    probe_settings: dict[str, Any] | None = None,
    no_probe_reason: str | None = None,
    size_of: Callable[[list[int]], float] | None = None,
    max_fraction: float | None = None,
) -> Selection:
    """The default strategy: score the candidates (:func:`candidate_blocks`) with ``probe`` and keep
    the best mean accuracy.

    Args:
        probe: ``probe(layers) -> accuracies`` (one per open-world episode, the same episodes for
            every candidate), or ``-> {"accuracies": [...], ...}`` whose other entries (e.g. the
            learning rate the probe picked) are stored with the candidate. ``None`` when no
            open-world data is available: the selection falls back to ``"criterion"`` (or
            ``"paper"`` without a record) and ``no_probe_reason`` is written into the reason.
        top: how many of the best-ranked blocks become candidates.
        probe_settings: recorded as ``Selection.probe`` (classes, episodes, schedule, ...).
        size_of / max_fraction: ``size_of(layers)`` is the share of the collective model's
            parameters a block holds; candidates above ``max_fraction`` are not probed (a
            learngene is meant to be a small part of the collective model). When every candidate
            is too large, the smallest one is probed.
    """
    n = len(layer_names)
    if probe is None:
        fallback = "criterion" if record is not None else "paper"
        sel = select_layers(
            layer_names, record, fallback, criterion=criterion, k=k, threshold=threshold, from_task=from_task
        )
        why = no_probe_reason or "no open-world classes to probe on"
        sel.reason = f"validated selection was not possible ({why}); fell back to {sel.reason}"
        sel.probe = dict(probe_settings or {})
        return sel
    base = select_layers(
        layer_names, record, "paper", criterion=criterion, k=k, threshold=threshold, from_task=from_task
    )
    candidates = candidate_blocks(n, base.ranking, k, top)
    if size_of is not None:
        for cand in candidates:
            cand["parameter_fraction"] = float(size_of(list(cand["layers"])))
        if max_fraction is not None:
            small = [c for c in candidates if c["parameter_fraction"] <= max_fraction]
            if not small:
                small = [min(candidates, key=lambda c: c["parameter_fraction"])]
            for cand in candidates:
                if cand not in small:
                    cand["skipped"] = (
                        f"holds {100 * cand['parameter_fraction']:.0f}% of the collective model's parameters, "
                        f"more than max_fraction={max_fraction:.2f}"
                    )
    probed = [c for c in candidates if "skipped" not in c]
    for cand in probed:
        result = probe(list(cand["layers"]))
        extra = dict(result) if isinstance(result, dict) else {"accuracies": result}
        accuracies = [float(a) for a in extra.pop("accuracies")]
        if not accuracies:
            raise ConfigError(
                "The probe returned no accuracies; give it at least one open-world episode (probe_episodes >= 1)."
            )
        mean, half = mean_ci(accuracies)
        cand.update(extra, accuracies=accuracies, mean=float(mean), ci95=float(half))
    best = max(probed, key=lambda c: (c["mean"], -candidates.index(c)))

    def describe(c: dict[str, Any]) -> str:
        outcome = f"skipped, {c['skipped']}" if "skipped" in c else f"{100 * c['mean']:.1f}%"
        return f"{c['layers'][0]}-{c['layers'][-1]} ({'/'.join(c['origin'])}) {outcome}"

    others = ", ".join(describe(c) for c in candidates if c is not best)
    reason = (
        f"strategy 'validated': layers {best['layers'][0]}-{best['layers'][-1]} ({'/'.join(best['origin'])}) had the "
        f"best mean open-world probe accuracy, {100 * best['mean']:.1f}% +/- {100 * best['ci95']:.1f} over "
        f"{len(best['accuracies'])} episodes; other candidates: {others or 'none'}."
    )
    base.strategy = "validated"
    base.layers = list(best["layers"])
    base.reason = reason
    base.candidates = candidates
    base.probe = dict(probe_settings or {})
    return base
