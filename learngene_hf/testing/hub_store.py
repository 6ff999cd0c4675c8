"""The on-disk store of the local Hub (:mod:`learngene_hf.testing.hub`): repos, commits, refs, blobs.

Layout of the root folder::

    blobs/<sha[:2]>/<sha>                       file contents, keyed by their git blob sha1
    repos/<models|datasets|spaces>/<ns>/<name>/
        repo.json                               visibility, gating, owner, branches, tags, PR refs
        commits/<sha>.json                      {"parent", "tree": {path: blob sha}, "message", ...}

A commit sha is the sha1 of its canonical JSON (parent, tree, message, description, author, date),
so it is a 40-hex content hash like git's. Also here: :class:`HTTPError`, the error answer the
request handler (:mod:`learngene_hf.testing.hub_handler`) sends, and the checks of repo ids and
file paths. Only the standard library and :mod:`learngene_hf.io` are used.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import threading
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

from learngene_hf.io import atomic_path, write_json_atomic

#: The author of commits made without a token (a server started with anonymous writes).
ANONYMOUS_AUTHOR = "anonymous"
REPO_TYPE_DIRS = {"models": "model", "datasets": "dataset", "spaces": "space"}
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}$")
_SHA_RE = re.compile(r"^[0-9a-f]{40}$")
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


class HTTPError(Exception):
    """An error answer: status, message, and the ``X-Error-Code`` the client maps to an exception."""

    def __init__(self, status: int, message: str, code: str | None = None, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.headers = headers or {}


class Store:
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
            "type": REPO_TYPE_DIRS[type_dir],
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
        sha = self.put_commit(
            type_dir,
            repo_id,
            parent=None,
            tree={".gitattributes": blob},
            message="initial commit",
            description="",
            author=owner or ANONYMOUS_AUTHOR,
        )
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

    def put_commit(
        self,
        type_dir: str,
        repo_id: str,
        *,
        parent: str | None,
        tree: dict[str, str],
        message: str,
        description: str,
        author: str,
    ) -> str:
        commit = {
            "parent": parent,
            "tree": dict(sorted(tree.items())),
            "message": message,
            "description": description,
            "author": author,
            "date": _now(),
        }
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
            if rev.startswith(prefix) and rev[len(prefix) :] in meta[table]:
                return meta[table][rev[len(prefix) :]]
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
        raise HTTPError(404, f"Invalid rev id: {rev}", "RevisionNotFound")

    def history(self, type_dir: str, repo_id: str, sha: str) -> Iterator[tuple[str, dict]]:
        """Commits from ``sha`` back to the first one, newest first."""
        while sha is not None:
            commit = self.get_commit(type_dir, repo_id, sha)
            if commit is None:
                return
            yield sha, commit
            sha = commit["parent"]


def valid_name(name: str) -> bool:
    """A namespace or repo name: letters, digits, ``.``, ``_``, ``-``, no ``..``, at most 96 characters."""
    return isinstance(name, str) and bool(_NAME_RE.match(name)) and ".." not in name


def valid_repo_id(repo_id: str) -> bool:
    parts = repo_id.split("/")
    return len(parts) == 2 and all(valid_name(p) for p in parts)


def clean_path(path: str) -> str:
    """A repo file path, checked: relative, no ``..``/``.``/empty parts, not inside ``.git``."""
    parts = path.strip("/").split("/")
    if not path or any(p in ("", ".", "..") for p in parts) or parts[0] == ".git" or "\\" in path:
        raise HTTPError(400, f"Invalid path in repo {path!r}: use a relative path like 'dir/file.json'.")
    return "/".join(parts)
