"""Tuning on open-world episodes: recipe values of fine-tuned methods, fit settings of the others.

* :func:`tune_recipe` (and :func:`tune_lr`, the lr alone): the recipe values (``lr``, ``steps``,
  ``weight_decay``...) with the best mean query accuracy, each grid widened where the best value
  sits at its edge; :class:`TuningResult` holds what was tried and chosen.
* :func:`tune_settings`: the same for the fit settings of a frozen-feature baseline (L2 strengths).
* :func:`tuning_episodes`: the open-world episodes to tune on (never the novel episodes' draws).

Every grid point runs through :func:`~learngene_hf.fewshot.runner.run_episodes`;
:func:`~learngene_hf.fewshot.compare.compare_methods` tunes every method with these.
"""

from __future__ import annotations

import itertools
from dataclasses import asdict, dataclass, replace
from typing import Any, Callable, Sequence

from ..data import sample_episodes
from ..errors import ConfigError
from ..logs import get_logger
from ..models.individual import IndividualModel
from .config import DEFAULT_LR_GRID, FewShotConfig
from .runner import Method, run_episodes

logger = get_logger(__name__)


@dataclass
class TuningResult:
    """What :func:`tune_recipe` tried and chose.

    ``grid``: the values tried per field (after widening); ``means``: one row per combination
    tried, ``{field: value, ..., "accuracy": mean}``; ``chosen``: the best combination;
    ``edge``: the fields whose chosen value is still the smallest or largest of their grid after
    widening (a wider grid could do better); ``widened``: the values added by widening.
    """

    grid: dict[str, list[float]]
    means: list[dict[str, float]]
    chosen: dict[str, float]
    accuracy: float
    edge: list[str]
    widened: dict[str, list[float]]
    episodes: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


#: Recipe fields that hold counts: tuned values are rounded to integers.
INTEGER_FIELDS = frozenset({"steps", "epochs", "lp_steps", "warmup_steps", "batch_size", "crop_padding"})


def _grid_step(values: list[float], upward: bool, integer: bool) -> float:
    """The next value beyond the edge of a sorted grid: the ratio of the last two values (geometric
    grids), or their difference when the edge is 0."""
    a, b = (values[-2], values[-1]) if upward else (values[1], values[0])
    if a > 0 and b > 0:
        nxt = b * (b / a)
    else:
        nxt = b + (b - a)
    if integer:
        nxt = int(round(nxt))
        if nxt == b:
            nxt = b + (1 if upward else -1)
    return nxt


def _beyond_edge(values: list[float], chosen: float, integer: bool) -> float | None:
    """The next value past the edge of the sorted grid ``values`` at which ``chosen`` sits
    (:func:`_grid_step`, in its direction); ``None`` when ``chosen`` lies inside the grid or the
    grid has fewer than two values."""
    if len(values) < 2 or chosen not in (values[0], values[-1]):
        return None
    return _grid_step(values, chosen == values[-1], integer)


def _recipe_grid(grid: dict[str, Sequence[float]], cfg: FewShotConfig) -> dict[str, list[float]]:
    """``grid`` as sorted value lists, every field checked to be a numeric recipe field."""
    if not grid:
        raise ConfigError("tune_recipe needs a non-empty grid and at least one open-world episode.")
    known = set(cfg.to_dict())
    values: dict[str, list[float]] = {}
    for name in grid:
        if name not in known or name in ("recipe", "device", "schedule", "augment", "bn_reestimate"):
            raise ConfigError(
                f"Cannot tune {name!r}: tune numeric FewShotConfig fields such as lr, steps, weight_decay."
            )
        values[name] = sorted({float(v) for v in grid[name]})
        if not values[name]:
            raise ConfigError(f"The grid of {name!r} is empty; give at least one value.")
    return values


