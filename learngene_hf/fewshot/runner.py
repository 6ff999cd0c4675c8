"""Methods over episodes: :class:`Method`, the episode runner and the learngene probes.

* :class:`Method`: one way to get an episode's classifier: a builder, a fit function (``None``:
  fine-tune), recipe overrides and fit settings; :func:`as_method` also takes ``(name, builder, lr)``.
* :func:`run_episodes`: train and score every method on every episode (the descendants stacked where
  they can be, :mod:`~learngene_hf.fewshot.stacked`; episodes spread over ``accelerate`` processes),
  one row per episode.
* :func:`probe_learngene` / :func:`learngene_probe`: quick few-shot probes of a learngene (or of
  scratch) over episodes; the Inheritor's validated selection runs them on open-world episodes.

Tuning (:mod:`~learngene_hf.fewshot.tuning`) and the comparison (:mod:`~learngene_hf.fewshot.compare`)
run through :func:`run_episodes`; the methods they compare come from :mod:`~learngene_hf.fewshot.methods`.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from torch import nn

from ..errors import ConfigError
from ..models.individual import IndividualModel
from .config import FewShotConfig, descendant_recipe
from .journal import run_jobs
from .stacked import Descendant, descendants_for, run_descendants
from .train import build_individual


@dataclass
class Method:
    """One way to get an episode's classifier: a builder and a fit function (one generic pair).

    ``builder(num_labels)`` returns a fresh model; ``fit(model, support_images, support_labels,
    cfg, seed, **settings)`` trains or fits it on the support set (``None``: fine-tune it with
    :func:`~learngene_hf.fewshot.train.train_individual`); the fitted model is scored with
    :func:`~learngene_hf.fewshot.train.evaluate`. Fine-tuned methods build an ``IndividualModel``;
    frozen-feature baselines build a
    :class:`~learngene_hf.fewshot.baselines.FrozenFeatureClassifier` and fit it with
    :func:`~learngene_hf.fewshot.baselines.fit_frozen_features`.

    ``lr`` overrides ``FewShotConfig.lr`` for fine-tuned methods (``None``: keep it) and
    ``recipe`` any other recipe fields (e.g. ``{"steps": 200}``, tuned values);
    ``settings`` are the fit function's keyword arguments (e.g. ``{"l2": 0.01}``) and ``search``
    the values of those settings to pick from on open-world episodes (e.g. ``{"l2": [...]}``);
    ``description`` goes into the results.
    """

    name: str
    builder: Callable[[int], nn.Module]
    lr: float | None = None
    description: str = ""
    same_as: list[str] | None = None  # --compare blocks this method already covers (not run twice)
    fit: Callable[..., nn.Module] | None = None
    settings: dict[str, Any] = field(default_factory=dict)
    search: dict[str, Sequence[Any]] | None = None
    recipe: dict[str, Any] | None = None  # FewShotConfig fields this method overrides (tuned values)

    @property
    def fine_tunes(self) -> bool:
        """Whether the method fine-tunes its model with :func:`~learngene_hf.fewshot.train.train_individual`
        (``lr`` applies)."""
        return self.fit is None

    def config(self, cfg: FewShotConfig) -> FewShotConfig:
        """``cfg`` with this method's overrides (``recipe``, then ``lr``)."""
        changes = dict(self.recipe or {})
        if self.lr is not None:
            changes["lr"] = float(self.lr)
        return cfg.replace(**changes) if changes else cfg


def as_method(method: Any) -> Method:
    if isinstance(method, Method):
        return method
    try:
        name, builder, lr = method
    except (TypeError, ValueError) as err:
        raise ConfigError(f"A method is a Method or a (name, builder, lr) tuple, got {method!r}.") from err
    return Method(str(name), builder, lr)


def _progress(iterable, enabled: bool, total: int, desc: str):
    if not enabled:
        return iterable  # None when the caller only wants a bar to update
    from tqdm.auto import tqdm

    return tqdm(iterable, total=total, desc=desc, leave=False)


