"""The Inheritor: choose, extract and share a collective model's learngene.

Typical use::

    from learngene_hf.fewshot.runner import learngene_probe

    inheritor = Inheritor.from_run("runs/collective", probe=learngene_probe)   # model, record, open-world data
    selection = inheritor.select()                          # "validated" by default
    print(selection.table(), selection.reason)
    learngene = inheritor.extract()                         # only the chosen blocks
    inheritor.save_pretrained("runs/learngene")             # + layer_ranking.png
    inheritor.push_to_hub("me/my-learngene")                # pushes the learngene, never the whole model

The settings of :meth:`Inheritor.select` are :class:`~learngene_hf.selection.config.SelectionConfig`
(in the light :mod:`learngene_hf.selection.config`); the ranking and the selection strategies are
in :mod:`learngene_hf.selection.criterion`; the collective run comes from
:func:`learngene_hf.training.run.load_run`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Sequence

from ..artifact.learngene import Learngene
from ..data.episodes import sample_episodes
from ..data.sources import load_arguments, load_tensors
from ..data.tensors import IMAGE_MEAN, IMAGE_STD
from ..errors import ConfigError, DataError
from ..logs import get_logger
from ..models.collective import CollectiveModel
from ..models.vit_collective import ViTCollectiveModel
from ..training.record import GradientRecord
from ..training.run import load_run
from .compact import budget_candidates, distill_learngene, select_under_budget
from .config import DEFAULT_CRITERION, SelectionConfig
from .criterion import Selection, layer_scores, select_layers, validated_selection

logger = get_logger(__name__)

#: The probe settings of :meth:`Inheritor.select`, in the order :meth:`Inheritor._probe` takes them.
PROBE_OPTIONS = ("probe_episodes", "probe_epochs", "probe_ways", "probe_shots", "probe_queries", "probe_lrs", "seed")


class Inheritor:
    """Ranks a collective model's conv layers, selects the learngene and extracts / saves / pushes it.

    Args:
        collective_model: the trained :class:`~learngene_hf.CollectiveModel`.
        record: its :class:`~learngene_hf.training.record.GradientRecord` (needed by the criteria; without
            it only ``"paper"`` / explicit layers / probes of the paper and first blocks work).
        probe_data: labelled images for the validated selection's probes
            (:class:`~learngene_hf.data.ImageTensors`); only ``open_world_classes`` are used.
        open_world_classes: the open-world class ids (never the novel classes).
        source: extra ``LearngeneConfig.source`` entries (``repo_id``, ``revision``, ``run_dir``...).
        task_stream: ``LearngeneConfig.task_stream`` (dataset, split, num_tasks, ways, classes).
        preprocessing: ``LearngeneConfig.preprocessing`` (image size, mean, std).
        probe: what the validated selection runs on each candidate block,
            ``probe(learngene, episodes, lr, epochs, seed, device) -> accuracies`` (one per
            episode); :func:`learngene_hf.fewshot.runner.learngene_probe` trains a fresh individual model
            per episode. Without it the validated selection falls back to the criterion and says so.
    """

    def __init__(
        self,
        collective_model: CollectiveModel,
        record: GradientRecord | None = None,
        *,
        probe_data: Any | None = None,
        open_world_classes: Sequence[int] | None = None,
        source: dict[str, Any] | None = None,
        task_stream: dict[str, Any] | None = None,
        preprocessing: dict[str, Any] | None = None,
        probe: Callable[..., Sequence[float]] | None = None,
    ):
        if isinstance(collective_model, ViTCollectiveModel) and not collective_model.is_linear_expansion:
            raise ConfigError(
                "This ViT collective model was trained without the linear-expansion constraint (expansion='none'), so "
                "it has no learngene to extract; train it with expansion='linear' (the ViT presets' default)."
            )
        if not isinstance(collective_model, (CollectiveModel, ViTCollectiveModel)):
            raise ConfigError(
                f"Inheritor needs a CollectiveModel or ViTCollectiveModel, got {type(collective_model).__name__}; load "
                "one with CollectiveModel.from_pretrained(...) or Inheritor.from_run(run_dir)."
            )
        if record is not None and not isinstance(record, GradientRecord):
            raise ConfigError(
                f"record must be a GradientRecord (or None), got {type(record).__name__}; load it with "
                "GradientRecord.load(path)."
            )
        self.model = collective_model
        self.record = record
        self.probe_data = probe_data
        self.probe = probe
        self.open_world_classes = [int(c) for c in open_world_classes] if open_world_classes is not None else []
        self.source = dict(source or {})
        self.task_stream = dict(task_stream or {})
        if preprocessing is None:
            preprocessing = {
                "image_size": int(collective_model.config.image_size),
                "mean": list(IMAGE_MEAN),
                "std": list(IMAGE_STD),
            }
        self.preprocessing = dict(preprocessing)
        self.selection: Selection | None = None
        self.learngene: Learngene | None = None

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_run(
        cls,
        run_dir: str | os.PathLike,
        *,
        load_probe_data: bool = True,
        probe: Callable[..., Sequence[float]] | None = None,
    ) -> "Inheritor":
        """Build an Inheritor from a collective run folder written by ``train_collective``.

        The open-world probe data is reloaded from the run's dataset description and class split
        (``load_probe_data=False`` skips it: the validated selection then falls back to the
        criterion and says so). ``probe``: see :class:`Inheritor`, e.g.
        ``Inheritor.from_run(run_dir, probe=learngene_hf.fewshot.runner.learngene_probe)``.
        """
        run = load_run(run_dir)
        report = run.report
        dataset = dict(report.get("dataset") or {})
        split = run.split
        planned = report.get("task_stream") or []
        finished = int(report.get("finished_tasks", report.get("num_tasks", len(planned))))
        learnt = planned[:finished]  # a run stopped early (--stop-after-task) learnt only these tasks
        task_stream = {
            "dataset": {k: v for k, v in dataset.items() if k != "class_names"},
            "split": split.to_dict(),
            "num_tasks": finished,
            "planned_tasks": int(report.get("num_tasks", len(planned))),
            "ways": int(report.get("ways", 0)),
            "classes": sorted({int(c) for task in learnt for c in task}),
        }
        if finished < task_stream["planned_tasks"]:
            logger.warning(
                f"{run_dir} stopped after {finished} of its {task_stream['planned_tasks']} planned tasks: the "
                f"learngene comes from a partly trained collective model ({len(task_stream['classes'])} classes "
                "learnt). Run examples/train_collective.py again with the same options to finish the stream first."
            )
        probe_data = None
        if load_probe_data and split.open_world:
            probe_data = _reload_probe_data(dataset, run.run_dir)
        return cls(
            run.model,
            run.record,
            probe_data=probe_data,
            open_world_classes=list(split.open_world),
            source={"run_dir": str(Path(run.run_dir).resolve())},
            task_stream=task_stream,
            probe=probe,
        )

    @property
    def is_linear_expansion(self) -> bool:
        """Whether the collective model is a linear-expansion ViT: its learngene is then its whole
        base/increment pair, and there is nothing to select."""
        return isinstance(self.model, ViTCollectiveModel)

    # ------------------------------------------------------------------ ranking and selection
    @property
    def layer_names(self) -> list[str]:
        return list(self.model.config.layer_names)

    def scores(
        self, criterion: str = DEFAULT_CRITERION, *, threshold: float | None = None, from_task: int | None = None
    ) -> dict[str, float]:
        """``{layer_name: score}`` of every conv layer by ``criterion`` (lower = better)."""
        if self.record is None:
            raise ConfigError(
                "This Inheritor has no gradient record; pass record=... (GradientRecord.load(path)) to rank layers."
            )
        return layer_scores(self.record, criterion, threshold=threshold, from_task=from_task)

    def select(
        self,
        strategy: str = SelectionConfig.strategy,
        *,
        k: int = SelectionConfig.k,
        criterion: str = SelectionConfig.criterion,
        layers: Sequence[int] | None = None,
        threshold: float | None = None,
        from_task: int | None = None,
        top: int = SelectionConfig.top,
        probe_episodes: int = SelectionConfig.probe_episodes,
        probe_epochs: int = SelectionConfig.probe_epochs,
        probe_ways: int = SelectionConfig.probe_ways,
        probe_shots: int = SelectionConfig.probe_shots,
        probe_queries: int = SelectionConfig.probe_queries,
        probe_lrs: Sequence[float] = SelectionConfig.probe_lrs,
        max_fraction: float | None = SelectionConfig.max_fraction,
        seed: int = SelectionConfig.seed,
        device: str | None = None,
    ) -> Selection:
        """Choose the learngene's layers; returns (and remembers) a :class:`Selection`.

        Strategies: ``"validated"`` (default: the ``top`` blocks by ``criterion``, the paper's
        block and the first block are each probed on ``probe_episodes`` ``probe_ways``-way
        ``probe_shots``-shot episodes of the open-world classes, ``probe_epochs`` epochs at each
        learning rate of ``probe_lrs``, keeping each candidate's best; the best mean accuracy
        wins), ``"criterion"``, ``"paper"``, or ``"layers"`` with ``layers=[...]`` (an explicit
        list also implies ``"layers"``).

        ``max_fraction``: candidates holding more than this share of the collective model's
        parameters are not probed (``None``: no cap). A learngene is meant to be a small part of
        the collective model; on grown models the paper's last block is often most of it.
        """
        if self.is_linear_expansion:
            raise ConfigError(
                "A linear-expansion ViT has one learngene, its base and increment tensors: there are no layers to "
                "select. Call extract() (or save_pretrained / push_to_hub) directly."
            )
        if layers is not None and strategy == "validated":
            strategy = "layers"
        if strategy != "validated":
            selection = select_layers(
                self.layer_names,
                self.record,
                strategy,
                criterion=criterion,
                k=k,
                layers=layers,
                threshold=threshold,
                from_task=from_task,
            )
        else:
            probe, settings, why_not = self._probe(
                probe_episodes, probe_epochs, probe_ways, probe_shots, probe_queries, probe_lrs, seed, device
            )
            settings["max_fraction"] = max_fraction
            selection = validated_selection(
                self.layer_names,
                None if probe is None else (lambda layers: probe(self._extract(layers, selection=None))),
                self.record,
                criterion=criterion,
                k=k,
                top=top,
                threshold=threshold,
                from_task=from_task,
                probe_settings=settings,
                no_probe_reason=why_not,
                size_of=self.parameter_fraction,
                max_fraction=max_fraction,
            )
        self.selection = selection
        self.learngene = None
        return selection

    def select_under_budget(
        self,
        max_bytes: int,
        *,
        depths: Sequence[int] | None = None,
        distill_epochs: int = 0,
        distill_depths: Sequence[int] | None = None,
        device: str | None = None,
        probe_training: str | None = None,
        **probe_options: Any,
    ) -> dict[str, Any]:
        """Choose the learngene that does best on the open-world probes among those of at most
        ``max_bytes``: the first ``d`` conv layers for each depth of ``depths`` (default: every
        depth) at the widest width that fits (:func:`~learngene_hf.selection.compact.budget_candidates`),
        and, with ``distill_epochs``, each narrowed one distilled from the collective model's map at
        its depth on the base classes' images (:func:`~learngene_hf.selection.compact.distill_learngene`;
        ``distill_depths``: only the narrowed candidates of these depths, ``None``: every one).
        ``probe_options``: the probe settings of :meth:`select` (``probe_episodes``,
        ``probe_epochs``, ``probe_ways``, ``probe_shots``, ``probe_queries``, ``probe_lrs``,
        ``seed``), with the same defaults; ``probe_training`` says in the log what the probe trains
        (e.g. "a linear probe").

        The chosen learngene becomes :attr:`learngene` (``save_pretrained`` / ``push_to_hub`` then
        share it) with the budget table in ``config.selection``. Returns that table
        (:func:`~learngene_hf.selection.compact.select_under_budget`)."""
        unknown = sorted(set(probe_options) - set(PROBE_OPTIONS))
        if unknown:
            raise ConfigError(f"Unknown probe options {unknown}; use some of {list(PROBE_OPTIONS)}.")
        options = {name: probe_options.get(name, getattr(SelectionConfig, name)) for name in PROBE_OPTIONS}
        seed = options["seed"]
        if self.is_linear_expansion:
            raise ConfigError("A linear-expansion ViT has one learngene, its base/increment pair; call extract().")
        probe, settings, why_not = self._probe(*(options[name] for name in PROBE_OPTIONS), device, probe_training)
        if probe is None:
            raise ConfigError(f"The budget selection needs open-world probes, but {why_not}.")
        meta = {"source": dict(self.source), "task_stream": dict(self.task_stream),
                "preprocessing": dict(self.preprocessing)}  # fmt: skip
        found = budget_candidates(self.model, max_bytes, depths, **meta)
        if distill_epochs > 0:
            base = [int(c) for c in self.task_stream.get("classes") or []]
            if not base:
                raise ConfigError(
                    "Distillation needs the base classes (task_stream['classes']); use Inheritor.from_run."
                )
            images = self.probe_data.select(base).images
            wanted = None if distill_depths is None else {f"narrow_{int(d)}" for d in distill_depths}
            for name in [n for n in found if n.startswith("narrow_") and (wanted is None or n in wanted)]:
                found[name.replace("narrow_", "distilled_")] = distill_learngene(
                    found[name], self.model, images, epochs=distill_epochs, seed=seed, device=device
                )
        result = select_under_budget(found, probe, max_bytes)
        chosen = found[result["chosen"]]
        chosen.config.selection = {"strategy": "budget", "reason": result["reason"], "max_bytes": int(max_bytes),
                                   "probe": settings, "budget_candidates": result["candidates"]}  # fmt: skip
        self.selection, self.learngene = None, chosen
        return result

    def parameter_fraction(self, layers: Sequence[int]) -> float:
        """Share of the collective model's parameters held by the conv blocks ``layers``."""
        block = sum(p.numel() for i in layers for p in self.model.blocks[int(i)].parameters())
        return block / sum(p.numel() for p in self.model.parameters())

    def _probe(
        self,
        episodes: int,
        epochs: int,
        ways: int,
        shots: int,
        queries: int,
        lrs: Sequence[float],
        seed: int,
        device: str | None,
        training: str | None = None,
    ):
        """The probe of the validated and budget selections (``probe(learngene) -> {"accuracies", "lr",
        ...}``), its settings, and why it is ``None``. ``training`` describes what the probe trains
        in its log line (default: its epochs and learning rates)."""
        settings = {
            "classes": "open_world",
            "open_world_classes": list(self.open_world_classes),
            "episodes": int(episodes),
            "ways": int(ways),
            "shots": int(shots),
            "queries": int(queries),
            "epochs": int(epochs),
            "lrs": [float(lr) for lr in lrs],
            "seed": int(seed),
        }
        if episodes < 1:
            raise ConfigError(
                f"probe_episodes must be >= 1, got {episodes}; use strategy='criterion' to skip the probes."
            )
        if not self.open_world_classes:
            return None, settings, "the run has no open-world classes"
        if self.probe_data is None:
            return None, settings, "no open-world images were given (pass probe_data=... or use Inheritor.from_run)"
        if len(self.open_world_classes) < 2:
            return None, settings, f"only {len(self.open_world_classes)} open-world class(es); a probe needs at least 2"
        if self.probe is None:
            return None, settings, "no probe was given (pass probe=learngene_hf.fewshot.runner.learngene_probe)"
        if len(self.open_world_classes) < ways:  # fewer open-world classes than ways: use them all
            ways = len(self.open_world_classes)
            settings["ways"] = ways
        try:
            episode_list = sample_episodes(
                self.probe_data,
                self.open_world_classes,
                episodes,
                ways=ways,
                shots=shots,
                queries=queries,
                seed=seed,
                role="open_world",
            )
        except DataError as err:
            return None, settings, f"the open-world images cannot fill the probe episodes ({err})"
        if not lrs:
            raise ConfigError("probe_lrs is empty; give at least one learning rate, e.g. probe_lrs=(0.02, 0.05).")
        lrs = [float(lr) for lr in lrs]

        def probe(learngene: Learngene) -> dict[str, Any]:
            """Accuracies at the candidate's best learning rate (each candidate gets its own)."""
            rows = learngene.config.layers
            names = f"layers {rows[0]['source_index']}-{rows[-1]['source_index']}"
            if "channel_selection" in (learngene.config.source or {}):
                names += f" at widths {learngene.config.widths}"
            how = training or f"{epochs} epochs at lr {', '.join(f'{lr:g}' for lr in lrs)}"
            logger.info(f"selection: probing {names} on {episodes} open-world {ways}-way {shots}-shot episodes, {how}")
            by_lr = {
                lr: [float(a) for a in self.probe(learngene, episode_list, lr, epochs, seed, device)] for lr in lrs
            }
            best = max(by_lr, key=lambda lr: sum(by_lr[lr]) / len(by_lr[lr]))
            at = "" if training else f" at lr {best:g}"
            logger.info(f"selection: {names}: {100 * sum(by_lr[best]) / len(by_lr[best]):.1f}%{at}")
            return {
                "accuracies": by_lr[best],
                "lr": best,
                "mean_by_lr": {f"{lr:g}": sum(a) / len(a) for lr, a in by_lr.items()},
            }

        return probe, settings, None

    # ------------------------------------------------------------------ extraction and sharing
    def _extract(self, layers: Sequence[int], selection: Selection | None) -> Learngene:
        return Learngene.from_collective(
            self.model,
            layers,
            source=dict(self.source),
            selection=selection.to_dict() if selection is not None else {},
            task_stream=dict(self.task_stream),
            preprocessing=dict(self.preprocessing),
        )

    def extract(self, layers: Sequence[int] | None = None) -> Learngene:
        """The learngene: the selected blocks' tensors and a config holding the selection.

        ``layers`` overrides the selection with an explicit list; without it the last
        :meth:`select` result is used (running the default ``select()`` first if there is none).
        """
        if self.is_linear_expansion:
            if layers is not None:
                raise ConfigError("A linear-expansion learngene is the whole base/increment pair; do not pass layers=.")
            self.learngene = Learngene.from_vit_collective(
                self.model,
                source=dict(self.source),
                task_stream=dict(self.task_stream),
                preprocessing=dict(self.preprocessing),
            )
            return self.learngene
        if layers is not None:
            self.select("layers", layers=layers)
        elif self.selection is None:
            self.select()
        self.learngene = self._extract(self.selection.layers, self.selection)
        return self.learngene

    def save_pretrained(
        self, save_directory: str | os.PathLike, *, repo_id: str | None = None, plot: bool = True
    ) -> Path:
        """Save the learngene (extracting it if needed) and, with ``plot``, ``layer_ranking.png``."""
        learngene = self.learngene or self.extract()
        folder = learngene.save_pretrained(save_directory, repo_id=repo_id)
        if plot and self.selection is not None:
            from ..plots.ranking import plot_layer_ranking

            plot_layer_ranking(self.selection, folder / "layer_ranking.png")
        return folder

    def push_to_hub(self, repo_id: str, **options: Any):
        """Push the learngene subset (never the whole collective model) to ``repo_id``; ``options``
        are :meth:`Learngene.push_to_hub`'s (``revision``, ``private``, ``token``,
        ``commit_message``, ``create_pr``, ``endpoint``: the Hub's URL, default
        ``huggingface_hub``'s). Returns the :class:`huggingface_hub.CommitInfo`.
        """
        learngene = self.learngene or self.extract()
        return learngene.push_to_hub(repo_id, **options)

    def push_collective_to_hub(self, repo_id: str, **options: Any):
        """Push the whole collective model to ``repo_id`` (its ``push_to_hub``: transformers'
        arguments, e.g. ``private``, ``token``, ``revision``, ``commit_message``; the endpoint is
        ``HF_ENDPOINT``, as for every transformers push) and record that copy as the learngene's
        source, so the learngene's card names it as its ``base_model``. Returns the
        :class:`huggingface_hub.CommitInfo`."""
        commit = self.model.push_to_hub(repo_id, **options)
        published = {"repo_id": repo_id, "revision": options.get("revision") or "main", "commit_sha": commit.oid}
        self.source.update(published)
        if self.learngene is not None:
            self.learngene.config.source.update(published)
        return commit


def _reload_probe_data(dataset: dict[str, Any], run_dir: Path):
    """The training images of the run's dataset (the open-world classes are picked later)."""
    if dataset.get("source") == "in-memory":
        return None
    source, kwargs = load_arguments(dataset)
    try:
        train, _ = load_tensors(source, **kwargs)
    except Exception as err:  # noqa: BLE001 - any loader failure becomes a clear DataError
        raise DataError(
            f"Could not reload the dataset of the run {run_dir} ({dataset.get('source')}): {err}. Make it available "
            "again, or pass load_probe_data=False (extract_learngene.py --no-probe-data; the selection then falls back "
            "to the criterion)."
        ) from err
    return train
