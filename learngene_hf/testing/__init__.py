"""Test helpers for learngene-hf users and for this project's own test suite.

``learngene_hf.testing.hub`` holds a local server that speaks the Hugging Face Hub protocol
(:class:`~learngene_hf.testing.hub.LocalHubServer`, :func:`~learngene_hf.testing.hub.local_hub`,
:func:`~learngene_hf.testing.hub.use_endpoint`), so pushes and pulls can be tested offline.
"""

from .hub import LocalHubServer, local_hub, use_endpoint

__all__ = ["LocalHubServer", "local_hub", "use_endpoint"]
