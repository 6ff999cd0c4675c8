"""Shared pytest fixtures. Each group below belongs to one part of the project; add new groups
at the end under their own banner."""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path
from typing import Iterator

import pytest

# ==================================================================================================
# Local Hub (learngene_hf.testing.hub): the real huggingface_hub / transformers clients against a
# Hub-protocol server on 127.0.0.1. The clients find it the public way: HF_ENDPOINT is set here,
# before anything imports huggingface_hub, to a port that the ``hub`` fixtures serve on. Tests that
# use no fixture reach nothing there, so a test that tries to download fails fast instead.
# ==================================================================================================

HUB_TEST_TOKEN = "hf_test_alice"
"""The token of user ``alice`` on the ``hub`` and ``hub_with_tokens`` servers (``hf_test_bob``: ``bob``)."""
HUB_TOKENS = {HUB_TEST_TOKEN: "alice", "hf_test_bob": "bob"}
#: On the ``hub`` server alice also writes to the namespaces the tests push to.
HUB_GRANTS = {"alice": ["org", "me", "demo"]}


def _session_hub_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


HUB_PORT = _session_hub_port()
HUB_ENDPOINT = f"http://127.0.0.1:{HUB_PORT}"
assert "huggingface_hub" not in sys.modules, "conftest must set HF_ENDPOINT before huggingface_hub is imported"
os.environ["HF_ENDPOINT"] = HUB_ENDPOINT
os.environ["NO_PROXY"] = ",".join(filter(None, [os.environ.get("NO_PROXY"), "127.0.0.1", "localhost"]))
os.environ["no_proxy"] = os.environ["NO_PROXY"]


def _isolate_hf_home(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Point every huggingface_hub cache/token path at ``home`` and unset the token env vars.

    ``huggingface_hub`` reads ``HF_HOME`` when it is imported, so setting the variable is not
    enough: the module-level path constants (and their copies in submodules) are patched too.
    """
    from huggingface_hub import constants

    old_home = constants.HF_HOME
    monkeypatch.setenv("HF_HOME", str(home))
    for var in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_HUB_CACHE", "HF_XET_CACHE", "HF_ASSETS_CACHE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    for name, module in list(sys.modules.items()):
        if module is None or not (name == "huggingface_hub" or name.startswith("huggingface_hub.")):
            continue
        for attr, value in list(vars(module).items()):
            if attr.isupper() and isinstance(value, str) and value.startswith(old_home):
                monkeypatch.setattr(module, attr, str(home) + value[len(old_home) :])


@pytest.fixture
def _quiet_hub_clients() -> Iterator[None]:
    """No progress bars from huggingface_hub, only errors from transformers' logger."""
    from huggingface_hub.utils import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars

    bars_were_disabled = are_progress_bars_disabled()
    disable_progress_bars()
    tf_logging = None
    if "transformers" in sys.modules or _importable("transformers"):
        from transformers.utils import logging as tf_logging

        old_verbosity = tf_logging.get_verbosity()
        tf_logging.set_verbosity_error()
    try:
        yield
    finally:
        if not bars_were_disabled:
            enable_progress_bars()
        if tf_logging is not None:
            tf_logging.set_verbosity(old_verbosity)


def _importable(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


@pytest.fixture
def hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, _quiet_hub_clients: None) -> Iterator[str]:
    """A fresh local Hub for this test at ``HF_ENDPOINT``; yields that endpoint.

    huggingface_hub, transformers and datasets use it by default (HF_ENDPOINT), ``HF_HOME`` is a
    fresh temp folder (empty cache, no stored token), and ``HF_TOKEN`` is ``HUB_TEST_TOKEN``: the
    clients act as ``alice``, who may write to ``alice/*``, ``org/*``, ``me/*`` and ``demo/*``
    (``hf_test_bob`` is ``bob``). As on any server of :mod:`learngene_hf.testing.hub`, a request
    without a token (``token=False``) reads public repos only.
    """
    from learngene_hf.testing.hub import local_hub

    _isolate_hf_home(tmp_path / "hf_home", monkeypatch)
    monkeypatch.setenv("HF_TOKEN", HUB_TEST_TOKEN)
    with local_hub(tmp_path / "hub_root", tokens=HUB_TOKENS, grants=HUB_GRANTS, port=HUB_PORT) as endpoint:
        assert endpoint == HUB_ENDPOINT
        yield endpoint


@pytest.fixture
def hub_with_tokens(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, _quiet_hub_clients: None) -> Iterator[str]:
    """Like ``hub`` but ``HF_TOKEN`` is unset (requests carry the token they pass, or none) and
    alice and bob write only to their own namespaces."""
    from learngene_hf.testing.hub import local_hub

    _isolate_hf_home(tmp_path / "hf_home", monkeypatch)
    with local_hub(tmp_path / "hub_root", tokens=HUB_TOKENS, port=HUB_PORT) as endpoint:
        yield endpoint


# ==================================================================================================


# ==================================================================================================
# Data cache: the embedded dataset that tests generate goes to a per-session temporary folder, never
# to the user's ~/.cache/learngene_hf (tests that need their own cache still set the variable).
# ==================================================================================================


@pytest.fixture(scope="session", autouse=True)
def _session_data_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    import os

    cache = tmp_path_factory.mktemp("learngene_hf_cache")
    old = os.environ.get("LEARNGENE_HF_CACHE")
    os.environ["LEARNGENE_HF_CACHE"] = str(cache)
    yield cache
    if old is None:
        os.environ.pop("LEARNGENE_HF_CACHE", None)
    else:
        os.environ["LEARNGENE_HF_CACHE"] = old


def free_port() -> int:
    """A TCP port nobody listens on now: two-process launches use it instead of accelerate's fixed
    29500, so that several test runs on one machine do not collide."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# ==================================================================================================
# Example scripts: they set LEARNGENE_HF_DEFER_MODELS (to answer --help before torch) when a test
# loads them in-process; the variable is removed after every test, so later subprocesses that
# ``import learngene_hf`` register the model families as usual.
# ==================================================================================================


@pytest.fixture(autouse=True)
def _undo_deferred_models() -> Iterator[None]:
    was_set = "LEARNGENE_HF_DEFER_MODELS" in os.environ
    yield
    if not was_set:
        os.environ.pop("LEARNGENE_HF_DEFER_MODELS", None)