def tune_recipe(
    builder: Callable[[int], IndividualModel],
    open_world_episodes: Sequence[Any],
    grid: dict[str, Sequence[float]],
    cfg: FewShotConfig | None = None,
    accelerator: Any | None = None,
    seed: int = 0,
    progress: bool = False,
    widen: int = 1,
    desc: str | None = None,
) -> TuningResult:
    """Pick the recipe values (any numeric :class:`FewShotConfig` fields: ``lr``, ``steps``,
    ``weight_decay``...) with the best mean query accuracy on ``open_world_episodes``.

    Every combination of ``grid`` runs on the same episodes. When the best value of a field sits
    at the edge of its grid, the grid is widened by one value in that direction (geometric step)
    and the new combinations run, up to ``widen`` times per field; a best value still at the edge
    is reported in ``edge``. Never pass novel-class episodes here: that would tune on the test
    classes. Ties go to the smaller values (fewer steps, smaller lr).
    """
    cfg = cfg or FewShotConfig()
    if not open_world_episodes:
        raise ConfigError("tune_recipe needs a non-empty grid and at least one open-world episode.")
    values = _recipe_grid(grid, cfg)
    fields = list(values)
    integer = {name: name in INTEGER_FIELDS for name in fields}
    scores: dict[tuple, float] = {}

    def key_of(combo: dict[str, float]) -> tuple:
        return tuple(combo[name] for name in fields)

    def run(combos: list[dict[str, float]]) -> None:
        todo = [c for c in combos if key_of(c) not in scores]
        if not todo:
            return
        methods = [
            Method(
                "|".join(f"{k}={v:g}" for k, v in c.items()),
                builder,
                recipe={k: (int(v) if integer[k] else float(v)) for k, v in c.items()},
            )
            for c in todo
        ]
        rows = run_episodes(methods, open_world_episodes, cfg, accelerator, progress, seed, desc=desc)
        for c, m in zip(todo, methods):
            scores[key_of(c)] = sum(r["accuracy"][m.name] for r in rows) / len(rows)

    def product(vals: dict[str, list[float]]) -> list[dict[str, float]]:
        combos: list[dict[str, float]] = [{}]
        for name in fields:
            combos = [{**c, name: v} for c in combos for v in vals[name]]
        return combos

    def best() -> tuple[dict[str, float], float]:
        key = max(scores, key=lambda k: (scores[k], tuple(-v for v in k)))
        return dict(zip(fields, key)), scores[key]

    run(product(values))
    widened: dict[str, list[float]] = {name: [] for name in fields}
    rounds = {name: 0 for name in fields}
    while True:
        chosen, _ = best()
        grow = None
        for name in fields:
            if rounds[name] >= widen:
                continue
            nxt = _beyond_edge(values[name], chosen[name], integer[name])
            if nxt is None or (nxt <= 0 and name != "weight_decay" and name != "lp_steps"):
                continue
            grow = (name, float(max(nxt, 0)))
            break
        if grow is None:
            break
        name, value = grow
        rounds[name] += 1
        if value in values[name]:
            continue
        values[name] = sorted([*values[name], value])
        widened[name].append(value)
        run(product(values))
    chosen, accuracy = best()
    edge = [name for name in fields if len(values[name]) > 1 and chosen[name] in (values[name][0], values[name][-1])]
    means = [{**dict(zip(fields, k)), "accuracy": v} for k, v in sorted(scores.items())]
    chosen = {k: (int(v) if integer[k] else v) for k, v in chosen.items()}
    return TuningResult(
        grid=values,
        means=means,
        chosen=chosen,
        accuracy=accuracy,
        edge=edge,
        widened={k: v for k, v in widened.items() if v},
        episodes=len(open_world_episodes),
    )


def tune_lr(
    builder: Callable[[int], IndividualModel],
    open_world_episodes: Sequence[Any],
    grid: Sequence[float] = DEFAULT_LR_GRID,
    cfg: FewShotConfig | None = None,
    accelerator: Any | None = None,
    seed: int = 0,
    progress: bool = False,
    desc: str | None = None,
) -> tuple[float, dict[float, float]]:
    """Pick the learning rate with the best mean query accuracy on ``open_world_episodes``
    (:func:`tune_recipe` on ``lr`` alone, without widening).

    Never pass novel-class episodes here: that would tune on the test classes. Returns
    ``(best_lr, {lr: mean accuracy})``; ties go to the smaller learning rate.
    """
    grid = sorted({float(lr) for lr in grid})
    if not grid or not open_world_episodes:
        raise ConfigError("tune_lr needs a non-empty lr grid and at least one open-world episode.")
    result = tune_recipe(
        builder, open_world_episodes, {"lr": grid}, cfg, accelerator, seed, progress, widen=0, desc=desc
    )
    return float(result.chosen["lr"]), {row["lr"]: row["accuracy"] for row in result.means}


