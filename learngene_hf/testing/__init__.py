"""Test helpers for learngene-hf users and for this project's own test suite: a local server that
speaks the Hugging Face Hub protocol, so pushes and pulls can be tested offline (the clients reach
it through their public ``endpoint`` argument or the ``HF_ENDPOINT`` environment variable).
``hub`` holds the server (:class:`~learngene_hf.testing.hub.LocalHubServer`,
:func:`~learngene_hf.testing.hub.local_hub`) and the command line ``python -m
learngene_hf.testing.hub``; ``hub_handler`` the HTTP request handler; ``hub_store`` the on-disk
store of repos, commits and blobs; ``hub_cards`` the model card metadata checks
(:func:`~learngene_hf.testing.hub_cards.validate_card_metadata`). These modules import only the
standard library and the core (``learngene_hf.errors``, ``learngene_hf.io``); nothing in the
library imports them unless asked to run a local Hub.
"""
