"""A local server that speaks the Hugging Face Hub protocol, for tests and air-gapped teams.

The real ``huggingface_hub`` and ``transformers`` clients talk to it unchanged: create a repo, push
files (``upload_file``, ``upload_folder``, ``create_commit``, ``push_to_hub``), branch, tag, and pull
by branch, tag or commit sha (``hf_hub_download``, ``snapshot_download``, ``from_pretrained``).

Everything lives on disk under one root folder, so a server started from the command line keeps
its repos across restarts::

    python -m learngene_hf.testing.hub --root /srv/hub --port 8080
    HF_ENDPOINT=http://127.0.0.1:8080 python train.py ...

The root folder's layout (blobs keyed by their git blob sha1, one folder per repo with its
``repo.json`` and commits) is described in :mod:`learngene_hf.testing.hub_store`, which holds the
store; the HTTP request handler is :mod:`learngene_hf.testing.hub_handler` and the model card
checks (:func:`~learngene_hf.testing.hub_cards.validate_card_metadata`) are in
:mod:`learngene_hf.testing.hub_cards`. This module holds the server (:class:`LocalHubServer`),
:func:`local_hub` and the command line.

Authentication: ``tokens`` maps token -> user name. With ``tokens=None`` every non-empty
``Bearer`` token is valid (user ``"local-user"``). A private repo needs a valid token (and, when
the repo has an owner, the owner's token); a gated repo serves files only to requests with a valid
token. A token that is not valid gets a 401 ``Invalid credentials in Authorization header``, as on
the real Hub. Anonymous writes are allowed unless ``allow_anonymous_write=False``; a repo created
with a token records that token's user as its owner, and only the owner may then write to it.

Only the standard library is used, plus PyYAML (a dependency of ``huggingface_hub``) to check
model card metadata in ``/api/validate-yaml``.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import socket
import sys
import tempfile
import threading
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any, Iterator

from learngene_hf.errors import HubError
from learngene_hf.testing.hub_handler import LOGGER_NAME, Handler
from learngene_hf.testing.hub_store import OPEN_MODE_USER, Store

__all__ = ["LocalHubServer", "local_hub", "main"]

logger = logging.getLogger(LOGGER_NAME)


class _Server(ThreadingHTTPServer):
    """Remembers its open client connections so that :meth:`LocalHubServer.stop` can close them:
    a keep-alive connection left open would go on being served by the stopped server's store."""

    daemon_threads = True

    def __init__(self, *args: Any, **kwargs: Any):
        self.connections: set[Any] = set()
        self.connections_lock = threading.Lock()
        super().__init__(*args, **kwargs)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self.connections_lock:
            self.connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self.connections_lock:
            self.connections.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        with self.connections_lock:
            open_now = list(self.connections)
        for request in open_now:
            try:
                request.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class LocalHubServer:
    """A Hub-protocol HTTP server over a folder of repos, run on a background thread.

    Args:
        root: folder that holds the repos; created if missing, reused if it exists.
        host: interface to bind; keep ``127.0.0.1`` unless other machines must reach it.
        port: TCP port; ``0`` picks a free one (read it back from :attr:`endpoint`).
        tokens: ``{token: user name}``. ``None`` accepts any non-empty ``Bearer`` token.
        allow_anonymous_write: let requests without a token create repos and push.

    Example::

        with LocalHubServer(tmp_dir, tokens={"hf_test": "alice"}) as server:
            HfApi(endpoint=server.endpoint, token="hf_test").create_repo("alice/demo")
    """

    def __init__(
        self,
        root: str | os.PathLike,
        host: str = "127.0.0.1",
        port: int = 0,
        tokens: dict[str, str] | None = None,
        *,
        allow_anonymous_write: bool = True,
    ):
        if tokens is not None and (
            not isinstance(tokens, dict)
            or not all(isinstance(k, str) and k and isinstance(v, str) and v for k, v in tokens.items())
        ):
            raise HubError(f"tokens must map non-empty token strings to user names, got {tokens!r}.")
        if not isinstance(port, int) or not 0 <= port < 65536:
            raise HubError(f"port must be an int in [0, 65535] (0 picks a free port), got {port!r}.")
        self.root = Path(root)
        self.host = host
        self.port = port
        self.tokens = dict(tokens) if tokens is not None else None
        self.allow_anonymous_write = allow_anonymous_write
        self.store = Store(self.root)
        self._httpd: _Server | None = None
        self._thread: threading.Thread | None = None

    def user_for_token(self, token: str) -> str | None:
        """The user a token belongs to, or ``None`` if the server does not accept it."""
        if self.tokens is None:
            return OPEN_MODE_USER if token else None
        return self.tokens.get(token)

    @property
    def endpoint(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:41234``; only valid once started."""
        if self._httpd is None:
            raise HubError("The local hub is not running: call start() (or use it as a context manager) first.")
        return f"http://{self.host}:{self._httpd.server_address[1]}"

    def start(self) -> "LocalHubServer":
        """Bind the port and serve on a daemon thread. Returns ``self``."""
        if self._httpd is not None:
            return self
        try:
            httpd = _Server((self.host, self.port), Handler)
        except OSError as err:
            raise HubError(
                f"Cannot start the local hub on {self.host}:{self.port} ({err}). "
                "Pick another port, or port=0 for a free one."
            ) from err
        httpd.hub = self  # type: ignore[attr-defined]
        self._httpd = httpd
        self._thread = threading.Thread(
            target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, name="local-hub", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and free the port. Safe to call twice."""
        if self._httpd is None:
            return
        self._httpd.shutdown()
        self._httpd.close_connections()
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._httpd, self._thread = None, None

    def serve_forever(self) -> None:
        """Serve on the calling thread until interrupted (used by the command line)."""
        self.start()
        assert self._thread is not None
        try:
            while self._thread.is_alive():
                self._thread.join(0.5)
        finally:
            self.stop()

    def __enter__(self) -> "LocalHubServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@contextlib.contextmanager
def local_hub(
    root: str | os.PathLike | None = None,
    *,
    tokens: dict[str, str] | None = None,
    port: int = 0,
    allow_anonymous_write: bool = True,
) -> Iterator[str]:
    """Run a :class:`LocalHubServer` for the duration of the block; yields its endpoint.

    Nothing about the Hub clients is changed: give the endpoint to the calls that should use it
    (``HfApi(endpoint=...)``, ``snapshot_download(endpoint=...)``, ``Learngene.push_to_hub(...,
    endpoint=...)``), or start the server on a fixed ``port`` and set ``HF_ENDPOINT`` to its URL
    before ``huggingface_hub`` is imported (that is how transformers' ``push_to_hub`` /
    ``from_pretrained`` reach it).

    Args:
        root: folder for the repos; a temporary folder (deleted afterwards) when ``None``.
        tokens: ``{token: user}``; ``None`` accepts any non-empty token.
        port: TCP port, ``0`` for a free one.
        allow_anonymous_write: let requests without a token create repos and push.

    Example::

        with local_hub() as endpoint:
            learngene.push_to_hub("me/tiny", endpoint=endpoint)
            Learngene.from_pretrained("me/tiny", endpoint=endpoint)
    """
    with contextlib.ExitStack() as stack:
        if root is None:
            root = stack.enter_context(tempfile.TemporaryDirectory(prefix="local-hub-"))
        server = stack.enter_context(
            LocalHubServer(root, port=port, tokens=tokens, allow_anonymous_write=allow_anonymous_write)
        )
        yield server.endpoint


def main(argv: list[str] | None = None) -> int:
    """Command line: ``python -m learngene_hf.testing.hub --root DIR --port N [--token TOKEN:USER ...]``."""
    parser = argparse.ArgumentParser(
        prog="python -m learngene_hf.testing.hub",
        description="Serve a folder of repos over the Hugging Face Hub protocol (point HF_ENDPOINT at it).",
    )
    parser.add_argument("--root", required=True, help="folder holding the repos (created if missing)")
    parser.add_argument("--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8080, help="TCP port (0 = any free port)")
    parser.add_argument(
        "--token",
        action="append",
        default=[],
        metavar="TOKEN:USER",
        help="accept this token as this user (repeatable); default: accept any token",
    )
    parser.add_argument(
        "--require-token-for-write", action="store_true", help="refuse repo creation and pushes without a token"
    )
    parser.add_argument("--quiet", action="store_true", help="do not log each request")
    args = parser.parse_args(argv)
    tokens = None
    if args.token:
        tokens = {}
        for item in args.token:
            token, sep, user = item.partition(":")
            if not sep or not token or not user:
                parser.error(f"--token expects TOKEN:USER, got {item!r}")
            tokens[token] = user
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO, format="%(message)s")
    if not args.quiet:
        logger.setLevel(logging.DEBUG)  # one line per request
    try:
        server = LocalHubServer(
            args.root,
            host=args.host,
            port=args.port,
            tokens=tokens,
            allow_anonymous_write=not args.require_token_for_write,
        ).start()
    except HubError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"Local hub serving {Path(args.root).resolve()} at {server.endpoint}", flush=True)
    print(f"Use it with: export HF_ENDPOINT={server.endpoint}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
