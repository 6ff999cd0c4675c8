"""A local server that speaks the Hugging Face Hub protocol, for tests and air-gapped teams.

The real ``huggingface_hub`` and ``transformers`` clients talk to it unchanged: create a repo, push
files (``upload_file``, ``upload_folder``, ``create_commit``, ``push_to_hub``), branch, tag, and pull
by branch, tag or commit sha (``hf_hub_download``, ``snapshot_download``, ``from_pretrained``).

Everything lives on disk under one root folder, so a server started from the command line keeps
its repos across restarts::

    python -m learngene_hf.testing.hub --root /srv/hub --port 8080
    HF_ENDPOINT=http://127.0.0.1:8080 python train.py ...

Layout of the root folder::

    blobs/<sha[:2]>/<sha>                       file contents, keyed by their git blob sha1
    repos/<models|datasets|spaces>/<ns>/<name>/
        repo.json                               visibility, gating, owner, branches, tags, PR refs
        commits/<sha>.json                      {"parent", "tree": {path: blob sha}, "message", ...}

A commit sha is the sha1 of its canonical JSON (parent, tree, message, description, author, date),
so it is a 40-hex content hash like git's.

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
import base64
import contextlib
import hashlib
import json
import logging
import os
import re
import shutil
import socket
import sys
import tempfile
import threading
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import parse_qs, unquote, urlsplit

from learngene_hf.errors import HubError
from learngene_hf.io import atomic_path, write_json_atomic

__all__ = ["LocalHubServer", "local_hub", "validate_card_metadata", "main"]

logger = logging.getLogger(__name__)

OPEN_MODE_USER = "local-user"
_REPO_TYPE_DIRS = {"models": "model", "datasets": "dataset", "spaces": "space"}
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}$")
_SHA_RE = re.compile(r"^[0-9a-f]{40}$")
_YAML_BLOCK_RE = re.compile(r"^(\s*---(?:\r\n|\r|\n))([\S\s]*?)((?:\r\n|\r|\n)---[ \t]*(\r\n|\n|$))")
_INITIAL_GITATTRIBUTES = (
    "*.bin filter=lfs diff=lfs merge=lfs -text\n"
    "*.ckpt filter=lfs diff=lfs merge=lfs -text\n"
    "*.h5 filter=lfs diff=lfs merge=lfs -text\n"
    "*.onnx filter=lfs diff=lfs merge=lfs -text\n"
    "*.parquet filter=lfs diff=lfs merge=lfs -text\n"
    "*.pt filter=lfs diff=lfs merge=lfs -text\n"
    "*.pth filter=lfs diff=lfs merge=lfs -text\n"
    "*.safetensors filter=lfs diff=lfs merge=lfs -text\n"
    "*.zip filter=lfs diff=lfs merge=lfs -text\n"
)


def _now() -> str:
    """Current UTC time in the Hub's format, e.g. ``2024-05-01T12:00:00.123Z``."""
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def git_blob_sha(data: bytes) -> str:
    """The git blob sha1 of ``data`` (what ``git hash-object`` prints); used as ETag and blob id."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


class _HTTPError(Exception):
    """An error answer: status, message, and the ``X-Error-Code`` the client maps to an exception."""

    def __init__(self, status: int, message: str, code: str | None = None, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.headers = headers or {}


def validate_card_metadata(content: str) -> tuple[list[str], list[str]]:
    """Check a model card's YAML front matter like the Hub's ``/api/validate-yaml``.

    Args:
        content: the full ``README.md`` text.

    Returns:
        ``(errors, warnings)``: lists of messages. The card is valid when ``errors`` is empty.
        Rules: the front matter must be a YAML mapping; ``license``, ``library_name`` and
        ``pipeline_tag`` strings; ``tags`` a list of strings; ``base_model``, ``datasets``,
        ``language`` and ``metrics`` a string or a list of strings.
    """
    import yaml  # dependency of huggingface_hub

    match = _YAML_BLOCK_RE.search(content)
    if match is None:
        return [], ["Empty or missing yaml metadata in repo card (https://huggingface.co/docs/hub/model-cards#model-card-metadata)"]
    try:
        data = yaml.safe_load(match.group(2))
    except yaml.YAMLError as err:
        return [f"Invalid YAML in the card's front matter: {err}"], []
    if data is None:
        return [], ["Empty yaml metadata in repo card"]
    if not isinstance(data, dict):
        return [f"The card's front matter must be a YAML mapping (key: value), got {type(data).__name__}"], []

    errors: list[str] = []

    def is_str_list(value: Any) -> bool:
        return isinstance(value, list) and all(isinstance(v, str) for v in value)

    for key in ("license", "library_name", "pipeline_tag"):
        if key in data and not isinstance(data[key], str):
            errors.append(f'"{key}" must be a string, got {type(data[key]).__name__}: {data[key]!r}')
    if "tags" in data and not is_str_list(data["tags"]):
        errors.append(f'"tags" must be a list of strings, got {data["tags"]!r}')
    for key in ("base_model", "datasets", "language", "metrics"):
        if key in data and not (isinstance(data[key], str) or is_str_list(data[key])):
            errors.append(f'"{key}" must be a string or a list of strings, got {data[key]!r}')
    return errors, []


def _card_data(content: bytes) -> dict | None:
    """The front matter of a README as a dict, or None when missing or unreadable."""
    import yaml

    match = _YAML_BLOCK_RE.search(content.decode("utf-8", errors="replace"))
    if match is None:
        return None
    try:
        data = yaml.safe_load(match.group(2))
    except yaml.YAMLError:
        return None
    return data if isinstance(data, dict) else None


class _Store:
    """Repos, commits, refs and blobs on disk under ``root``. Callers hold ``lock`` for changes."""

    def __init__(self, root: Path):
        self.root = root
        self.lock = threading.RLock()
        (root / "blobs").mkdir(parents=True, exist_ok=True)
        (root / "repos").mkdir(parents=True, exist_ok=True)

    # -- paths -------------------------------------------------------------------------------
    def repo_dir(self, type_dir: str, repo_id: str) -> Path:
        return self.root / "repos" / type_dir / repo_id

    def blob_path(self, sha: str) -> Path:
        return self.root / "blobs" / sha[:2] / sha

    # -- repos -------------------------------------------------------------------------------
    def load_repo(self, type_dir: str, repo_id: str) -> dict | None:
        path = self.repo_dir(type_dir, repo_id) / "repo.json"
        if not path.is_file():
            return None
        return json.loads(path.read_text(encoding="utf-8"))

    def save_repo(self, type_dir: str, repo_id: str, meta: dict) -> None:
        write_json_atomic(self.repo_dir(type_dir, repo_id) / "repo.json", meta)

    def create_repo(self, type_dir: str, repo_id: str, *, private: bool, owner: str | None) -> dict:
        now = _now()
        meta = {
            "id": repo_id,
            "type": _REPO_TYPE_DIRS[type_dir],
            "private": private,
            "gated": False,
            "owner": owner,
            "created_at": now,
            "branches": {},
            "tags": {},
            "prs": {},
        }
        self.repo_dir(type_dir, repo_id).mkdir(parents=True, exist_ok=True)
        blob = self.put_blob(_INITIAL_GITATTRIBUTES.encode())
        sha = self.put_commit(type_dir, repo_id, parent=None, tree={".gitattributes": blob},
                              message="initial commit", description="", author=owner or OPEN_MODE_USER)
        meta["branches"]["main"] = sha
        self.save_repo(type_dir, repo_id, meta)
        return meta

    def delete_repo(self, type_dir: str, repo_id: str) -> None:
        shutil.rmtree(self.repo_dir(type_dir, repo_id))

    # -- blobs and commits -------------------------------------------------------------------
    def put_blob(self, data: bytes) -> str:
        sha = git_blob_sha(data)
        path = self.blob_path(sha)
        if not path.is_file():
            with atomic_path(path) as tmp:
                tmp.write_bytes(data)
        return sha

    def put_commit(self, type_dir: str, repo_id: str, *, parent: str | None, tree: dict[str, str],
                   message: str, description: str, author: str) -> str:
        commit = {"parent": parent, "tree": dict(sorted(tree.items())), "message": message,
                  "description": description, "author": author, "date": _now()}
        sha = hashlib.sha1(json.dumps(commit, sort_keys=True).encode()).hexdigest()
        write_json_atomic(self.repo_dir(type_dir, repo_id) / "commits" / f"{sha}.json", commit)
        return sha

    def get_commit(self, type_dir: str, repo_id: str, sha: str) -> dict | None:
        path = self.repo_dir(type_dir, repo_id) / "commits" / f"{sha}.json"
        if not path.is_file():
            return None
        return json.loads(path.read_text(encoding="utf-8"))

    def resolve(self, type_dir: str, repo_id: str, meta: dict, rev: str) -> str:
        """Turn a branch, tag, ``refs/...`` name or (abbreviated) commit sha into a commit sha."""
        for prefix, table in (("refs/heads/", "branches"), ("refs/tags/", "tags"), ("refs/pr/", "prs")):
            if rev.startswith(prefix) and rev[len(prefix):] in meta[table]:
                return meta[table][rev[len(prefix):]]
        if rev in meta["branches"]:
            return meta["branches"][rev]
        if rev in meta["tags"]:
            return meta["tags"][rev]
        rev_l = rev.lower()
        if _SHA_RE.match(rev_l) and self.get_commit(type_dir, repo_id, rev_l) is not None:
            return rev_l
        if re.fullmatch(r"[0-9a-f]{7,39}", rev_l):
            found = [p.stem for p in (self.repo_dir(type_dir, repo_id) / "commits").glob(f"{rev_l}*.json")]
            if len(found) == 1:
                return found[0]
        raise _HTTPError(404, f"Invalid rev id: {rev}", "RevisionNotFound")

    def history(self, type_dir: str, repo_id: str, sha: str) -> Iterator[tuple[str, dict]]:
        """Commits from ``sha`` back to the first one, newest first."""
        while sha is not None:
            commit = self.get_commit(type_dir, repo_id, sha)
            if commit is None:
                return
            yield sha, commit
            sha = commit["parent"]


class _Handler(BaseHTTPRequestHandler):
    """One HTTP request against the store of ``self.server.hub`` (a :class:`LocalHubServer`)."""

    protocol_version = "HTTP/1.1"
    server_version = "learngene-local-hub/1.0"

    # -- plumbing ----------------------------------------------------------------------------
    @property
    def hub(self) -> "LocalHubServer":
        return self.server.hub  # type: ignore[attr-defined]

    @property
    def store(self) -> _Store:
        return self.hub._store

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        # DEBUG: a pipeline's stage lines (INFO) stay readable; the standalone server shows them
        logger.debug("%s %s", self.address_string(), format % args)

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_HEAD(self) -> None:
        self._dispatch("HEAD")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _json_body(self) -> Any:
        body = self._body
        if not body:
            return {}
        try:
            return json.loads(body)
        except json.JSONDecodeError as err:
            raise _HTTPError(400, f"Request body is not valid JSON: {err}") from err

    def _send(self, status: int, body: bytes = b"", content_type: str = "application/json",
              headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD" and body:
            self.wfile.write(body)

    def _send_json(self, data: Any, status: int = 200, headers: dict[str, str] | None = None) -> None:
        self._send(status, json.dumps(data).encode(), headers=headers)

    def _endpoint(self) -> str:
        return f"http://{self.headers.get('Host') or self.hub.endpoint.split('://', 1)[1]}"

    def _dispatch(self, method: str) -> None:
        self._body = b""
        try:
            self._body = self._read_body()
            url = urlsplit(self.path)
            # split first, decode each part after: file paths may contain an encoded "/"
            parts = [unquote(p) for p in url.path.split("/") if p != ""]
            self._query = parse_qs(url.query)
            self._user = self._authenticate()
            self._route(method, parts)
        except _HTTPError as err:
            headers = {"X-Error-Message": err.message, **err.headers}
            if err.code:
                headers["X-Error-Code"] = err.code
            self._send_json({"error": err.message}, err.status, headers=headers)
        except (BrokenPipeError, ConnectionResetError):
            pass
        except Exception as err:  # never a 5xx: the client would retry for a long time
            logger.exception("local hub failed on %s %s", method, self.path)
            try:
                self._send_json({"error": f"Local hub error: {err!r}"}, 400,
                                headers={"X-Error-Message": f"Local hub error: {err!r}"})
            except OSError:
                pass

    # -- auth --------------------------------------------------------------------------------
    def _authenticate(self) -> str | None:
        auth = self.headers.get("Authorization", "")
        if not auth.lower().startswith("bearer "):
            return None
        token = auth[7:].strip()
        if not token:
            return None
        user = self.hub.user_for_token(token)
        if user is None:
            raise _HTTPError(401, "Invalid credentials in Authorization header")
        return user

    def _repo_for_read(self, type_dir: str, repo_id: str) -> dict:
        meta = self.store.load_repo(type_dir, repo_id) if _valid_repo_id(repo_id) else None
        if meta is None:
            raise _HTTPError(404, "Repository not found", "RepoNotFound")
        if meta["private"]:
            if self._user is None:
                raise _HTTPError(401, "Repository not found", "RepoNotFound")
            if not self._may_see_private(meta):
                raise _HTTPError(404, "Repository not found", "RepoNotFound")
        return meta

    def _may_see_private(self, meta: dict) -> bool:
        return meta["owner"] is None or self.hub.tokens is None or self._user == meta["owner"]

    def _repo_for_write(self, type_dir: str, repo_id: str) -> dict:
        meta = self._repo_for_read(type_dir, repo_id)
        self._check_may_write(meta["id"], meta["owner"])
        return meta

    def _check_may_write(self, repo_id: str, owner: str | None) -> None:
        if self._user is None and not self.hub.allow_anonymous_write:
            raise _HTTPError(401, f"You must be authenticated (pass a token) to write to {repo_id}.")
        if owner is not None and self.hub.tokens is not None and self._user != owner:
            raise _HTTPError(403, f"You don't have the rights to write to {repo_id}: it belongs to {owner}.")

    def _check_gate(self, meta: dict) -> None:
        if meta["gated"] and self._user is None:
            raise _HTTPError(401, f"Access to {meta['type']} {meta['id']} is restricted. You must have access "
                                  "to it and be authenticated to access it. Please log in.", "GatedRepo")

    # -- routing -----------------------------------------------------------------------------
    def _route(self, method: str, parts: list[str]) -> None:
        if parts[:1] == ["api"]:
            rest = parts[1:]
            if rest == ["whoami-v2"] and method == "GET":
                return self._whoami()
            if rest == ["repos", "create"] and method == "POST":
                return self._create_repo()
            if rest == ["repos", "delete"] and method == "DELETE":
                return self._delete_repo()
            if rest == ["validate-yaml"] and method == "POST":
                return self._validate_yaml()
            if len(rest) >= 3 and rest[0] in _REPO_TYPE_DIRS:
                return self._repo_api(method, rest[0], f"{rest[1]}/{rest[2]}", rest[3:])
        else:
            type_dir = "models"
            if parts[:1] in (["datasets"], ["spaces"]):
                type_dir, parts = parts[0], parts[1:]
            if len(parts) >= 5 and parts[2] == "resolve" and method in ("GET", "HEAD"):
                return self._resolve_file(type_dir, f"{parts[0]}/{parts[1]}", parts[3], "/".join(parts[4:]))
        raise _HTTPError(404, f"Unknown route {method} {self.path} on the local hub.")

    def _repo_api(self, method: str, type_dir: str, repo_id: str, rest: list[str]) -> None:
        action = rest[0] if rest else ""
        arg = "/".join(rest[1:])
        if method == "GET" and action == "":
            return self._repo_info(type_dir, repo_id, "main")
        if method == "GET" and action == "revision" and arg:
            return self._repo_info(type_dir, repo_id, arg)
        if method == "GET" and action == "tree" and len(rest) >= 2:
            return self._tree(type_dir, repo_id, rest[1], "/".join(rest[2:]))
        if method == "GET" and action == "refs":
            return self._refs(type_dir, repo_id)
        if method == "GET" and action == "commits" and arg:
            return self._commits(type_dir, repo_id, arg)
        if method == "POST" and action == "paths-info" and arg:
            return self._paths_info(type_dir, repo_id, arg)
        if method == "POST" and action == "preupload" and arg:
            return self._preupload(type_dir, repo_id, arg)
        if method == "POST" and action == "commit" and arg:
            return self._commit(type_dir, repo_id, arg)
        if action == "branch" and arg and method in ("POST", "DELETE"):
            return self._branch(method, type_dir, repo_id, arg)
        if action == "tag" and arg and method in ("POST", "DELETE"):
            return self._tag(method, type_dir, repo_id, arg)
        if method == "PUT" and action == "settings":
            return self._settings(type_dir, repo_id)
        raise _HTTPError(404, f"Unknown route {method} {self.path} on the local hub.")

    # -- account and repo management ---------------------------------------------------------
    def _whoami(self) -> None:
        if self._user is None:
            raise _HTTPError(401, "Invalid credentials in Authorization header")
        self._send_json({"type": "user", "id": self._user, "name": self._user, "fullname": self._user,
                         "orgs": [], "auth": {"type": "access_token", "accessToken": {"role": "write"}}})

    def _repo_url(self, type_dir: str, repo_id: str) -> str:
        prefix = "" if type_dir == "models" else f"{type_dir}/"
        return f"{self._endpoint()}/{prefix}{repo_id}"

    def _create_repo(self) -> None:
        body = self._json_body()
        name, namespace = body.get("name"), body.get("organization") or self._user
        type_dir = f"{body.get('type') or 'model'}s"
        if type_dir not in _REPO_TYPE_DIRS:
            raise _HTTPError(400, f"Unknown repo type {body.get('type')!r}: use model, dataset or space.")
        if namespace is None:
            raise _HTTPError(401, "Pass a token or a repo id of the form 'namespace/name' to create a repo.")
        repo_id = f"{namespace}/{name}"
        if not _valid_repo_id(repo_id):
            raise _HTTPError(400, f"Invalid repo id {repo_id!r}: use letters, digits, '.', '_', '-' only.")
        if "visibility" in body:
            private = body["visibility"] == "private"
        else:
            private = bool(body.get("private", False))
        url = self._repo_url(type_dir, repo_id)
        with self.store.lock:
            if self.store.load_repo(type_dir, repo_id) is not None:
                return self._send_json({"error": "You already created this repo", "url": url}, 409,
                                       headers={"X-Error-Message": "You already created this repo"})
            self._check_may_write(repo_id, None)
            owner = self._user if self.hub.tokens is not None else None
            self.store.create_repo(type_dir, repo_id, private=private, owner=owner)
        self._send_json({"url": url, "name": repo_id, "id": repo_id})

    def _delete_repo(self) -> None:
        body = self._json_body()
        namespace = body.get("organization") or self._user
        type_dir = f"{body.get('type') or 'model'}s"
        if type_dir not in _REPO_TYPE_DIRS or namespace is None:
            raise _HTTPError(404, "Repository not found", "RepoNotFound")
        repo_id = f"{namespace}/{body.get('name')}"
        with self.store.lock:
            self._repo_for_write(type_dir, repo_id)
            self.store.delete_repo(type_dir, repo_id)
        self._send_json({})

    def _settings(self, type_dir: str, repo_id: str) -> None:
        body = self._json_body()
        with self.store.lock:
            meta = self._repo_for_write(type_dir, repo_id)
            if "gated" in body:
                if body["gated"] not in (False, "auto", "manual"):
                    raise _HTTPError(400, f"gated must be False, 'auto' or 'manual', got {body['gated']!r}.")
                meta["gated"] = body["gated"]
            if "visibility" in body:
                meta["private"] = body["visibility"] == "private"
            if "private" in body:
                meta["private"] = bool(body["private"])
            self.store.save_repo(type_dir, repo_id, meta)
        self._send_json({})

    def _validate_yaml(self) -> None:
        content = self._json_body().get("content", "")
        if not isinstance(content, str):
            raise _HTTPError(400, "'content' must be the README text as a string.")
        errors, warnings = validate_card_metadata(content)
        status = 400 if errors else 200
        if "text/plain" in self.headers.get("Accept", ""):
            text = "\n".join(f"- {m}" for m in errors or warnings)
            return self._send(status, text.encode(), "text/plain; charset=utf-8")
        self._send_json({"errors": [{"message": m} for m in errors],
                         "warnings": [{"message": m} for m in warnings]}, status)

    # -- reading -----------------------------------------------------------------------------
    def _snapshot(self, type_dir: str, repo_id: str, rev: str) -> tuple[dict, str, dict]:
        """(repo meta, commit sha, commit) for ``rev``, after the access checks."""
        with self.store.lock:
            meta = self._repo_for_read(type_dir, repo_id)
            sha = self.store.resolve(type_dir, repo_id, meta, rev)
            return meta, sha, self.store.get_commit(type_dir, repo_id, sha)

    def _file_entry(self, path: str, blob: str) -> dict:
        return {"type": "file", "path": path, "oid": blob, "size": self.store.blob_path(blob).stat().st_size}

    def _repo_info(self, type_dir: str, repo_id: str, rev: str) -> None:
        meta, sha, commit = self._snapshot(type_dir, repo_id, rev)
        tree = commit["tree"]
        siblings = [{"rfilename": p, "size": self.store.blob_path(b).stat().st_size, "blobId": b}
                    for p, b in tree.items()]
        info: dict[str, Any] = {
            "_id": hashlib.sha1(f"{type_dir}/{repo_id}".encode()).hexdigest()[:24],
            "id": repo_id, "author": repo_id.split("/")[0], "sha": sha,
            "lastModified": commit["date"], "createdAt": meta["created_at"],
            "private": meta["private"], "gated": meta["gated"], "disabled": False,
            "downloads": 0, "likes": 0, "tags": [], "siblings": siblings,
            "usedStorage": sum(s["size"] for s in siblings),
        }
        if type_dir == "models":
            info["modelId"] = repo_id
        if type_dir == "spaces":
            info["sdk"] = "static"
        if "README.md" in tree:
            card = _card_data(self.store.blob_path(tree["README.md"]).read_bytes())
            if card is not None:
                info["cardData"] = card
                tags = card.get("tags")
                info["tags"] = [t for t in tags if isinstance(t, str)] if isinstance(tags, list) else []
                for key in ("library_name", "pipeline_tag"):
                    if isinstance(card.get(key), str):
                        info[key] = card[key]
        self._send_json(info)

    def _tree_entries(self, tree: dict[str, str], prefix: str, recursive: bool) -> list[dict]:
        prefix = prefix.strip("/")
        base = f"{prefix}/" if prefix else ""
        files, dirs = [], set()
        for path, blob in tree.items():
            if not path.startswith(base):
                continue
            rel = path[len(base):].split("/")
            if recursive or len(rel) == 1:
                files.append(self._file_entry(path, blob))
            for depth in range(1, len(rel) if recursive else min(len(rel), 2)):
                dirs.add(base + "/".join(rel[:depth]))
        folders = [{"type": "directory", "path": d, "size": 0,
                    "oid": hashlib.sha1(json.dumps({p: b for p, b in tree.items() if p.startswith(d + "/")},
                                                   sort_keys=True).encode()).hexdigest()}
                   for d in sorted(dirs)]
        return folders + sorted(files, key=lambda e: e["path"])

    def _last_commit(self, type_dir: str, repo_id: str, sha: str, path: str) -> dict:
        """The newest commit that changed ``path`` (a file) as ``{"id", "title", "date"}``."""
        history = self.store.history(type_dir, repo_id, sha)
        last_sha, last = next(history)
        blob = last["tree"].get(path)
        for older_sha, older in history:
            if older["tree"].get(path) != blob:
                break
            last_sha, last = older_sha, older
        return {"id": last_sha, "title": last["message"], "date": last["date"]}

    def _tree(self, type_dir: str, repo_id: str, rev: str, path: str) -> None:
        _, sha, commit = self._snapshot(type_dir, repo_id, rev)
        recursive = self._query.get("recursive", ["false"])[0].lower() in ("1", "true")
        expand = self._query.get("expand", ["false"])[0].lower() in ("1", "true")
        tree = commit["tree"]
        path = path.strip("/")
        if path and path not in tree and not any(p.startswith(path + "/") for p in tree):
            raise _HTTPError(404, f"{path} does not exist on {rev}", "EntryNotFound",
                             {"X-Repo-Commit": sha})
        entries = ([self._file_entry(path, tree[path])] if path in tree
                   else self._tree_entries(tree, path, recursive))
        if expand:
            for entry in entries:
                if entry["type"] == "file":
                    entry["lastCommit"] = self._last_commit(type_dir, repo_id, sha, entry["path"])
        self._send_json(entries)

    def _paths_info(self, type_dir: str, repo_id: str, rev: str) -> None:
        _, _, commit = self._snapshot(type_dir, repo_id, rev)
        form = parse_qs(self._body.decode())
        if not form and self._body.strip().startswith(b"{"):
            form = {k: v if isinstance(v, list) else [v] for k, v in self._json_body().items()}
        tree = commit["tree"]
        out = []
        for path in form.get("paths", []):
            path = path.strip("/")
            if path in tree:
                out.append(self._file_entry(path, tree[path]))
            elif any(p.startswith(path + "/") for p in tree):
                out.append(next(e for e in self._tree_entries(tree, os.path.dirname(path), False)
                                if e["path"] == path))
        self._send_json(out)

    def _refs(self, type_dir: str, repo_id: str) -> None:
        meta = self._repo_for_read(type_dir, repo_id)

        def refs(table: str, kind: str) -> list[dict]:
            return [{"name": n, "ref": f"refs/{kind}/{n}", "targetCommit": s} for n, s in sorted(meta[table].items())]

        data = {"branches": refs("branches", "heads"), "converts": [], "tags": refs("tags", "tags")}
        if self._query.get("include_prs"):
            data["pullRequests"] = refs("prs", "pr")
        self._send_json(data)

    def _commits(self, type_dir: str, repo_id: str, rev: str) -> None:
        _, sha, _ = self._snapshot(type_dir, repo_id, rev)
        self._send_json([{"id": s, "title": c["message"], "message": c["description"],
                          "authors": [{"user": c["author"]}], "date": c["date"]}
                         for s, c in self.store.history(type_dir, repo_id, sha)])

    def _resolve_file(self, type_dir: str, repo_id: str, rev: str, path: str) -> None:
        meta, sha, commit = self._snapshot(type_dir, repo_id, rev)
        self._check_gate(meta)
        blob = commit["tree"].get(path)
        if blob is None:
            raise _HTTPError(404, f"Entry not found: {path} at revision {rev}", "EntryNotFound",
                             {"X-Repo-Commit": sha})
        blob_path = self.store.blob_path(blob)
        size = blob_path.stat().st_size
        start, end = 0, size - 1
        status = 200
        headers = {"X-Repo-Commit": sha, "ETag": f'"{blob}"', "Accept-Ranges": "bytes",
                   "Content-Disposition": f'inline; filename="{os.path.basename(path)}"'}
        match = re.fullmatch(r"bytes=(\d*)-(\d*)", self.headers.get("Range", "").strip())
        if match and size > 0 and (match.group(1) or match.group(2)):
            if match.group(1):
                start = int(match.group(1))
                end = min(int(match.group(2)), size - 1) if match.group(2) else size - 1
            else:
                start = max(size - int(match.group(2)), 0)
            if start >= size or start > end:
                raise _HTTPError(416, f"Range {self.headers['Range']} outside of the {size}-byte file.",
                                 headers={"Content-Range": f"bytes */{size}"})
            status = 206
            headers["Content-Range"] = f"bytes {start}-{end}/{size}"
        length = end - start + 1 if size else 0
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(length))
        for key, value in headers.items():
            self.send_header(key, value)
        self.end_headers()
        if self.command == "HEAD" or length == 0:
            return
        with open(blob_path, "rb") as fh:
            fh.seek(start)
            remaining = length
            while remaining > 0:
                chunk = fh.read(min(1 << 20, remaining))
                if not chunk:
                    break
                self.wfile.write(chunk)
                remaining -= len(chunk)

    # -- writing -----------------------------------------------------------------------------
    def _preupload(self, type_dir: str, repo_id: str, rev: str) -> None:
        body = self._json_body()
        with self.store.lock:
            meta = self._repo_for_write(type_dir, repo_id)
            try:
                tree = self.store.get_commit(type_dir, repo_id, self.store.resolve(type_dir, repo_id, meta, rev))["tree"]
            except _HTTPError:
                tree = {}  # a branch that does not exist yet: the commit will say so
        files = [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False, "oid": tree.get(f["path"])}
                 for f in body.get("files", [])]
        self._send_json({"files": files, "commitOid": None})

    def _commit(self, type_dir: str, repo_id: str, rev: str) -> None:
        lines = [json.loads(line) for line in self._body.splitlines() if line.strip()]
        if not lines or lines[0].get("key") != "header":
            raise _HTTPError(400, "A commit body is NDJSON whose first line is {'key': 'header', ...}.")
        header = lines[0]["value"]
        create_pr = self._query.get("create_pr", ["0"])[0] in ("1", "true")
        with self.store.lock:
            meta = self._repo_for_write(type_dir, repo_id)
            branch = rev[len("refs/heads/"):] if rev.startswith("refs/heads/") else rev
            pr_num = None
            if create_pr:
                base = self.store.resolve(type_dir, repo_id, meta, rev)
                pr_num = max((int(n) for n in meta["prs"]), default=0) + 1
            elif rev.startswith("refs/pr/") and rev[len("refs/pr/"):] in meta["prs"]:
                pr_num = int(rev[len("refs/pr/"):])
                base = meta["prs"][str(pr_num)]
            elif branch in meta["branches"]:
                base = meta["branches"][branch]
            else:
                self.store.resolve(type_dir, repo_id, meta, rev)  # raises RevisionNotFound if unknown
                raise _HTTPError(400, f"Cannot commit to {rev!r}: it is not a branch. Commit to a branch "
                                      "(create it with create_branch) or pass create_pr=True.")
            parent = header.get("parentCommit")
            if parent and parent != base:
                raise _HTTPError(412, f"parentCommit {parent} is not the head of {rev} ({base}): pull and retry.")
            tree = dict(self.store.get_commit(type_dir, repo_id, base)["tree"])
            for line in lines[1:]:
                self._apply(line, tree)
            if "README.md" in tree:
                errors, _ = validate_card_metadata(self.store.blob_path(tree["README.md"]).read_text("utf-8"))
                if errors:
                    raise _HTTPError(400, "Invalid metadata in README.md: " + "; ".join(errors))
            sha = self.store.put_commit(type_dir, repo_id, parent=base, tree=tree,
                                        message=header.get("summary") or "", author=self._user or OPEN_MODE_USER,
                                        description=header.get("description") or "")
            if pr_num is not None:
                meta["prs"][str(pr_num)] = sha
            else:
                meta["branches"][branch] = sha
            self.store.save_repo(type_dir, repo_id, meta)
        url = self._repo_url(type_dir, repo_id)
        reply = {"commitOid": sha, "commitUrl": f"{url}/commit/{sha}", "success": True}
        if create_pr:
            reply["pullRequestUrl"] = f"{url}/discussions/{pr_num}"
        self._send_json(reply)

    def _apply(self, line: dict, tree: dict[str, str]) -> None:
        key, value = line.get("key"), line.get("value") or {}
        path = _clean_path(value.get("path", ""))
        if key == "file":
            if value.get("encoding", "base64") != "base64":
                raise _HTTPError(400, f"Unsupported encoding {value.get('encoding')!r} for {path}: use base64.")
            tree[path] = self.store.put_blob(base64.b64decode(value.get("content", "")))
        elif key == "deletedFile":
            if path not in tree:
                raise _HTTPError(404, f"A file with this name doesn't exist: {path}", "EntryNotFound")
            del tree[path]
        elif key == "deletedFolder":
            doomed = [p for p in tree if p.startswith(path.rstrip("/") + "/")]
            if not doomed:
                raise _HTTPError(404, f"A folder with this name doesn't exist: {path}", "EntryNotFound")
            for p in doomed:
                del tree[p]
        elif key == "lfsFile":
            raise _HTTPError(400, f"{path}: LFS uploads are not supported by the local hub (every file is "
                                  "uploaded as a regular file).")
        else:
            raise _HTTPError(400, f"Unknown commit operation {key!r}.")

    def _branch(self, method: str, type_dir: str, repo_id: str, branch: str) -> None:
        body = self._json_body()
        with self.store.lock:
            meta = self._repo_for_write(type_dir, repo_id)
            if method == "DELETE":
                if branch not in meta["branches"]:
                    raise _HTTPError(404, f"Invalid rev id: {branch}", "RevisionNotFound")
                if branch == "main":
                    raise _HTTPError(403, "The main branch cannot be deleted.")
                del meta["branches"][branch]
            else:
                if branch in meta["branches"]:
                    raise _HTTPError(409, f"Reference already exists: refs/heads/{branch}")
                start = body.get("startingPoint") or "main"
                meta["branches"][branch] = self.store.resolve(type_dir, repo_id, meta, start)
            self.store.save_repo(type_dir, repo_id, meta)
        self._send_json({})

    def _tag(self, method: str, type_dir: str, repo_id: str, arg: str) -> None:
        body = self._json_body()
        with self.store.lock:
            meta = self._repo_for_write(type_dir, repo_id)
            if method == "DELETE":
                if arg not in meta["tags"]:
                    raise _HTTPError(404, f"Invalid rev id: {arg}", "RevisionNotFound")
                del meta["tags"][arg]
            else:
                tag = body.get("tag")
                if not tag or not isinstance(tag, str):
                    raise _HTTPError(400, "Pass the tag name as {'tag': name}.")
                if tag in meta["tags"]:
                    raise _HTTPError(409, f"Tag already exists: refs/tags/{tag}")
                meta["tags"][tag] = self.store.resolve(type_dir, repo_id, meta, arg)
            self.store.save_repo(type_dir, repo_id, meta)
        self._send_json({})


def _valid_repo_id(repo_id: str) -> bool:
    parts = repo_id.split("/")
    return len(parts) == 2 and all(_NAME_RE.match(p) and ".." not in p for p in parts)


def _clean_path(path: str) -> str:
    """A repo file path, checked: relative, no ``..``/``.``/empty parts, not inside ``.git``."""
    parts = path.strip("/").split("/")
    if not path or any(p in ("", ".", "..") for p in parts) or parts[0] == ".git" or "\\" in path:
        raise _HTTPError(400, f"Invalid path in repo {path!r}: use a relative path like 'dir/file.json'.")
    return "/".join(parts)


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

    def __init__(self, root: str | os.PathLike, host: str = "127.0.0.1", port: int = 0,
                 tokens: dict[str, str] | None = None, *, allow_anonymous_write: bool = True):
        if tokens is not None and (not isinstance(tokens, dict) or not all(
                isinstance(k, str) and k and isinstance(v, str) and v for k, v in tokens.items())):
            raise HubError(f"tokens must map non-empty token strings to user names, got {tokens!r}.")
        if not isinstance(port, int) or not 0 <= port < 65536:
            raise HubError(f"port must be an int in [0, 65535] (0 picks a free port), got {port!r}.")
        self.root = Path(root)
        self.host = host
        self.port = port
        self.tokens = dict(tokens) if tokens is not None else None
        self.allow_anonymous_write = allow_anonymous_write
        self._store = _Store(self.root)
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
            httpd = _Server((self.host, self.port), _Handler)
        except OSError as err:
            raise HubError(f"Cannot start the local hub on {self.host}:{self.port} ({err}). "
                           "Pick another port, or port=0 for a free one.") from err
        httpd.hub = self  # type: ignore[attr-defined]
        self._httpd = httpd
        self._thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="local-hub", daemon=True)
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
def local_hub(root: str | os.PathLike | None = None, *, tokens: dict[str, str] | None = None,
              port: int = 0, allow_anonymous_write: bool = True) -> Iterator[str]:
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
        server = stack.enter_context(LocalHubServer(root, port=port, tokens=tokens,
                                                    allow_anonymous_write=allow_anonymous_write))
        yield server.endpoint


def main(argv: list[str] | None = None) -> int:
    """Command line: ``python -m learngene_hf.testing.hub --root DIR --port N [--token TOKEN:USER ...]``."""
    parser = argparse.ArgumentParser(
        prog="python -m learngene_hf.testing.hub",
        description="Serve a folder of repos over the Hugging Face Hub protocol (point HF_ENDPOINT at it).")
    parser.add_argument("--root", required=True, help="folder holding the repos (created if missing)")
    parser.add_argument("--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8080, help="TCP port (0 = any free port)")
    parser.add_argument("--token", action="append", default=[], metavar="TOKEN:USER",
                        help="accept this token as this user (repeatable); default: accept any token")
    parser.add_argument("--require-token-for-write", action="store_true",
                        help="refuse repo creation and pushes without a token")
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
        server = LocalHubServer(args.root, host=args.host, port=args.port, tokens=tokens,
                                allow_anonymous_write=not args.require_token_for_write).start()
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
