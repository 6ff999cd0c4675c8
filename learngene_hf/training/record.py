"""The gradient record: per conv layer, per epoch of every task, how active its gradients were.

For every conv layer (by its stable name, see ``CollectiveConfig.layer_names``) and every epoch the
record holds, averaged over the batches of that epoch:

* ``frac_above``: the fraction of the conv weight's gradient entries whose magnitude exceeds each
  threshold in ``thresholds`` (the paper's criterion uses 5e-10 on CIFAR and 5e-4 on ImageNet);
* ``mean_abs``: the mean absolute gradient entry;
* ``rms``: the root mean square of the gradient entries,

and per task every layer's relative weight change ``||W_end - W_start|| / ||W_start||`` (over the
part of the weight that existed at the start of the task), so scale-free criteria can be
computed afterwards.

:class:`GradientRecorder` computes these on the model's device: one small tensor per layer is
accumulated after every backward pass without any host synchronisation, and ``end_epoch`` copies
everything to the host once per epoch.

The default thresholds, :data:`DEFAULT_THRESHOLDS`, live in the light
:mod:`learngene_hf.training.config`; the selection criteria that read the record are in
:mod:`learngene_hf.selection.criterion`.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from ..errors import ArtifactError, ConfigError
from ..io import read_json, write_json_atomic
from .config import DEFAULT_THRESHOLDS

STATISTICS = ("frac_above", "mean_abs", "rms", "rel_weight_change")

RECORD_FORMAT = "learngene-hf/gradient-record"
RECORD_VERSION = 1


def _check_thresholds(thresholds: Sequence[float]) -> list[float]:
    values = [float(t) for t in thresholds]
    if not values or any(not math.isfinite(t) or t < 0 for t in values):
        raise ConfigError(f"thresholds must be a non-empty list of finite numbers >= 0, got {list(thresholds)}.")
    return values


class GradientRecord:
    """Gradient statistics of a collective training run (see the module docstring).

    Attributes:
        thresholds: the ``frac_above`` thresholds, in order.
        layer_names: stable conv layer names in the final depth order (a layer added by
            ``deepen`` appears where it sits in the final model).
        epochs: one dict per recorded epoch, in order: ``task``, ``epoch``, ``batches`` and
            ``layers`` = {name: {"frac_above": [one per threshold], "mean_abs": float, "rms": float}}.
        weight_change: {task (str): {name: relative weight change during that task}}.
    """

    def __init__(
        self,
        thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
        layer_names: Sequence[str] = (),
        epochs: Sequence[dict] | None = None,
        weight_change: dict | None = None,
    ):
        self.thresholds = _check_thresholds(thresholds)
        self.layer_names = list(layer_names)
        self.epochs: list[dict] = [dict(e) for e in (epochs or [])]
        self.weight_change: dict[str, dict[str, float]] = {str(k): dict(v) for k, v in (weight_change or {}).items()}

    # ------------------------------------------------------------------ serialisation
    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (NaN is stored as null)."""
        return {
            "format": RECORD_FORMAT,
            "version": RECORD_VERSION,
            "thresholds": self.thresholds,
            "layer_names": self.layer_names,
            "epochs": self.epochs,
            "weight_change": self.weight_change,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "GradientRecord":
        """Inverse of :meth:`to_dict`; a malformed dict raises :class:`ArtifactError`."""
        if not isinstance(data, dict) or data.get("format") != RECORD_FORMAT:
            raise ArtifactError(
                f"Not a gradient record (expected format {RECORD_FORMAT!r}); re-create it with train_collective."
            )
        if int(data.get("version", 0)) > RECORD_VERSION:
            raise ArtifactError(
                f"Gradient record version {data.get('version')} is newer than this learngene-hf supports "
                f"({RECORD_VERSION}); upgrade learngene-hf."
            )
        try:
            return cls(data["thresholds"], data["layer_names"], data["epochs"], data["weight_change"])
        except (KeyError, TypeError) as err:
            raise ArtifactError(
                f"Gradient record is missing a field ({err}); re-create it with train_collective."
            ) from err

    def save(self, path: str | os.PathLike) -> Path:
        """Write the record as JSON (atomically) to ``path``."""
        return write_json_atomic(path, self.to_dict())

    @classmethod
    def load(cls, path: str | os.PathLike) -> "GradientRecord":
        """Read a record written by :meth:`save`."""
        try:
            return cls.from_dict(read_json(path))
        except ArtifactError as err:
            raise ArtifactError(f"{path}: {err}") from err

    # ------------------------------------------------------------------ queries
    @property
    def tasks(self) -> list[int]:
        """Task ids that have at least one recorded epoch or a weight change, sorted."""
        ids = {int(e["task"]) for e in self.epochs} | {int(t) for t in self.weight_change}
        return sorted(ids)

    def _epoch_value(self, entry: dict, name: str, statistic: str, t_index: int | None) -> float:
        stats = entry["layers"].get(name)
        if stats is None:
            return float("nan")
        value = stats[statistic][t_index] if statistic == "frac_above" else stats[statistic]
        return float("nan") if value is None else float(value)

    def _threshold_index(self, statistic: str, threshold: float | None) -> int | None:
        if statistic not in STATISTICS:
            raise ConfigError(f"Unknown statistic {statistic!r}; choose one of {list(STATISTICS)}.")
        if statistic != "frac_above":
            return None
        if threshold is None:
            raise ConfigError(f"statistic 'frac_above' needs a threshold; this record has {self.thresholds}.")
        for index, value in enumerate(self.thresholds):
            if math.isclose(value, float(threshold), rel_tol=1e-6, abs_tol=0.0):
                return index
        raise ConfigError(f"Threshold {threshold} was not recorded; choose one of {self.thresholds}.")

    def epoch_matrix(self, statistic: str, threshold: float | None = None) -> tuple[list[str], list[int], np.ndarray]:
        """[layers x epochs] array of a per-epoch statistic (``frac_above``, ``mean_abs``, ``rms``).

        Returns ``(layer_names, column_tasks, array)``: ``column_tasks[j]`` is the task of epoch
        column ``j`` (epochs in training order). NaN where a layer did not exist yet.
        """
        if statistic == "rel_weight_change":
            raise ConfigError("rel_weight_change is recorded per task, not per epoch: use matrix('rel_weight_change').")
        t_index = self._threshold_index(statistic, threshold)
        array = np.full((len(self.layer_names), len(self.epochs)), np.nan)
        for j, entry in enumerate(self.epochs):
            for i, name in enumerate(self.layer_names):
                array[i, j] = self._epoch_value(entry, name, statistic, t_index)
        return list(self.layer_names), [int(e["task"]) for e in self.epochs], array

    def matrix(self, statistic: str, threshold: float | None = None) -> tuple[list[str], list[int], np.ndarray]:
        """[layers x tasks] array: per-epoch statistics averaged over each task's epochs, or the
        per-task ``rel_weight_change``. Returns ``(layer_names, tasks, array)``; NaN where a layer
        did not exist yet during that task."""
        tasks = self.tasks
        array = np.full((len(self.layer_names), len(tasks)), np.nan)
        if statistic == "rel_weight_change":
            self._threshold_index(statistic, threshold)
            for j, task in enumerate(tasks):
                changes = self.weight_change.get(str(task), {})
                for i, name in enumerate(self.layer_names):
                    value = changes.get(name)
                    array[i, j] = np.nan if value is None else float(value)
            return list(self.layer_names), tasks, array
        names, column_tasks, per_epoch = self.epoch_matrix(statistic, threshold)
        columns = np.asarray(column_tasks)
        for j, task in enumerate(tasks):
            selected = per_epoch[:, columns == task]
            if selected.shape[1]:
                with np.errstate(all="ignore"):
                    # a layer either exists for all epochs of a task or for none
                    array[:, j] = selected.mean(axis=1)
        return names, tasks, array


class GradientRecorder:
    """Accumulates gradient statistics of a :class:`~learngene_hf.CollectiveModel` on its device.

    Call :meth:`begin_task` when a task starts (after any growth), :meth:`step` after every
    backward pass (before ``optimizer.step()``), :meth:`end_epoch` after every epoch (the only
    host synchronisation) and :meth:`end_task` when the task is done. The model may grow between
    tasks: layers are tracked by their stable names.

    Args:
        model: the (unwrapped) collective model; ``model.blocks[i].conv.weight`` is read.
        thresholds: magnitudes for ``frac_above``.
        record: an existing record to append to (when resuming), else a new one.
    """

    def __init__(
        self, model: nn.Module, thresholds: Sequence[float] = DEFAULT_THRESHOLDS, record: GradientRecord | None = None
    ):
        self.model = model
        self.record = record if record is not None else GradientRecord(thresholds)
        if record is not None and not np.allclose(record.thresholds, _check_thresholds(thresholds)):
            raise ConfigError(
                f"The existing record uses thresholds {record.thresholds}, not {list(thresholds)}; "
                "keep the thresholds of the run you resume."
            )
        self._sums: dict[str, torch.Tensor] = {}
        self._batches = 0
        self._start_weights: dict[str, torch.Tensor] = {}
        self._threshold_tensor: torch.Tensor | None = None
        self.record.layer_names = list(model.config.layer_names)

    def _layers(self) -> list[tuple[str, torch.Tensor]]:
        if hasattr(self.model, "recorded_weights"):  # model families that say which weights to follow
            return self.model.recorded_weights()
        return [(name, block.conv.weight) for name, block in zip(self.model.config.layer_names, self.model.blocks)]

    @torch.no_grad()
    def step(self) -> None:
        """Add this batch's statistics of every conv weight gradient to on-device sums."""
        for name, weight in self._layers():
            grad = weight.grad
            if grad is None:
                continue
            if self._threshold_tensor is None or self._threshold_tensor.device != grad.device:
                self._threshold_tensor = torch.tensor(self.record.thresholds, device=grad.device, dtype=torch.float32)
            magnitude = grad.detach().abs().float().flatten()
            fractions = (magnitude.unsqueeze(0) > self._threshold_tensor.unsqueeze(1)).float().mean(dim=1)
            mean_abs = magnitude.mean().unsqueeze(0)
            rms = magnitude.square().mean().sqrt().unsqueeze(0)
            stats = torch.cat([fractions, mean_abs, rms])
            if name in self._sums:
                self._sums[name] += stats
            else:
                self._sums[name] = stats.clone()
        self._batches += 1

    def end_epoch(self, task: int, epoch: int) -> dict:
        """Average the sums over the epoch's batches, append them to the record and reset."""
        names = list(self._sums)
        entry: dict[str, Any] = {"task": int(task), "epoch": int(epoch), "batches": self._batches, "layers": {}}
        if names and self._batches:
            host = torch.stack([self._sums[n] for n in names]).cpu().double().numpy() / self._batches
            k = len(self.record.thresholds)
            for name, row in zip(names, host):
                entry["layers"][name] = {
                    "frac_above": [float(v) for v in row[:k]],
                    "mean_abs": float(row[k]),
                    "rms": float(row[k + 1]),
                }
        self.record.epochs.append(entry)
        self.record.layer_names = list(self.model.config.layer_names)
        self._sums = {}
        self._batches = 0
        return entry

    @torch.no_grad()
    def begin_task(self, task: int) -> None:
        """Remember every conv weight at the start of ``task`` (call after growth)."""
        self._start_weights = {name: weight.detach().clone() for name, weight in self._layers()}
        self.record.layer_names = list(self.model.config.layer_names)

    @torch.no_grad()
    def end_task(self, task: int) -> dict[str, float]:
        """Record each layer's relative weight change since :meth:`begin_task` for ``task``."""
        changes: dict[str, float] = {}
        for name, weight in self._layers():
            start = self._start_weights.get(name)
            if start is None:
                continue
            common = tuple(slice(0, min(a, b)) for a, b in zip(start.shape, weight.shape))
            before, after = start[common].float(), weight.detach()[common].float()
            changes[name] = float(
                torch.linalg.vector_norm(after - before) / torch.linalg.vector_norm(before).clamp_min(1e-12)
            )
        self.record.weight_change[str(int(task))] = changes
        self.record.layer_names = list(self.model.config.layer_names)
        self._start_weights = {}
        return changes
