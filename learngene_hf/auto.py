"""Start a descendant from a learngene by name: :func:`from_learngene` resolves a folder or a Hub
repo id into a :class:`~learngene_hf.artifact.learngene.Learngene` and picks the model family from
its form, so the model files themselves never load artifacts (they travel as remote code).

    from learngene_hf import from_learngene

    model = from_learngene("org/learngene-cifar", num_labels=5)                # VGG-BN descendant
    model = from_learngene("org/learngene-vit", num_labels=5, num_blocks=4)    # ViT descendant (TLEG)
"""

from __future__ import annotations

import os
from typing import Any

from torch import nn

from .artifact.learngene import Learngene
from .errors import ConfigError
from .models.individual import IndividualModel
from .models.vit_individual import ViTIndividualModel

__all__ = ["from_learngene", "resolve_learngene"]


def resolve_learngene(
    learngene_or_ref: Any,
    revision: str | None = None,
    token: str | bool | None = None,
    cache_dir: str | os.PathLike | None = None,
    endpoint: str | None = None,
) -> tuple[Learngene, dict[str, Any]]:
    """``(learngene, origin)`` for a ``Learngene``, a local folder or a Hub repo id.

    ``origin`` holds ``repo_id``, ``revision`` and ``commit_sha`` as far as they are known: from
    the Hub copy the learngene was pulled from (:attr:`Learngene.origin`), else from the reference
    given. A local folder is recorded by its name only (``local_folder``; ``repo_id`` stays
    ``None``), so that a descendant's saved or pushed config carries no path of this machine.
    """
    if not isinstance(learngene_or_ref, (str, os.PathLike)):
        if not hasattr(learngene_or_ref, "config") or not hasattr(learngene_or_ref, "tensors"):
            raise ConfigError(
                f"Expected a Learngene, a local folder or a Hub repo id, got {type(learngene_or_ref).__name__}."
            )
        origin = {"repo_id": None, "revision": revision, "commit_sha": None}
        known = getattr(learngene_or_ref, "origin", None) or {}
        origin.update({k: v for k, v in known.items() if v is not None})
        return learngene_or_ref, origin
    ref = os.fspath(learngene_or_ref)
    learngene = Learngene.from_pretrained(ref, revision=revision, token=token, cache_dir=cache_dir, endpoint=endpoint)
    is_dir = os.path.isdir(ref)
    origin = {"repo_id": None if is_dir else ref, "revision": None if is_dir else revision, "commit_sha": None}
    if is_dir:
        origin["local_folder"] = os.path.basename(os.path.abspath(ref))
    origin.update({k: v for k, v in learngene.origin.items() if v is not None})
    return learngene, origin


def from_learngene(
    learngene_or_repo_id_or_dir: Any,
    num_labels: int,
    *,
    revision: str | None = None,
    token: str | bool | None = None,
    cache_dir: str | os.PathLike | None = None,
    endpoint: str | None = None,
    freeze_learngene: bool = False,
    **config_overrides: Any,
) -> nn.Module:
    """A fresh descendant of a learngene, its inherited weights loaded.

    Args:
        learngene_or_repo_id_or_dir: a ``Learngene``, a local folder or a Hub repo id.
        num_labels: classes of the target task (the fresh head's outputs).
        revision: branch, tag or commit of a Hub repo.
        token / cache_dir / endpoint: Hub access for a repo id (``endpoint``: the Hub's URL,
            default ``huggingface_hub``'s, e.g. a local server's ``http://127.0.0.1:8080``).
        freeze_learngene: keep the inherited blocks fixed during training (layer learngenes).
        config_overrides: the family's architecture overrides: for a layer learngene
            :meth:`IndividualConfig.for_learngene`'s (``stem_widths``, ``tail_widths``,
            ``head_hidden``, ``image_size``, ``id2label``...); for a linear-expansion (ViT)
            learngene ``num_blocks`` (depth) and ``embed_dim`` (width). ``size`` names a
            descendant size for either family ("tiny", "small", "medium", "full";
            :mod:`learngene_hf.models.presets`); without it the descendant has the collective's size.

    Returns an :class:`~learngene_hf.models.individual.IndividualModel` for a ``"layers"``
    learngene, a :class:`~learngene_hf.models.vit_individual.ViTIndividualModel` for a
    ``"linear_expansion"`` one. Its config records which learngene it came from.
    """
    learngene, origin = resolve_learngene(learngene_or_repo_id_or_dir, revision, token, cache_dir, endpoint)
    if learngene.config.form == "linear_expansion":
        if freeze_learngene:
            raise ConfigError(
                "freeze_learngene is not offered for linear-expansion learngenes: every descendant block is trained."
            )
        return ViTIndividualModel.from_learngene(learngene, num_labels, origin=origin, **config_overrides)
    return IndividualModel.from_learngene(
        learngene, num_labels, freeze_learngene=freeze_learngene, origin=origin, **config_overrides
    )