def run_episodes(
    methods: Sequence[Any],
    episodes: Sequence[Any],
    cfg: FewShotConfig,
    accelerator: Any | None = None,
    progress: bool = True,
    seed: int = 0,
    desc: str | None = None,
) -> list[dict[str, Any]]:
    """Train and evaluate every method on every episode; returns one row per episode.

    ``desc`` labels the progress bar (default: the methods and the episodes' ways and shots).

    The episodes are spread over the processes of ``accelerator`` with
    ``accelerator.split_between_processes`` (``None``: this process runs all), and every model is
    trained and scored under ``accelerator.autocast()`` (its mixed precision). Rows are gathered on every process
    (``accelerate.utils.gather_object``) and returned sorted by episode index, each episode exactly
    once: ``{"index", "seed", "classes", "accuracy": {method: float}}``.
    """
    methods = [as_method(m) for m in methods]
    if not methods:
        raise ConfigError("run_episodes needs at least one method.")
    names = [m.name for m in methods]
    if len(set(names)) != len(names):
        raise ConfigError(f"Method names must be distinct, got {names}.")
    rank, world = 0, 1
    if accelerator is not None:
        rank, world = int(accelerator.process_index), int(accelerator.num_processes)
        if accelerator.device.type != "cpu" and cfg.device is None:
            cfg = cfg.replace(device=str(accelerator.device))
    mine = list(episodes)
    autocast = contextlib.nullcontext
    if accelerator is not None:
        with accelerator.split_between_processes(list(episodes)) as share:
            mine = list(share)
        autocast = accelerator.autocast  # accelerate's mixed precision (a no-op for "no")
    if desc is None and episodes:
        ep0 = episodes[0]
        ways = len(ep0.classes)
        desc = f"few-shot {ways}-way {int(ep0.support_labels.shape[0]) // max(ways, 1)}-shot: {', '.join(names)}"
    jobs = descendants_for(methods, mine, seed, cfg)  # stacked unless cfg.stack is False
    bar = _progress(None, progress and rank == 0, len(jobs), desc or "descendants")
    with autocast():  # through the episode journal, when one is open (journal.record_episodes)
        job_methods = [m for m in methods for _ in mine]
        accs = run_jobs(jobs, job_methods, cfg, progress=bar.update if bar is not None else None)
    if bar is not None:
        bar.close()
    rows = []
    for e, ep in enumerate(mine):
        accuracy = {method.name: accs[k * len(mine) + e] for k, method in enumerate(methods)}
        rows.append(
            {
                "index": int(ep.index),
                "seed": int(getattr(ep, "seed", 0)),
                "classes": [int(c) for c in ep.classes],
                "accuracy": accuracy,
            }
        )
    if world > 1:
        from accelerate.utils import gather_object

        rows = list(gather_object(rows))
    rows.sort(key=lambda r: r["index"])
    indices = [r["index"] for r in rows]
    expected = sorted(int(ep.index) for ep in episodes)
    if indices != expected:
        raise ConfigError(
            f"Gathered episodes {indices} differ from the episodes run {expected}; every episode must run exactly once."
        )
    return rows


def probe_learngene(
    learngene: Any | None,
    episodes: Sequence[Any],
    cfg: FewShotConfig,
    seed: int = 0,
    *,
    architecture_of: Any | None = None,
    **individual_overrides: Any,
) -> list[float]:
    """Query accuracy of a fresh individual model per episode (``learngene=None``: from scratch).

    Used by the Inheritor's validated selection on open-world episodes. For a scratch probe pass
    ``architecture_of=some_learngene`` to use that learngene's architecture (otherwise
    ``IndividualConfig(**individual_overrides)``). Same episode and seed -> same fresh layers,
    batches and augmentation for every learngene and for scratch.
    """
    if not episodes:
        raise ConfigError("probe_learngene needs at least one episode.")

    def builder(ways: int) -> IndividualModel:
        return build_individual(learngene, ways, architecture_of=architecture_of, **individual_overrides)

    return run_descendants([Descendant(builder, episode, None, seed) for episode in episodes], cfg)


def learngene_probe(
    learngene: Any,
    episodes: Sequence[Any],
    lr: float,
    epochs: int,
    seed: int = 0,
    device: str | None = None,
    stack: bool = True,
    size: str | None = None,
) -> list[float]:
    """The probe of the Inheritor's validated selection (``Inheritor(..., probe=learngene_probe)``):
    query accuracy per episode of a fresh individual model around ``learngene`` (:func:`probe_learngene`;
    the episodes' descendants train stacked unless ``stack=False``).

    Without ``size`` the probe is a full-size descendant trained ``epochs`` epochs at ``lr`` with the
    paper's schedule; with ``size`` (a descendant size, e.g. ``functools.partial(learngene_probe,
    size="small")``) it is the descendant of that size trained with that size's recipe
    (:func:`~learngene_hf.fewshot.config.descendant_recipe`) at ``lr``; ``epochs`` is then unused."""
    if size is None:  # the probes' schedule: the paper's
        cfg = FewShotConfig.from_recipe("paper", lr=lr, epochs=epochs, device=device, stack=stack)
        return probe_learngene(learngene, episodes, cfg, seed=seed)
    cfg = FewShotConfig.from_recipe("default", **{"lr": lr, **descendant_recipe(size)}, device=device, stack=stack)
    return probe_learngene(learngene, episodes, cfg, seed=seed, size=size)
