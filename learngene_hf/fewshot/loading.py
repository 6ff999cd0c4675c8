"""Few-shot data: the images and class lists of a learngene's episodes, and its collective model.

* :func:`load_fewshot_data`: ``(images, novel_classes, open_world_classes)`` from the learngene's task
  stream, a built-in dataset or a named one; classes the collective model trained on are refused.
* :func:`collective_run_dir` / :func:`collective_model_of`: the collective run a learngene came from
  (the ``--compare`` blocks and the weight-selection baselines start from its model).

Episodes are drawn from these with :func:`learngene_hf.data.sample_episodes` (tuning episodes:
:func:`~learngene_hf.fewshot.tuning.tuning_episodes`).
"""

from __future__ import annotations

from typing import Any, Sequence

from torch import nn

from ..data import EMBEDDED_SOURCES, ClassSplit, builtin_split, load_arguments, load_tensors, split_classes
from ..errors import ConfigError, DataError
from ..training.run import load_run


def load_fewshot_data(
    learngene: Any | None = None,
    dataset: str | None = None,
    *,
    image_column: str | None = None,
    label_column: str | None = None,
    image_size: int | None = None,
    novel_classes: Sequence[int] | None = None,
    open_world_classes: Sequence[int] | None = None,
    allow_base_classes: bool = False,
) -> tuple[Any, list[int], list[int]]:
    """``(images, novel_classes, open_world_classes)`` for few-shot episodes.

    Without ``dataset`` the learngene's ``config.task_stream["dataset"]`` names the data (the
    embedded dataset when it says nothing); without ``novel_classes`` / ``open_world_classes``
    the learngene's class split gives them, or the dataset's own split for a built-in dataset
    (``dataset="digits"``: :data:`~learngene_hf.data.DIGITS_SPLIT`, images at the learngene's
    input size). Episodes are drawn from the training images of those classes (the collective
    model never trained on them). Novel or open-world classes that the collective model trained
    on (its base classes) raise :class:`DataError` unless ``allow_base_classes=True``: the
    inherited layers have seen them, so the comparison would flatter the learngene.
    """
    stream = dict(getattr(getattr(learngene, "config", None), "task_stream", None) or {})
    if dataset is None and stream.get("dataset"):
        source, kwargs = load_arguments(stream["dataset"])
        if image_size is not None:
            kwargs["image_size"] = image_size
    elif builtin_split(dataset) is not None:  # a built-in dataset with its own class split (digits)
        source = dataset
        size = image_size or (getattr(getattr(learngene, "config", None), "preprocessing", None) or {}).get(
            "image_size"
        )
        kwargs = {"image_size": size} if size else {}
        stream = {"split": builtin_split(dataset).to_dict()}
    else:
        source = dataset
        kwargs = {} if dataset in EMBEDDED_SOURCES else {"image_column": image_column, "label_column": label_column}
        if image_size is not None:
            kwargs["image_size"] = image_size
    if source == "in-memory":
        raise DataError(
            "The learngene was trained on in-memory data that cannot be reloaded; pass --dataset "
            "(dataset=...) and --novel-classes (novel_classes=...)."
        )
    train, _ = load_tensors(source, **kwargs)
    split = ClassSplit.from_dict(stream["split"]) if stream.get("split") else None
    if split is None and (novel_classes is None or open_world_classes is None):
        split = split_classes(train.num_classes)
    novel = [int(c) for c in (novel_classes if novel_classes is not None else split.novel)]
    open_world = [int(c) for c in (open_world_classes if open_world_classes is not None else split.open_world)]
    if not allow_base_classes:
        trained = set(int(c) for c in (split.base if split is not None else []))
        trained |= {int(c) for c in stream.get("classes") or []}
        for role, chosen in (("novel", novel), ("open-world", open_world)):
            seen = sorted(set(chosen) & trained)
            if seen:
                raise DataError(
                    f"The {role} classes {seen} are base classes the collective model trained on; a few-shot result on "
                    f"them would flatter the learngene. Choose classes outside the base classes, or pass "
                    f"--allow-base-classes (allow_base_classes=True) if you mean it."
                )
    overlap = sorted(set(novel) & set(open_world))
    if overlap:
        raise DataError(
            f"Classes {overlap} are both novel and open-world; learning rates would be tuned on test "
            "classes. Give disjoint class lists."
        )
    return train, novel, open_world


def collective_run_dir(learngene: Any, collective_run: str | None = None) -> str:
    """The run directory of the collective run ``learngene`` came from: ``collective_run``, else its
    ``config.source["run_dir"]`` (:class:`ConfigError` when neither names one).

    The recorded ``run_dir`` is trusted only for a learngene made or saved on this machine: a
    learngene pulled from a Hub never makes the library open a local folder its files name (one
    holding model code, say); give ``collective_run`` for it."""
    source = learngene.config.source or {}
    pulled = source.get("pulled") or {}
    if not collective_run and pulled:
        raise ConfigError(
            f"--compare and --sizes need the collective run the learngene came from, and this learngene was pulled "
            f"from {pulled.get('repo_id')}: a folder named in a pulled file is never opened. Pass --collective-run "
            "RUN_DIR (collective_run=...) with the run you trust."
        )
    run_dir = collective_run or source.get("run_dir")
    if not run_dir:
        raise ConfigError(
            "--compare and --sizes need the collective run the learngene came from: pass "
            "--collective-run RUN_DIR (collective_run=...); this learngene does not record "
            "config.source['run_dir']."
        )
    return str(run_dir)


def collective_model_of(learngene: Any, collective_run: str | None = None) -> nn.Module:
    """The collective model of the run ``learngene`` came from (``collective_run``, default its
    ``config.source["run_dir"]``)."""
    return load_run(collective_run_dir(learngene, collective_run)).model
