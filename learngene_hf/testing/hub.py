"""A local server that speaks the Hugging Face Hub protocol, for tests and air-gapped teams.

The real ``huggingface_hub`` and ``transformers`` clients talk to it unchanged: create a repo, push
files (``upload_file``, ``upload_folder``, ``create_commit``, ``push_to_hub``), branch, tag, and pull
by branch, tag or commit sha (``hf_hub_download``, ``snapshot_download``, ``from_pretrained``).

Everything lives on disk under one root folder, so a server started from the command line keeps
its repos across restarts. A team server gives every member a token (a tokens file keeps them out
of ``ps``)::

    python -m learngene_hf.testing.hub --root /srv/hub --port 8080 --tokens-file /srv/hub-tokens.json
    HF_ENDPOINT=http://127.0.0.1:8080 HF_TOKEN=hf_alice_secret python train.py ...

The root folder's layout (blobs keyed by their git blob sha1, one folder per repo with its
``repo.json`` and commits) is described in :mod:`learngene_hf.testing.hub_store`, which holds the
store; the HTTP request handler is :mod:`learngene_hf.testing.hub_handler` and the model card
checks (:func:`~learngene_hf.testing.hub_cards.validate_card_metadata`) are in
:mod:`learngene_hf.testing.hub_cards`. This module holds the server (:class:`LocalHubServer`),
:func:`local_hub` and the command line.

Access (secure by default):

* ``tokens`` maps token -> user name; a request with any other token gets a 401 ``Invalid
  credentials in Authorization header``, as on the real Hub. Without tokens the server knows no
  one: it serves public repos and accepts no writes.
* A user writes (creates, pushes, branches, tags, changes settings, deletes) only in its own
  namespace (``alice`` -> ``alice/*``) and in the namespaces ``grants`` gives it (``{"alice":
  ["team"]}`` -> ``team/*`` too); a repo also stays writable by the user who created it.
* A private repo is visible only to the users who may write to it; creating one needs a token.
  A gated repo serves files only to requests with a valid token.
* ``allow_anonymous_writes=True`` (``--allow-anonymous-writes``) lets requests without a token
  create and push repos, in namespaces that no token user owns or is granted and in repos that
  no user created: an opt-in for a throw-away server of one person.
* A ``host`` other than a loopback address without tokens is refused: anyone on the network could
  reach it. With tokens and anonymous writes on such a host, a warning says who can write.

The tokens file (``--tokens-file``) is JSON, token -> user name, or token -> ``{"user": name,
"namespaces": [granted, ...]}``::

    {"hf_alice_secret": "alice", "hf_bob_secret": {"user": "bob", "namespaces": ["team"]}}

Only the standard library is used, plus PyYAML (a dependency of ``huggingface_hub``) to check
model card metadata in ``/api/validate-yaml``.
"""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import json
import logging
import os
import socket
import sys
import tempfile
import threading
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any, Iterator, Sequence

from learngene_hf.errors import HubError
from learngene_hf.testing.hub_handler import LOGGER_NAME, Handler
from learngene_hf.testing.hub_store import Store, valid_name

__all__ = ["LocalHubServer", "local_hub", "main"]

logger = logging.getLogger(LOGGER_NAME)


