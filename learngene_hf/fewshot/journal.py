"""A journal of few-shot results: every (method, episode) accuracy is appended to a JSON-lines file
as soon as it is measured, so that a failed or stopped comparison keeps what it measured and a
rerun of the same command resumes from it::

    with record_episodes("runs/few_shot/episodes.jsonl", setting={"learngene": fingerprint(lg.tensors)}):
        results = compare_methods(learngene, episodes, cfg, ...)  # tuning runs included

Inside the block every :func:`~learngene_hf.fewshot.runner.run_episodes` call (the comparison, the
tuning, the size comparisons) runs its descendants through :func:`run_jobs`: results already in the
journal are read back instead of trained again, the others are trained (a stack at a time) and
appended. Outside such a block nothing changes.

Each line is ``{"key", "method", "episode", "accuracy"}``. ``key`` is a sha256 fingerprint of the
``setting`` given (what else defines the run: the learngene's tensors, the collective run...), the
method (name, description, recipe, fit function and settings), the run seed and the episode (index,
seed, classes, and the bytes of its images and labels): a result is reused only for exactly the
same work. Lines of other settings are kept and ignored; a line cut short by a kill is skipped.
Under ``accelerate`` each process appends to its own file (``episodes.jsonl``,
``episodes.rank1.jsonl``, ...) and all of them are read. A journal that cannot be written (a full
disk) is reported once as a warning, and the run goes on.
"""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
import json
import os
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import torch

from ..errors import os_error_message
from ..logs import get_logger
from .config import FewShotConfig
from .stacked import Descendant, run_descendants

logger = get_logger(__name__)

#: Recipe fields that do not change a descendant's result (where it runs, how it is batched for scoring).
_RESULT_FREE_FIELDS = ("device", "eval_batch_size", "stack", "stack_size")
_ACTIVE: contextvars.ContextVar["EpisodeJournal | None"] = contextvars.ContextVar("episode_journal", default=None)


def fingerprint(value: Any) -> str:
    """sha256 hex digest of tensors (a tensor, or a dict / list of them, by name and bytes) or of
    a JSON-able value."""
    digest = hashlib.sha256()
    _feed(digest, value)
    return digest.hexdigest()


def _feed(digest: Any, value: Any) -> None:
    if isinstance(value, torch.Tensor):
        tensor = value.detach().to("cpu").contiguous()
        digest.update(f"{tensor.dtype}{tuple(tensor.shape)}".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    elif isinstance(value, dict):
        for key in sorted(value, key=str):
            digest.update(str(key).encode())
            _feed(digest, value[key])
    elif isinstance(value, (list, tuple)):
        for item in value:
            _feed(digest, item)
    else:
        digest.update(json.dumps(value, sort_keys=True, default=str).encode())


class EpisodeJournal:
    """The results in the journal files of ``path`` (read once, when opened) and the appending of
    new ones. ``setting``: a JSON-able description of what else defines the run; ``rank``: this
    process's index (its file: ``path`` for 0, ``<stem>.rank<r><suffix>`` otherwise)."""

    def __init__(self, path: str | os.PathLike, setting: Any = None, rank: int = 0):
        self.path = Path(path)
        self.setting = fingerprint(setting)
        self.own = self.path if rank == 0 else self.path.with_name(f"{self.path.stem}.rank{rank}{self.path.suffix}")
        self.results: dict[str, float] = {}
        self.reused = 0
        self._failed = False
        for file in sorted(self.path.parent.glob(f"{self.path.stem}*{self.path.suffix}")):
            self._read(file)

    def _read(self, file: Path) -> None:
        try:
            lines = file.read_text(encoding="utf-8").splitlines()
        except OSError:
            return
        for line in lines:
            try:
                entry = json.loads(line)
                self.results[str(entry["key"])] = float(entry["accuracy"])
            except (ValueError, KeyError, TypeError):
                continue  # a line cut short by a kill, or not a journal line

    def key(self, method: Any, job: Descendant, episode_print: str) -> str:
        """The fingerprint of ``job`` (a descendant of ``method``) in this journal's setting."""
        recipe = {k: v for k, v in (job.cfg.to_dict() if job.cfg is not None else {}).items()}
        for name in _RESULT_FREE_FIELDS:
            recipe.pop(name, None)
        fit = getattr(job.fit, "__qualname__", None) if job.fit is not None else None
        work = [self.setting, method.name, method.description, recipe, fit, job.settings, job.seed, episode_print]
        return fingerprint(work)

    def record(self, key: str, method: str, episode: int, accuracy: float) -> None:
        """Append one result (flushed at once); a failed write warns once and is not retried."""
        self.results[key] = float(accuracy)
        if self._failed:
            return
        line = json.dumps({"key": key, "method": method, "episode": int(episode), "accuracy": float(accuracy)})
        try:
            with open(self.own, "a", encoding="utf-8") as handle:
                handle.write(line + "\n")
        except OSError as err:
            self._failed = True
            logger.warning(
                f"Cannot write the episode journal {self.own} ({os_error_message(err)}); the run goes on, but a "
                "rerun will not resume from the episodes measured from now on."
            )


def episode_print(episode: Any) -> str:
    """The fingerprint of an episode: index, seed, classes, and its images and labels."""
    return fingerprint(
        [
            int(episode.index),
            int(getattr(episode, "seed", 0)),
            [int(c) for c in episode.classes],
            episode.support_images,
            episode.support_labels,
            episode.query_images,
            episode.query_labels,
        ]
    )


@contextlib.contextmanager
def record_episodes(path: str | os.PathLike, setting: Any = None, rank: int = 0) -> Iterator[EpisodeJournal]:
    """Journal every few-shot result measured in the block to ``path`` (see the module docstring)."""
    journal = EpisodeJournal(path, setting, rank)
    token = _ACTIVE.set(journal)
    try:
        yield journal
    finally:
        _ACTIVE.reset(token)
        if journal.reused:
            logger.info(f"{journal.reused} few-shot results were read back from {journal.path} (not trained again)")


def run_jobs(
    jobs: Sequence[Descendant], methods: Sequence[Any], cfg: FewShotConfig, progress: Callable[[int], Any] | None = None
) -> list[float]:
    """:func:`~learngene_hf.fewshot.stacked.run_descendants` of ``jobs`` (``methods[i]`` is the
    :class:`~learngene_hf.fewshot.runner.Method` of ``jobs[i]``), through the journal of the
    enclosing :func:`record_episodes` block when there is one: known results are read back, the
    others trained ``cfg.stack_size`` jobs at a time and appended as each such group finishes."""
    journal = _ACTIVE.get()
    if journal is None:
        return run_descendants(jobs, cfg, progress=progress)
    prints: dict[int, str] = {}
    keys = []
    for method, job in zip(methods, jobs):
        if id(job.episode) not in prints:
            prints[id(job.episode)] = episode_print(job.episode)
        keys.append(journal.key(method, job, prints[id(job.episode)]))
    accs: list[float | None] = [journal.results.get(k) for k in keys]
    todo = [i for i, acc in enumerate(accs) if acc is None]
    journal.reused += len(jobs) - len(todo)
    if progress is not None and len(jobs) > len(todo):
        progress(len(jobs) - len(todo))
    step = max(1, int(cfg.stack_size)) if cfg.stack else 1
    for start in range(0, len(todo), step):
        chunk = todo[start : start + step]
        for i, acc in zip(chunk, run_descendants([jobs[i] for i in chunk], cfg, progress=progress)):
            accs[i] = acc
            journal.record(keys[i], methods[i].name, int(jobs[i].episode.index), acc)
    return [float(a) for a in accs]  # type: ignore[arg-type]
