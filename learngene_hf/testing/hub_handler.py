"""The HTTP request handler of the local Hub (:mod:`learngene_hf.testing.hub`).

:class:`Handler` answers one request of the Hub protocol (repo management, reading: info, trees,
refs, commits and file downloads with ranges; writing: preupload, NDJSON commits, branches, tags,
settings) against the :class:`~learngene_hf.testing.hub_store.Store` of the server it runs in
(``self.server.hub``, a :class:`~learngene_hf.testing.hub.LocalHubServer`), with its access rules
(tokens, private and gated repos, owners). Card metadata is checked by
:mod:`learngene_hf.testing.hub_cards`. Only the standard library is used.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from learngene_hf.testing.hub_cards import card_data, validate_card_metadata
from learngene_hf.testing.hub_store import REPO_TYPE_DIRS, HTTPError, Store, valid_repo_id
from learngene_hf.testing.hub_writes import WriteRoutes

#: The logger of the request lines (DEBUG) and of handler failures; the command line of
#: :mod:`learngene_hf.testing.hub` shows the request lines.
LOGGER_NAME = "learngene_hf.testing.hub"
logger = logging.getLogger(LOGGER_NAME)


class Handler(WriteRoutes, BaseHTTPRequestHandler):
    """One HTTP request against the store of ``self.server.hub`` (a
    :class:`~learngene_hf.testing.hub.LocalHubServer`)."""

    protocol_version = "HTTP/1.1"
    server_version = "learngene-local-hub/1.0"

    # -- plumbing ----------------------------------------------------------------------------
    @property
    def hub(self) -> Any:
        """The :class:`~learngene_hf.testing.hub.LocalHubServer` this request was sent to."""
        return self.server.hub  # type: ignore[attr-defined]

    @property
    def store(self) -> Store:
        return self.hub.store

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
            raise HTTPError(400, f"Request body is not valid JSON: {err}") from err

    def _send(
        self,
        status: int,
        body: bytes = b"",
        content_type: str = "application/json",
        headers: dict[str, str] | None = None,
    ) -> None:
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
        except HTTPError as err:
            headers = {"X-Error-Message": err.message, **err.headers}
            if err.code:
                headers["X-Error-Code"] = err.code
            self._send_json({"error": err.message}, err.status, headers=headers)
        except (BrokenPipeError, ConnectionResetError):
            pass
        except Exception as err:  # never a 5xx: the client would retry for a long time
            logger.exception("local hub failed on %s %s", method, self.path)
            try:
                self._send_json(
                    {"error": f"Local hub error: {err!r}"},
                    400,
                    headers={"X-Error-Message": f"Local hub error: {err!r}"},
                )
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
            raise HTTPError(
                401,
                "Invalid credentials in Authorization header: this hub does not know the token; use the token the "
                "hub's operator gave you, or none (token=False, HF_TOKEN unset) to read public repos.",
            )
        return user

    def _repo_for_read(self, type_dir: str, repo_id: str) -> dict:
        meta = self.store.load_repo(type_dir, repo_id) if valid_repo_id(repo_id) else None
        if meta is None:
            raise HTTPError(404, "Repository not found", "RepoNotFound")
        if meta["private"] and not self.hub.may_see_private(self._user, meta["id"], meta["owner"]):
            raise HTTPError(401 if self._user is None else 404, "Repository not found", "RepoNotFound")
        return meta

    def _repo_for_write(self, type_dir: str, repo_id: str) -> dict:
        meta = self._repo_for_read(type_dir, repo_id)
        self._check_may_write(meta["id"], meta["owner"])
        return meta

    def _check_may_write(self, repo_id: str, owner: str | None) -> None:
        """Refuse (401 without a token, 403 with one) a change of ``repo_id`` the server's rules forbid."""
        if self.hub.may_write(self._user, repo_id, owner):
            return
        namespace = repo_id.split("/")[0]
        if self._user is None:
            raise HTTPError(
                401,
                f"You must be authenticated to write to {repo_id}: pass the token the hub's operator gave you "
                "(token=..., HF_TOKEN or `hf auth login`).",
            )
        raise HTTPError(
            403,
            f"You don't have the rights to write to {repo_id}: user {self._user} may write to "
            f"{', '.join(sorted(self.hub.namespaces_of(self._user)))}/* only, not to {namespace}/*. "
            "Push to your own namespace, or ask the hub's operator to grant it (--token TOKEN:USER:NAMESPACE).",
        )

    def _check_gate(self, meta: dict) -> None:
        if meta["gated"] and self._user is None:
            raise HTTPError(
                401,
                f"Access to {meta['type']} {meta['id']} is restricted. You must have access "
                "to it and be authenticated to access it. Please log in.",
                "GatedRepo",
            )

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
            if len(rest) >= 3 and rest[0] in REPO_TYPE_DIRS:
                return self._repo_api(method, rest[0], f"{rest[1]}/{rest[2]}", rest[3:])
        else:
            type_dir = "models"
            if parts[:1] in (["datasets"], ["spaces"]):
                type_dir, parts = parts[0], parts[1:]
            if len(parts) >= 5 and parts[2] == "resolve" and method in ("GET", "HEAD"):
                return self._resolve_file(type_dir, f"{parts[0]}/{parts[1]}", parts[3], "/".join(parts[4:]))
        raise HTTPError(404, f"Unknown route {method} {self.path} on the local hub.")

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
        raise HTTPError(404, f"Unknown route {method} {self.path} on the local hub.")

    # -- account and repo management ---------------------------------------------------------
    def _whoami(self) -> None:
        if self._user is None:
            raise HTTPError(401, "Invalid credentials in Authorization header")
        self._send_json(
            {
                "type": "user",
                "id": self._user,
                "name": self._user,
                "fullname": self._user,
                "orgs": [{"name": n} for n in sorted(self.hub.namespaces_of(self._user) - {self._user})],
                "auth": {"type": "access_token", "accessToken": {"role": "write"}},
            }
        )

    def _repo_url(self, type_dir: str, repo_id: str) -> str:
        prefix = "" if type_dir == "models" else f"{type_dir}/"
        return f"{self._endpoint()}/{prefix}{repo_id}"

    def _validate_yaml(self) -> None:
        content = self._json_body().get("content", "")
        if not isinstance(content, str):
            raise HTTPError(400, "'content' must be the README text as a string.")
        errors, warnings = validate_card_metadata(content)
        status = 400 if errors else 200
        if "text/plain" in self.headers.get("Accept", ""):
            text = "\n".join(f"- {m}" for m in errors or warnings)
            return self._send(status, text.encode(), "text/plain; charset=utf-8")
        self._send_json(
            {"errors": [{"message": m} for m in errors], "warnings": [{"message": m} for m in warnings]}, status
        )

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
        siblings = [
            {"rfilename": p, "size": self.store.blob_path(b).stat().st_size, "blobId": b} for p, b in tree.items()
        ]
        info: dict[str, Any] = {
            "_id": hashlib.sha1(f"{type_dir}/{repo_id}".encode()).hexdigest()[:24],
            "id": repo_id,
            "author": repo_id.split("/")[0],
            "sha": sha,
            "lastModified": commit["date"],
            "createdAt": meta["created_at"],
            "private": meta["private"],
            "gated": meta["gated"],
            "disabled": False,
            "downloads": 0,
            "likes": 0,
            "tags": [],
            "siblings": siblings,
            "usedStorage": sum(s["size"] for s in siblings),
        }
        if type_dir == "models":
            info["modelId"] = repo_id
        if type_dir == "spaces":
            info["sdk"] = "static"
        if "README.md" in tree:
            card = card_data(self.store.blob_path(tree["README.md"]).read_bytes())
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
            rel = path[len(base) :].split("/")
            if recursive or len(rel) == 1:
                files.append(self._file_entry(path, blob))
            for depth in range(1, len(rel) if recursive else min(len(rel), 2)):
                dirs.add(base + "/".join(rel[:depth]))
        folders = [
            {
                "type": "directory",
                "path": d,
                "size": 0,
                "oid": hashlib.sha1(
                    json.dumps({p: b for p, b in tree.items() if p.startswith(d + "/")}, sort_keys=True).encode()
                ).hexdigest(),
            }
            for d in sorted(dirs)
        ]
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
            raise HTTPError(404, f"{path} does not exist on {rev}", "EntryNotFound", {"X-Repo-Commit": sha})
        entries = [self._file_entry(path, tree[path])] if path in tree else self._tree_entries(tree, path, recursive)
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
                out.append(next(e for e in self._tree_entries(tree, os.path.dirname(path), False) if e["path"] == path))
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
        self._send_json(
            [
                {
                    "id": s,
                    "title": c["message"],
                    "message": c["description"],
                    "authors": [{"user": c["author"]}],
                    "date": c["date"],
                }
                for s, c in self.store.history(type_dir, repo_id, sha)
            ]
        )

    def _resolve_file(self, type_dir: str, repo_id: str, rev: str, path: str) -> None:
        meta, sha, commit = self._snapshot(type_dir, repo_id, rev)
        self._check_gate(meta)
        blob = commit["tree"].get(path)
        if blob is None:
            raise HTTPError(404, f"Entry not found: {path} at revision {rev}", "EntryNotFound", {"X-Repo-Commit": sha})
        blob_path = self.store.blob_path(blob)
        size = blob_path.stat().st_size
        start, end = 0, size - 1
        status = 200
        headers = {
            "X-Repo-Commit": sha,
            "ETag": f'"{blob}"',
            "Accept-Ranges": "bytes",
            "Content-Disposition": f'inline; filename="{os.path.basename(path)}"',
        }
        match = re.fullmatch(r"bytes=(\d*)-(\d*)", self.headers.get("Range", "").strip())
        if match and size > 0 and (match.group(1) or match.group(2)):
            if match.group(1):
                start = int(match.group(1))
                end = min(int(match.group(2)), size - 1) if match.group(2) else size - 1
            else:
                start = max(size - int(match.group(2)), 0)
            if start >= size or start > end:
                raise HTTPError(
                    416,
                    f"Range {self.headers['Range']} outside of the {size}-byte file.",
                    headers={"Content-Range": f"bytes */{size}"},
                )
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