def is_loopback(host: str) -> bool:
    """Whether ``host`` is a loopback address (``127.0.0.0/8``, ``::1``, ``localhost``): this machine only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: it may resolve to any interface
        return False


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
        host: interface to bind; keep ``127.0.0.1`` unless other machines must reach it (then
            tokens are required).
        port: TCP port; ``0`` picks a free one (read it back from :attr:`endpoint`).
        tokens: ``{token: user name}``, the only tokens accepted. ``None``: no one may write,
            unless ``allow_anonymous_writes``.
        grants: ``{user name: [namespace, ...]}``, namespaces a user may write to besides its own.
        allow_anonymous_writes: let requests without a token create and push repos in namespaces
            that no token user owns or is granted.

    Example::

        with LocalHubServer(tmp_dir, tokens={"hf_test": "alice"}, grants={"alice": ["team"]}) as server:
            HfApi(endpoint=server.endpoint, token="hf_test").create_repo("team/demo")
    """

    def __init__(
        self,
        root: str | os.PathLike,
        host: str = "127.0.0.1",
        port: int = 0,
        tokens: dict[str, str] | None = None,
        *,
        grants: dict[str, Sequence[str]] | None = None,
        allow_anonymous_writes: bool = False,
    ):
        if tokens is not None and (
            not isinstance(tokens, dict)
            or not all(isinstance(k, str) and k and isinstance(v, str) and valid_name(v) for k, v in tokens.items())
        ):
            raise HubError(
                "tokens must map non-empty token strings to user names (letters, digits, '.', '_', '-'), "
                f"got {tokens!r}."
            )
        if grants is not None and (
            not isinstance(grants, dict)
            or not all(
                isinstance(user, str) and not isinstance(names, str) and all(valid_name(n) for n in names)
                for user, names in grants.items()
            )
        ):
            raise HubError(
                f"grants must map user names to lists of namespaces, e.g. {{'alice': ['team']}}, got {grants!r}."
            )
        if not isinstance(port, int) or not 0 <= port < 65536:
            raise HubError(f"port must be an int in [0, 65535] (0 picks a free port), got {port!r}.")
        self.root = Path(root)
        self.host = host
        self.port = port
        self.tokens = dict(tokens or {})
        self.grants = {user: sorted(set(names)) for user, names in (grants or {}).items()}
        self.allow_anonymous_writes = bool(allow_anonymous_writes)
        if not is_loopback(host):
            if not self.tokens:
                raise HubError(
                    f"Refusing to serve on {host} without tokens: anyone on the network could reach the repos. "
                    "Give every user a token (--token TOKEN:USER or --tokens-file FILE), or bind 127.0.0.1."
                )
            if self.allow_anonymous_writes:
                logger.warning(
                    "WARNING: the local hub on %s accepts writes without a token (--allow-anonymous-writes): anyone "
                    "who can reach it may create and overwrite repos outside the token users' namespaces.",
                    host,
                )
        try:
            self.store = Store(self.root)
        except OSError as err:
            raise HubError(f"Cannot use {self.root} as the hub's root folder ({err}); give a writable folder.") from err
        self._httpd: _Server | None = None
        self._thread: threading.Thread | None = None

    def user_for_token(self, token: str) -> str | None:
        """The user a token belongs to, or ``None`` if the server does not accept it."""
        return self.tokens.get(token)

    def namespaces_of(self, user: str | None) -> set[str]:
        """The namespaces ``user`` may write to: its own and those it is granted (none for ``None``)."""
        return set() if user is None else {user, *self.grants.get(user, ())}

    def claimed(self, namespace: str) -> bool:
        """Whether a token user owns ``namespace`` or is granted it (anonymous writes never reach it)."""
        return namespace in self.tokens.values() or any(namespace in names for names in self.grants.values())

    def may_write(self, user: str | None, repo_id: str, owner: str | None) -> bool:
        """Whether ``user`` (``None``: no token) may change repo ``repo_id`` created by ``owner``
        (``None``: a repo nobody owns, or one not created yet)."""
        namespace = repo_id.split("/")[0]
        if user is not None and (namespace in self.namespaces_of(user) or user == owner):
            return True
        return owner is None and self.allow_anonymous_writes and not self.claimed(namespace)

    def may_see_private(self, user: str | None, repo_id: str, owner: str | None) -> bool:
        """Whether ``user`` may see the private repo ``repo_id`` created by ``owner``."""
        return user is not None and (repo_id.split("/")[0] in self.namespaces_of(user) or user == owner)

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
    grants: dict[str, Sequence[str]] | None = None,
    port: int = 0,
    allow_anonymous_writes: bool = False,
) -> Iterator[str]:
    """Run a :class:`LocalHubServer` on 127.0.0.1 for the duration of the block; yields its endpoint.

    Nothing about the Hub clients is changed: give the endpoint to the calls that should use it
    (``HfApi(endpoint=...)``, ``snapshot_download(endpoint=...)``, ``Learngene.push_to_hub(...,
    endpoint=...)``), or start the server on a fixed ``port`` and set ``HF_ENDPOINT`` to its URL
    before ``huggingface_hub`` is imported (that is how transformers' ``push_to_hub`` /
    ``from_pretrained`` reach it).

    Args:
        root: folder for the repos; a temporary folder (deleted afterwards) when ``None``.
        tokens: ``{token: user}``, the tokens accepted (see :class:`LocalHubServer`).
        grants: ``{user: [namespace, ...]}``, namespaces a user may write besides its own.
        port: TCP port, ``0`` for a free one.
        allow_anonymous_writes: let requests without a token create and push repos (in
            namespaces no token user holds).

    Example::

        with local_hub(tokens={"hf_me": "me"}) as endpoint:
            learngene.push_to_hub("me/tiny", endpoint=endpoint, token="hf_me")
            Learngene.from_pretrained("me/tiny", endpoint=endpoint)
    """
    with contextlib.ExitStack() as stack:
        if root is None:
            root = stack.enter_context(tempfile.TemporaryDirectory(prefix="local-hub-"))
        server = stack.enter_context(
            LocalHubServer(root, port=port, tokens=tokens, grants=grants, allow_anonymous_writes=allow_anonymous_writes)
        )
        yield server.endpoint