def tuning_episodes(
    data: Any, open_world: Sequence[int], num_episodes: int, ways: int, shots: int, queries: int, seed: int = 0
) -> list[Any]:
    """Open-world episodes for :func:`tune_lr`, drawn with seed ``seed + 10_000`` (never the novel
    episodes' draws). ``ways`` is capped at the number of open-world classes, as the selection
    probes do; fewer than 2 open-world classes raise :class:`ConfigError` naming them."""
    open_world = [int(c) for c in open_world]
    if len(open_world) < 2:
        raise ConfigError(
            f"lr tuning needs at least 2 open-world classes, the split has {len(open_world)} "
            f"({open_world}); give more with --open-world-classes, or leave --tune-lr off."
        )
    tune_ways = min(int(ways), len(open_world))
    if tune_ways < ways:
        logger.info(
            f"lr tuning: {tune_ways}-way open-world episodes (only {len(open_world)} open-world classes; "
            f"the novel episodes stay {ways}-way)"
        )
    return sample_episodes(
        data, open_world, num_episodes, tune_ways, shots, queries, seed=seed + 10_000, role="open_world"
    )


def tune_settings(
    method: Method,
    open_world_episodes: Sequence[Any],
    cfg: FewShotConfig | None = None,
    accelerator: Any | None = None,
    seed: int = 0,
    progress: bool = False,
    desc: str | None = None,
    widen: int = 1,
) -> tuple[dict[str, Any], dict[str, float], list[str]]:
    """Pick the fit settings of a (non-fine-tuned) method from ``method.search`` on open-world episodes.

    Every combination of the searched values is run on the same episodes. When the best value of a
    numeric setting (a grid of at least two positive numbers, e.g. the L2 strengths) is the
    smallest or largest of its grid, the grid is widened by one geometric step in that direction
    and the new combinations run, up to ``widen`` times per setting, as :func:`tune_recipe` does
    for recipe fields: an under-regularised or over-regularised baseline would flatter the
    learngene. Returns ``(best settings, {"name=value,...": mean accuracy}, settings whose best
    value is still at an edge of the widened grid)``. Ties go to the combination tried first
    (grids list the stronger regularisation last, e.g. L2 strengths from small to large: ties keep
    the smaller). Never pass novel-class episodes here.
    """
    cfg = cfg or FewShotConfig()
    search = {k: list(v) for k, v in (method.search or {}).items()}
    if not search or not all(search.values()) or not open_world_episodes:
        raise ConfigError("tune_settings needs a method with a non-empty search and at least one open-world episode.")
    keys = list(search)

    def label(combo: dict[str, Any]) -> str:
        return ",".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in combo.items())

    means: dict[str, float] = {}
    tried: dict[str, dict[str, Any]] = {}

    def run() -> None:
        combos = [dict(zip(keys, values)) for values in itertools.product(*(search[k] for k in keys))]
        todo = [c for c in combos if label(c) not in means]
        variants = [replace(method, name=label(c), settings={**method.settings, **c}) for c in todo]
        rows = run_episodes(variants, open_world_episodes, cfg, accelerator, progress, seed, desc=desc)
        for c in todo:
            means[label(c)] = sum(r["accuracy"][label(c)] for r in rows) / len(rows)
            tried[label(c)] = c

    def best() -> dict[str, Any]:
        order = list(means)  # the order tried
        return tried[order[max(range(len(order)), key=lambda i: (means[order[i]], -i))]]

    def is_number(v: Any) -> bool:
        return isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0

    numeric = [k for k in keys if len(search[k]) >= 2 and all(is_number(v) for v in search[k])]
    run()
    rounds = dict.fromkeys(numeric, 0)
    while True:
        chosen, grow = best(), None
        for k in numeric:
            values = sorted(search[k])
            integer = all(isinstance(v, int) for v in values)
            value = _beyond_edge([float(v) for v in values], chosen[k], integer) if rounds[k] < widen else None
            if value is None:
                continue
            rounds[k] += 1
            if value > 0 and value not in values:
                grow = (k, int(value) if integer else float(value))
                break
        if grow is None:
            break
        search[grow[0]].append(grow[1])
        run()
    chosen = best()
    edge = [k for k in numeric if chosen[k] in (min(search[k]), max(search[k]))]
    return {**method.settings, **chosen}, means, edge
