"""The writing routes of the local Hub's request handler: repo creation and deletion, settings,
preupload, NDJSON commits, branches and tags (:class:`WriteRoutes`, a mixin of
:class:`~learngene_hf.testing.hub_handler.Handler`, which supplies the request plumbing:
``self.store``, ``self._json_body``, ``self._send_json``, the access checks). Only the standard
library is used.
"""

from __future__ import annotations

import base64
import json

from learngene_hf.testing.hub_cards import validate_card_metadata
from learngene_hf.testing.hub_store import ANONYMOUS_AUTHOR, REPO_TYPE_DIRS, HTTPError, clean_path, valid_repo_id


class WriteRoutes:
    """The handler's routes that change the store."""

    def _preupload(self, type_dir: str, repo_id: str, rev: str) -> None:
        body = self._json_body()
        with self.store.lock:
            meta = self._repo_for_write(type_dir, repo_id)
            try:
                head = self.store.resolve(type_dir, repo_id, meta, rev)
                tree = self.store.get_commit(type_dir, repo_id, head)["tree"]
            except HTTPError:
                tree = {}  # a branch that does not exist yet: the commit will say so
        files = [
            {"path": f["path"], "uploadMode": "regular", "shouldIgnore": False, "oid": tree.get(f["path"])}
            for f in body.get("files", [])
        ]
        self._send_json({"files": files, "commitOid": None})

    def _commit(self, type_dir: str, repo_id: str, rev: str) -> None:
        lines = [json.loads(line) for line in self._body.splitlines() if line.strip()]
        if not lines or lines[0].get("key") != "header":
            raise HTTPError(400, "A commit body is NDJSON whose first line is {'key': 'header', ...}.")
        header = lines[0]["value"]
        create_pr = self._query.get("create_pr", ["0"])[0] in ("1", "true")
        with self.store.lock:
            meta = self._repo_for_write(type_dir, repo_id)
            branch = rev[len("refs/heads/") :] if rev.startswith("refs/heads/") else rev
            pr_num = None
            if create_pr:
                base = self.store.resolve(type_dir, repo_id, meta, rev)
                pr_num = max((int(n) for n in meta["prs"]), default=0) + 1
            elif rev.startswith("refs/pr/") and rev[len("refs/pr/") :] in meta["prs"]:
                pr_num = int(rev[len("refs/pr/") :])
                base = meta["prs"][str(pr_num)]
            elif branch in meta["branches"]:
                base = meta["branches"][branch]
            else:
                self.store.resolve(type_dir, repo_id, meta, rev)  # raises RevisionNotFound if unknown
                raise HTTPError(
                    400,
                    f"Cannot commit to {rev!r}: it is not a branch. Commit to a branch "
                    "(create it with create_branch) or pass create_pr=True.",
                )
            parent = header.get("parentCommit")
            if parent and parent != base:
                raise HTTPError(412, f"parentCommit {parent} is not the head of {rev} ({base}): pull and retry.")
            tree = dict(self.store.get_commit(type_dir, repo_id, base)["tree"])
            for line in lines[1:]:
                self._apply(line, tree)
            if "README.md" in tree:
                errors, _ = validate_card_metadata(self.store.blob_path(tree["README.md"]).read_text("utf-8"))
                if errors:
                    raise HTTPError(400, "Invalid metadata in README.md: " + "; ".join(errors))
            sha = self.store.put_commit(
                type_dir,
                repo_id,
                parent=base,
                tree=tree,
                message=header.get("summary") or "",
                author=self._user or ANONYMOUS_AUTHOR,
                description=header.get("description") or "",
            )
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
        path = clean_path(value.get("path", ""))
        if key == "file":
            if value.get("encoding", "base64") != "base64":
                raise HTTPError(400, f"Unsupported encoding {value.get('encoding')!r} for {path}: use base64.")
            tree[path] = self.store.put_blob(base64.b64decode(value.get("content", "")))
        elif key == "deletedFile":
            if path not in tree:
                raise HTTPError(404, f"A file with this name doesn't exist: {path}", "EntryNotFound")
            del tree[path]
        elif key == "deletedFolder":
            doomed = [p for p in tree if p.startswith(path.rstrip("/") + "/")]
            if not doomed:
                raise HTTPError(404, f"A folder with this name doesn't exist: {path}", "EntryNotFound")
            for p in doomed:
                del tree[p]
        elif key == "lfsFile":
            raise HTTPError(
                400,
                f"{path}: LFS uploads are not supported by the local hub (every file is uploaded as a regular file).",
            )
        else:
            raise HTTPError(400, f"Unknown commit operation {key!r}.")

    def _branch(self, method: str, type_dir: str, repo_id: str, branch: str) -> None:
        body = self._json_body()
        with self.store.lock:
            meta = self._repo_for_write(type_dir, repo_id)
            if method == "DELETE":
                if branch not in meta["branches"]:
                    raise HTTPError(404, f"Invalid rev id: {branch}", "RevisionNotFound")
                if branch == "main":
                    raise HTTPError(403, "The main branch cannot be deleted.")
                del meta["branches"][branch]
            else:
                if branch in meta["branches"]:
                    raise HTTPError(409, f"Reference already exists: refs/heads/{branch}")
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
                    raise HTTPError(404, f"Invalid rev id: {arg}", "RevisionNotFound")
                del meta["tags"][arg]
            else:
                tag = body.get("tag")
                if not tag or not isinstance(tag, str):
                    raise HTTPError(400, "Pass the tag name as {'tag': name}.")
                if tag in meta["tags"]:
                    raise HTTPError(409, f"Tag already exists: refs/tags/{tag}")
                meta["tags"][tag] = self.store.resolve(type_dir, repo_id, meta, arg)
            self.store.save_repo(type_dir, repo_id, meta)
        self._send_json({})

    def _create_repo(self) -> None:
        body = self._json_body()
        name, namespace = body.get("name"), body.get("organization") or self._user
        type_dir = f"{body.get('type') or 'model'}s"
        if type_dir not in REPO_TYPE_DIRS:
            raise HTTPError(400, f"Unknown repo type {body.get('type')!r}: use model, dataset or space.")
        if namespace is None:
            raise HTTPError(401, "Pass a token or a repo id of the form 'namespace/name' to create a repo.")
        repo_id = f"{namespace}/{name}"
        if not valid_repo_id(repo_id):
            raise HTTPError(400, f"Invalid repo id {repo_id!r}: use letters, digits, '.', '_', '-' only.")
        if "visibility" in body:
            private = body["visibility"] == "private"
        else:
            private = bool(body.get("private", False))
        if private and self._user is None:
            raise HTTPError(401, f"A private repo needs an owner: pass a token to create {repo_id} as private.")
        url = self._repo_url(type_dir, repo_id)
        with self.store.lock:
            existing = self.store.load_repo(type_dir, repo_id)
            # checked before saying whether the repo exists: a private repo stays invisible to others
            self._check_may_write(repo_id, existing["owner"] if existing else None)
            if existing is not None:
                return self._send_json(
                    {"error": "You already created this repo", "url": url},
                    409,
                    headers={"X-Error-Message": "You already created this repo"},
                )
            self.store.create_repo(type_dir, repo_id, private=private, owner=self._user)
        self._send_json({"url": url, "name": repo_id, "id": repo_id})

    def _delete_repo(self) -> None:
        body = self._json_body()
        namespace = body.get("organization") or self._user
        type_dir = f"{body.get('type') or 'model'}s"
        if type_dir not in REPO_TYPE_DIRS or namespace is None:
            raise HTTPError(404, "Repository not found", "RepoNotFound")
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
                    raise HTTPError(400, f"gated must be False, 'auto' or 'manual', got {body['gated']!r}.")
                meta["gated"] = body["gated"]
            if "visibility" in body:
                meta["private"] = body["visibility"] == "private"
            if "private" in body:
                meta["private"] = bool(body["private"])
            if meta["private"] and self._user is None:
                raise HTTPError(401, f"A private repo needs an owner: pass a token to make {repo_id} private.")
            if meta["private"] and meta["owner"] is None:
                meta["owner"] = self._user
            self.store.save_repo(type_dir, repo_id, meta)
        self._send_json({})