def read_tokens_file(path: str | os.PathLike) -> tuple[dict[str, str], dict[str, list[str]]]:
    """``(tokens, grants)`` from a tokens file: JSON, token -> user name or token -> ``{"user": name,
    "namespaces": [...]}``. A bad file raises :class:`HubError` naming it."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise HubError(f"Cannot read the tokens file {path} ({err}); give a JSON file like {TOKENS_EXAMPLE}.") from err
    if not isinstance(data, dict) or not data:
        raise HubError(f"The tokens file {path} must hold a non-empty JSON object like {TOKENS_EXAMPLE}.")
    tokens: dict[str, str] = {}
    grants: dict[str, list[str]] = {}
    for token, entry in data.items():
        if isinstance(entry, str):
            entry = {"user": entry}
        names = entry.get("namespaces", []) if isinstance(entry, dict) else None
        if (
            not isinstance(entry, dict)
            or set(entry) - {"user", "namespaces"}
            or not isinstance(entry.get("user"), str)
            or not isinstance(names, list)
            or not all(isinstance(n, str) for n in names)
        ):
            raise HubError(
                f"The tokens file {path}: the entry of token {token[:4]}... must be a user name or "
                f'{{"user": NAME, "namespaces": [...]}}, got {entry!r}; see {TOKENS_EXAMPLE}.'
            )
        tokens[token] = entry["user"]
        grants.setdefault(entry["user"], []).extend(names)
    return tokens, grants


TOKENS_EXAMPLE = '{"hf_alice_secret": "alice", "hf_bob_secret": {"user": "bob", "namespaces": ["team"]}}'


def _token_argument(text: str) -> tuple[str, str, list[str]]:
    token, user, namespaces = (text.split(":", 2) + [""])[:3]
    if not token or not user:
        raise argparse.ArgumentTypeError(f"expected TOKEN:USER or TOKEN:USER:NAMESPACE,..., got {text!r}")
    return token, user, [n for n in namespaces.split(",") if n]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m learngene_hf.testing.hub",
        description="Serve a folder of repos over the Hugging Face Hub protocol (point HF_ENDPOINT at it). "
        "Secure by default: only known tokens write, each in its own namespace (and those granted to it); "
        "private repos are visible only to the users who may write to them.",
        epilog=f"A team server: --tokens-file FILE, a JSON file like {TOKENS_EXAMPLE} (tokens given with --token "
        "show in the process list). Every user then sets HF_ENDPOINT to the server and HF_TOKEN to its token.",
    )
    parser.add_argument("--root", required=True, help="folder holding the repos (created if missing)")
    parser.add_argument(
        "--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1; any other needs tokens)"
    )
    parser.add_argument("--port", type=int, default=8080, help="TCP port (0 = any free port)")
    parser.add_argument(
        "--token",
        action="append",
        default=[],
        type=_token_argument,
        metavar="TOKEN:USER[:NS,...]",
        help="accept this token as this user, who may write to USER/* and to the namespaces NS (repeatable)",
    )
    parser.add_argument("--tokens-file", default=None, metavar="FILE", help="JSON tokens file (see below)")
    parser.add_argument(
        "--allow-anonymous-writes",
        action="store_true",
        help="let requests without a token create and push repos in namespaces no token user holds (default: refused)",
    )
    parser.add_argument("--require-token-for-write", action="store_true", help=argparse.SUPPRESS)  # the default now
    parser.add_argument("--quiet", action="store_true", help="do not log each request")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Command line: ``python -m learngene_hf.testing.hub --root DIR --port N [--token TOKEN:USER ...]``."""
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO, format="%(message)s")
    if not args.quiet:
        logger.setLevel(logging.DEBUG)  # one line per request
    try:
        tokens, grants = read_tokens_file(args.tokens_file) if args.tokens_file else ({}, {})
        for token, user, namespaces in args.token:
            tokens[token] = user
            grants.setdefault(user, []).extend(namespaces)
        server = LocalHubServer(
            args.root,
            host=args.host,
            port=args.port,
            tokens=tokens,
            grants=grants,
            allow_anonymous_writes=args.allow_anonymous_writes,
        ).start()
    except HubError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"Local hub serving {Path(args.root).resolve()} at {server.endpoint}", flush=True)
    if not tokens and not args.allow_anonymous_writes:
        print("No tokens given: the repos are read-only (add --token TOKEN:USER or --tokens-file FILE).", flush=True)
    print(f"Use it with: export HF_ENDPOINT={server.endpoint}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
