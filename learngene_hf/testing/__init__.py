"""Test helpers for learngene-hf users and for this project's own test suite.

``learngene_hf.testing.hub`` holds a local server that speaks the Hugging Face Hub protocol
(:class:`~learngene_hf.testing.hub.LocalHubServer`, :func:`~learngene_hf.testing.hub.local_hub`), so
pushes and pulls can be tested offline: the clients reach it through their public ``endpoint``
argument or the ``HF_ENDPOINT`` environment variable. Nothing in the library imports it unless
asked to run a local Hub.
The names are re-exported here lazily, so ``python -m learngene_hf.testing.hub`` runs cleanly.
"""

from __future__ import annotations

from typing import Any

__all__ = ["LocalHubServer", "local_hub"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from . import hub

        return getattr(hub, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
