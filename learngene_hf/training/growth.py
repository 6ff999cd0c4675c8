"""Growth of the collective model during training: the plan of a run and its application.

:func:`plan_growth` turns a :class:`~learngene_hf.training.config.CollectiveTrainingConfig`'s
``growth`` setting into a list of events (checked by :func:`check_growth_plan` before any
training); :func:`apply_growth` applies the events of one task at its start (after its head is
added). :func:`new_collective_model` builds the fresh model of a preset that a run starts from.
The widen / deepen operations themselves are the model's (:mod:`learngene_hf.models.growth`);
the trainer that calls these is :mod:`learngene_hf.training.trainer`.
"""

from __future__ import annotations

from typing import Sequence

import torch

from ..errors import ConfigError
from ..models.collective import CollectiveConfig, CollectiveModel
from ..models.presets import VIT_PRESETS
from ..models.vit_collective import ViTCollectiveConfig, ViTCollectiveModel
from .config import CollectiveTrainingConfig


def plan_growth(config: CollectiveTrainingConfig, layer_names: Sequence[str], widths: Sequence[int]) -> list[dict]:
    """The growth events of ``config`` for a model with ``layer_names`` / ``widths`` (initial).

    Returns a list of ``{"task", "op", "layer", "width"}`` (``layer`` a stable name or an index).
    """
    if isinstance(config.growth, list):
        events = []
        for event in config.growth:
            if not isinstance(event, dict) or event.get("op") not in ("widen", "deepen") or "layer" not in event:
                raise ConfigError(f"Growth event {event!r} needs 'task', 'op' ('widen'/'deepen') and 'layer'.")
            task = event.get("task")
            if not isinstance(task, int) or not 0 <= task < config.num_tasks:
                raise ConfigError(f"Growth event {event!r}: task must be in 0..{config.num_tasks - 1}.")
            if event["op"] == "widen" and not isinstance(event.get("width"), int):
                raise ConfigError(f"Growth event {event!r}: a widen event needs an integer 'width'.")
            events.append({"task": task, "op": event["op"], "layer": event["layer"], "width": event.get("width")})
        events = sorted(events, key=lambda e: e["task"])
        check_growth_plan(events, layer_names)
        return events
    if config.growth == "none":
        return []
    count = min(config.growth_layers, len(layer_names))
    targets = list(range(len(layer_names) - count, len(layer_names)))
    tasks = list(range(1, min(config.growth_until, config.num_tasks - 1) + 1))
    assigned: dict[int, list[int]] = {i: [] for i in targets}
    for k, task in enumerate(tasks):
        assigned[targets[k % count]].append(task)
    events = []
    for index, layer_tasks in assigned.items():
        start = widths[index]
        for j, task in enumerate(layer_tasks, start=1):
            width = int(round(start + (config.growth_factor - 1.0) * start * j / len(layer_tasks)))
            events.append({"task": task, "op": "widen", "layer": layer_names[index], "width": width})
    return sorted(events, key=lambda e: e["task"])


def check_growth_plan(events: Sequence[dict], layer_names: Sequence[str]) -> None:
    """Play ``events`` on the layer names (deepen inserts the name the model will give) and raise
    :class:`ConfigError` for an event naming a layer that will not exist, before any training."""
    names = list(layer_names)
    for event in events:
        layer = event["layer"]
        if isinstance(layer, str):
            if layer not in names:
                raise ConfigError(
                    f"Growth event {event!r} names layer {layer!r}, which the model will not have at "
                    f"task {event['task']} (its layers then: {names}); fix the growth plan (--growth)."
                )
            index = names.index(layer)
        elif isinstance(layer, int) and not isinstance(layer, bool) and 0 <= layer < len(names):
            index = layer
        else:
            raise ConfigError(
                f"Growth event {event!r}: layer must be a name in {names} or an index in "
                f"0..{len(names) - 1} at task {event['task']}; fix the growth plan (--growth)."
            )
        if event["op"] == "deepen":
            used = {int(n[4:]) for n in names if n.startswith("conv") and n[4:].isdigit()}
            names.insert(index + 1, f"conv{max(used, default=-1) + 1}")


def new_collective_model(preset: str, image_size: int):
    """A fresh collective model of ``preset``: a VGG-BN :class:`CollectiveModel` or, for a
    :data:`~learngene_hf.models.presets.VIT_PRESETS` name, a linear-expansion :class:`ViTCollectiveModel`."""
    if preset in VIT_PRESETS:
        return ViTCollectiveModel(ViTCollectiveConfig(preset=preset, image_size=image_size))
    return CollectiveModel(CollectiveConfig(preset=preset, image_size=image_size))


def _layer_index(model: CollectiveModel, layer: int | str) -> int:
    if isinstance(layer, str):
        if layer not in model.config.layer_names:
            raise ConfigError(
                f"Growth names layer {layer!r}, which the model does not have ({model.config.layer_names})."
            )
        return model.config.layer_names.index(layer)
    return layer


def apply_growth(model: CollectiveModel, events: Sequence[dict], task: int, generator: torch.Generator) -> list[dict]:
    """Apply the events of ``task`` to ``model``; returns the growth-log entries they produced."""
    before = len(model.config.growth_log)
    for event in events:
        if event["task"] != task:
            continue
        index = _layer_index(model, event["layer"])
        if event["op"] == "widen":
            if event["width"] > model.config.widths[index]:
                model.widen(index, event["width"], generator=generator)
        else:
            model.deepen(index)
    return [dict(e) for e in model.config.growth_log[before:]]
