"""Repository endpoints: branches, refs, commits, compare, contents, statuses and the Git data API."""

from __future__ import annotations

import base64
import binascii
from typing import Any

from . import payloads
from .core import ForgeCore
from .gitstore import BareRepo, Identity
from .payloads import RepoRef
from .routing import ApiError, Request, Response, Router, not_found, page_params, paginate, validation_failed

REFS_DOC = "/git/refs"
CONTENTS_DOC = "/repos/contents#create-or-update-file-contents"
MAX_COMPARE_COMMITS = 250  # GitHub returns at most 250 commits in a comparison


def _valid_refname(bare: BareRepo, name: str) -> bool:
    proc = bare.run("check-ref-format", name, ok_codes=(0, 1, 128))
    return proc.returncode == 0 and name.startswith("refs/") and name.count("/") >= 2


def _safe_path(path: str) -> str:
    """Reject paths that could escape the tree or confuse git's pathspec parsing."""
    clean = path.strip("/")
    if (
        not clean
        or any(part in ("", ".", "..", ".git") for part in clean.split("/"))
        or clean.startswith(":")
    ):
        raise not_found()
    return clean


def _decode_b64(value: Any, field: str) -> bytes:
    try:
        return base64.b64decode(str(value), validate=False)
    except (binascii.Error, ValueError) as exc:
        raise validation_failed({"resource": "Content", "field": field, "code": "invalid"}) from exc


class ReposApi:
    def __init__(self, core: ForgeCore) -> None:
        self.core = core

    def register(self, router: Router) -> None:
        base = "/repos/{owner}/{repo}"
        add = router.add
        add("GET", "/rate_limit", self.rate_limit)
        add("GET", "/user", self.current_user)
        add("GET", base, self.get_repo)
        add("GET", f"{base}/branches", self.list_branches)
        add("GET", f"{base}/branches/{{branch+}}", self.get_branch)
        add("GET", f"{base}/git/ref/{{ref+}}", self.get_ref)
        add("GET", f"{base}/git/matching-refs/{{ref+}}", self.matching_refs)
        add("POST", f"{base}/git/refs", self.create_ref, creates=True)
        add("GET", f"{base}/git/refs/{{ref+}}", self.get_refs_legacy)
        add("PATCH", f"{base}/git/refs/{{ref+}}", self.update_ref)
        add("DELETE", f"{base}/git/refs/{{ref+}}", self.delete_ref)
        add("POST", f"{base}/git/blobs", self.create_blob, creates=True)
        add("GET", f"{base}/git/blobs/{{sha}}", self.get_blob)
        add("POST", f"{base}/git/trees", self.create_tree, creates=True)
        add("GET", f"{base}/git/trees/{{sha}}", self.get_tree)
        add("POST", f"{base}/git/commits", self.create_commit, creates=True)
        add("GET", f"{base}/git/commits/{{sha}}", self.get_git_commit)
        add("GET", f"{base}/commits", self.list_commits)
        add("POST", f"{base}/statuses/{{sha}}", self.create_status, creates=True)
        add("POST", f"{base}/commits/{{sha}}/statuses", self.create_status, creates=True)
        add("GET", f"{base}/commits/{{ref+}}/statuses", self.list_statuses)
        add("GET", f"{base}/commits/{{ref+}}/status", self.combined_status)
        add("GET", f"{base}/compare/{{basehead+}}", self.compare)
        add("GET", f"{base}/contents", self.get_contents)
        add("GET", f"{base}/contents/{{path+}}", self.get_contents)
        add("PUT", f"{base}/contents/{{path+}}", self.put_contents, creates=True)

    def register_late(self, router: Router) -> None:
        """Routes whose `{ref+}` would swallow more specific ones; registered after everything else."""
        router.add("GET", "/repos/{owner}/{repo}/commits/{ref+}", self.get_commit)

    def _ctx(self, req: Request) -> tuple[RepoRef, BareRepo]:
        return self.core.repo(req.params["owner"], req.params["repo"])

    def _move_ref(
        self, ref: RepoRef, bare: BareRepo, refname: str, new: str | None, old: str | None, login: str
    ) -> bool:
        with self.core.repo_lock(ref.full_name):
            if not bare.update_ref(refname, new, old):
                return False
            self.core.ref_changed(ref, bare, refname, old, new, login)
        return True

    # --- misc -------------------------------------------------------------------------------
    def rate_limit(self, req: Request) -> Response:
        limit, used, reset = req.rate
        core = {"limit": limit, "remaining": max(0, limit - used), "reset": reset, "used": used}
        return Response(
            200,
            {
                "resources": {"core": core, "search": {**core, "limit": 30, "remaining": 30, "used": 0}},
                "rate": core,
            },
        )

    def current_user(self, req: Request) -> Response:
        return Response(200, payloads.user(self.core.base_url, req.login or ""))

    def get_repo(self, req: Request) -> Response:
        ref, bare = self._ctx(req)
        return Response(200, self.core.repo_payload(ref, bare))

    # --- branches and refs ------------------------------------------------------------------
    def list_branches(self, req: Request) -> Response:
        ref, bare = self._ctx(req)
        items = sorted(bare.branches().items())
        page = paginate(req, items, self.core.base_url)
        rules = self.core.repo_state(ref).protection
        page.body = [
            payloads.short_branch(ref, name, sha, protected=name in rules) for name, sha in page.body
        ]
        return page

    def get_branch(self, req: Request) -> Response:
        ref, bare = self._ctx(req)
        name = req.params["branch"]
        sha = bare.branch_sha(name)
        if sha is None:
            raise ApiError(404, "Branch not found", doc="/branches/branches#get-a-branch")
        rule = self.core.repo_state(ref).protection.get(name)
        return Response(200, payloads.branch(ref, name, self.core.commit_or_404(bare, sha), rule))

    def get_ref(self, req: Request) -> Response:
        ref, bare = self._ctx(req)
        refname = f"refs/{req.params['ref']}"
        sha = bare.refs(refname).get(refname)
        if sha is None:
            raise not_found()
        return Response(200, payloads.git_ref(ref, refname, sha, bare.object_type(sha) or "commit"))

    def get_refs_legacy(self, req: Request) -> Response:
        """The older `/git/refs/{ref}`: an exact ref, else every ref it prefixes (as a list), else 404."""
        ref, bare = self._ctx(req)
        refname = f"refs/{req.params['ref']}"
        refs = bare.refs("refs/")
        if refname in refs:
            return Response(200, payloads.git_ref(ref, refname, refs[refname]))
        found = [(name, sha) for name, sha in sorted(refs.items()) if name.startswith(f"{refname}/")]
        if not found:
            raise not_found()
        return Response(200, [payloads.git_ref(ref, name, sha) for name, sha in found])

    def matching_refs(self, req: Request) -> Response:
        ref, bare = self._ctx(req)
        prefix = f"refs/{req.params['ref']}"
        found = [(name, sha) for name, sha in sorted(bare.refs("refs/").items()) if name.startswith(prefix)]
        return Response(200, [payloads.git_ref(ref, name, sha) for name, sha in found])

    def create_ref(self, req: Request) -> Response:
        ref, bare = self._ctx(req)
        data = req.json_object()
        refname, sha = str(data.get("ref") or ""), str(data.get("sha") or "")
        if not _valid_refname(bare, refname):
            raise ApiError(422, "Reference name is invalid", doc=REFS_DOC)
        if not sha or bare.object_type(sha) != "commit":
            raise ApiError(422, "Object does not exist", doc=REFS_DOC)
        if bare.ref_sha(refname) is not None or not self._move_ref(
            ref, bare, refname, sha, None, req.login or ""
        ):
            raise ApiError(422, "Reference already exists", doc=REFS_DOC)
        body = payloads.git_ref(ref, refname, sha)
        return Response(201, body, {"Location": body["url"]})

    def update_ref(self, req: Request) -> Response:
        ref, bare = self._ctx(req)
        refname = f"refs/{req.params['ref']}"
        data = req.json_object()
        sha = str(data.get("sha") or "")
        old = bare.ref_sha(refname)
        if old is None:
            raise ApiError(422, "Reference does not exist", doc=REFS_DOC)
        if not sha or bare.object_type(sha) != "commit":
            raise ApiError(422, "Object does not exist", doc=REFS_DOC)
        if not data.get("force") and not bare.is_ancestor(old, sha):
            raise ApiError(422, "Update is not a fast forward", doc=REFS_DOC)
        if old != sha and not self._move_ref(ref, bare, refname, sha, old, req.login or ""):
            raise ApiError(409, "Reference update failed: the ref moved concurrently", doc=REFS_DOC)
        return Response(200, payloads.git_ref(ref, refname, sha))

    def delete_ref(self, req: Request) -> Response:
        ref, bare = self._ctx(req)
        refname = f"refs/{req.params['ref']}"
        old = bare.ref_sha(refname)
        if old is None or not self._move_ref(ref, bare, refname, None, old, req.login or ""):
            raise ApiError(422, "Reference does not exist", doc=REFS_DOC)
        return Response(204)

    # --- commits and compare ----------------------------------------------------------------
    def list_commits(self, req: Request) -> Response:
        ref, bare = self._ctx(req)
        if not bare.branches():
            raise ApiError(409, "Git Repository is empty.")
        start = self.core.commit_or_404(bare, req.query.get("sha") or bare.default_branch()).sha
        paths = (_safe_path(req.query["path"]),) if req.query.get("path") else ()
        per_page, page = page_params(req)
        total = bare.count([start], paths)
        infos = bare.log([start], paths=paths, skip=(page - 1) * per_page, limit=per_page)
        return paginate(req, [payloads.commit(ref, info) for info in infos], self.core.base_url, total=total)

    def get_commit(self, req: Request) -> Response:
        ref, bare = self._ctx(req)
        info = self.core.commit_or_404(bare, req.params["ref"])
        files = bare.diff(info.parents[0] if info.parents else None, info.sha)
        return Response(200, payloads.commit(ref, info, files))

    def compare(self, req: Request) -> Response:
        ref, bare = self._ctx(req)
        base_spec, sep, head_spec = req.params["basehead"].partition("...")
        if not sep:
            raise not_found()
        base_info = bare.commit(base_spec.split(":", 1)[-1])
        head_info = bare.commit(head_spec.split(":", 1)[-1])
        if base_info is None or head_info is None:
            raise not_found()
        base, head = base_info.sha, head_info.sha
        merge_base = bare.merge_base(base, head)
        if merge_base is None:
            raise ApiError(404, f"No common ancestor between {base_spec} and {head_spec}.")
        ahead, behind = bare.count([head, f"^{base}"]), bare.count([base, f"^{head}"])
        status = (
            "identical"
            if base == head
            else "behind"
            if ahead == 0
            else "ahead"
            if behind == 0
            else "diverged"
        )
        infos = bare.log([head, f"^{base}"], limit=MAX_COMPARE_COMMITS, reverse=True)
        spec = req.params["basehead"]
        return Response(
            200,
            {
                "url": f"{ref.api}/compare/{spec}",
                "html_url": f"{ref.html}/compare/{spec}",
                "permalink_url": f"{ref.html}/compare/{ref.owner}:{base[:7]}...{ref.owner}:{head[:7]}",
                "diff_url": f"{ref.html}/compare/{spec}.diff",
                "patch_url": f"{ref.html}/compare/{spec}.patch",
                "base_commit": payloads.commit(ref, base_info),
                "merge_base_commit": payloads.commit(ref, self.core.commit_or_404(bare, merge_base)),
                "status": status,
                "ahead_by": ahead,
                "behind_by": behind,
                "total_commits": ahead,
                "commits": [payloads.commit(ref, info) for info in infos],
                "files": [payloads.diff_entry(ref, head, c) for c in bare.diff(merge_base, head)],
            },
        )

    # --- statuses ---------------------------------------------------------------------------
    def create_status(self, req: Request) -> Response:
        ref, bare = self._ctx(req)
        info = bare.commit(req.params["sha"])
        if info is None:
            raise ApiError(422, f"No commit found for SHA: {req.params['sha']}")
        item = self.core.add_status(ref, info.sha, req.json_object(), req.login or "")
        return Response(201, payloads.status(ref, item))

    def list_statuses(self, req: Request) -> Response:
        ref, bare = self._ctx(req)
        sha = self.core.commit_or_404(bare, req.params["ref"]).sha
        items = [s for s in reversed(self.core.repo_state(ref).statuses) if s.sha == sha]
        page = paginate(req, items, self.core.base_url)
        page.body = [payloads.status(ref, s) for s in page.body]
        return page

    def combined_status(self, req: Request) -> Response:
        ref, bare = self._ctx(req)
        sha = self.core.commit_or_404(bare, req.params["ref"]).sha
        repo = payloads.minimal_repository(self.core.repo_payload(ref, bare))
        return Response(200, payloads.combined_status(ref, sha, self.core.latest_statuses(ref, sha), repo))

    # --- contents ---------------------------------------------------------------------------
    def get_contents(self, req: Request) -> Response:
        ref, bare = self._ctx(req)
        at = req.query.get("ref") or bare.default_branch()
        commit = bare.resolve(at)
        if commit is None:
            raise ApiError(404, f"No commit found for the ref {at}")
        path = _safe_path(req.params["path"]) if req.params.get("path") else ""
        spec = f"{commit}:{path}"
        kind = bare.object_type(spec)
        if kind is None:
            raise not_found()
        sha = bare.object_sha(spec) or ""
        if kind == "blob":
            return Response(200, payloads.content_file(ref, path, sha, bare.read_blob(sha), at))
        entries = bare.ls_tree(spec if path else commit)
        prefix = f"{path}/" if path else ""
        return Response(
            200, [payloads.content_entry(ref, prefix + e.path, e.type, e.sha, e.size, at) for e in entries]
        )

    def put_contents(self, req: Request) -> Response:
        ref, bare = self._ctx(req)
        path = _safe_path(req.params["path"])
        data = req.json_object()
        for field in ("message", "content"):
            if field not in data:
                raise validation_failed(
                    {"resource": "Content", "field": field, "code": "missing_field"}, doc=CONTENTS_DOC
                )
        content = _decode_b64(data["content"], "content")
        branch = str(data.get("branch") or bare.default_branch())
        login = req.login or ""
        with self.core.repo_lock(ref.full_name):
            parent = bare.branch_sha(branch)
            if parent is None:
                raise ApiError(404, f"Branch {branch} not found", doc=CONTENTS_DOC)
            current = (
                bare.object_sha(f"{parent}:{path}")
                if bare.object_type(f"{parent}:{path}") == "blob"
                else None
            )
            if current and not data.get("sha"):
                raise ApiError(422, 'Invalid request.\n\n"sha" wasn\'t supplied.', doc=CONTENTS_DOC)
            if current and data["sha"] != current:
                raise ApiError(409, f"{path} does not match {data['sha']}", doc=CONTENTS_DOC)
            blob = bare.write_blob(content)
            parent_info = self.core.commit_or_404(bare, parent)
            tree = bare.tree_with_changes(parent_info.tree, {path: ("100644", blob)})
            author = _identity(data.get("author")) or payloads.identity_for(login)
            committer = _identity(data.get("committer")) or author
            sha = bare.commit_tree(tree, [parent], str(data["message"]), author, committer)
            if not self._move_ref(ref, bare, f"refs/heads/{branch}", sha, parent, login):
                raise ApiError(409, f"{branch} is at a newer commit; retry", doc=CONTENTS_DOC)
        info = self.core.commit_or_404(bare, sha)
        entry = payloads.content_entry(ref, path, "blob", blob, len(content), branch)
        return Response(
            201 if current is None else 200, {"content": entry, "commit": payloads.git_commit(ref, info)}
        )

    # --- Git data API -----------------------------------------------------------------------
    def create_blob(self, req: Request) -> Response:
        ref, bare = self._ctx(req)
        data = req.json_object()
        if "content" not in data:
            raise validation_failed({"resource": "Blob", "field": "content", "code": "missing_field"})
        raw = data["content"]
        content = _decode_b64(raw, "content") if data.get("encoding") == "base64" else str(raw).encode()
        sha = bare.write_blob(content)
        return Response(201, {"url": f"{ref.api}/git/blobs/{sha}", "sha": sha})

    def get_blob(self, req: Request) -> Response:
        ref, bare = self._ctx(req)
        sha = req.params["sha"]
        if bare.object_type(sha) != "blob":
            raise not_found()
        content = bare.read_blob(sha)
        return Response(
            200,
            {
                "sha": sha,
                "node_id": payloads.node_id("Blob", payloads.stable_id(sha)),
                "size": len(content),
                "url": f"{ref.api}/git/blobs/{sha}",
                "content": base64.encodebytes(content).decode(),
                "encoding": "base64",
            },
        )

    def create_tree(self, req: Request) -> Response:
        ref, bare = self._ctx(req)
        data = req.json_object()
        base_tree = data.get("base_tree")
        if base_tree and bare.object_type(str(base_tree)) != "tree":
            base_tree = bare.object_sha(f"{base_tree}^{{tree}}")
            if base_tree is None:
                raise validation_failed({"resource": "Tree", "field": "base_tree", "code": "invalid"})
        changes: dict[str, tuple[str, str] | None] = {}
        for entry in data.get("tree") or []:
            path = _safe_path(str(entry.get("path", "")))
            if "content" in entry:
                changes[path] = (
                    str(entry.get("mode", "100644")),
                    bare.write_blob(str(entry["content"]).encode()),
                )
            elif entry.get("sha") is None:
                changes[path] = None  # GitHub: sha null deletes the path
            elif bare.object_type(str(entry["sha"])) is None:
                raise validation_failed({"resource": "Tree", "field": "sha", "code": "invalid"})
            else:
                changes[path] = (str(entry.get("mode", "100644")), str(entry["sha"]))
        tree = bare.tree_with_changes(base_tree, changes)
        return Response(201, self._tree_payload(ref, bare, tree, recursive=False))

    def get_tree(self, req: Request) -> Response:
        ref, bare = self._ctx(req)
        tree = bare.object_sha(f"{req.params['sha']}^{{tree}}")
        if tree is None:
            raise not_found()
        return Response(200, self._tree_payload(ref, bare, tree, recursive=bool(req.query.get("recursive"))))

    def _tree_payload(self, ref: RepoRef, bare: BareRepo, tree: str, *, recursive: bool) -> dict[str, Any]:
        entries = bare.ls_tree(tree, recursive=recursive)
        items = []
        for e in entries:
            item: dict[str, Any] = {
                "path": e.path,
                "mode": e.mode,
                "type": e.type,
                "sha": e.sha,
                "url": f"{ref.api}/git/{e.type}s/{e.sha}",
            }
            if e.size is not None:
                item["size"] = e.size
            items.append(item)
        return {"sha": tree, "url": f"{ref.api}/git/trees/{tree}", "tree": items, "truncated": False}

    def create_commit(self, req: Request) -> Response:
        ref, bare = self._ctx(req)
        data = req.json_object()
        tree, parents = str(data.get("tree") or ""), [str(p) for p in data.get("parents") or []]
        if bare.object_type(tree) != "tree":
            raise validation_failed({"resource": "Commit", "field": "tree", "code": "invalid"})
        if any(bare.object_type(p) != "commit" for p in parents):
            raise validation_failed({"resource": "Commit", "field": "parents", "code": "invalid"})
        author = _identity(data.get("author")) or payloads.identity_for(req.login or "")
        committer = _identity(data.get("committer")) or author
        sha = bare.commit_tree(tree, parents, str(data.get("message") or ""), author, committer)
        body = payloads.git_commit(ref, self.core.commit_or_404(bare, sha))
        return Response(201, body, {"Location": body["url"]})

    def get_git_commit(self, req: Request) -> Response:
        ref, bare = self._ctx(req)
        if bare.object_type(req.params["sha"]) != "commit":
            raise not_found()
        return Response(200, payloads.git_commit(ref, self.core.commit_or_404(bare, req.params["sha"])))


def _identity(raw: Any) -> Identity | None:
    if not isinstance(raw, dict) or not raw.get("name") or not raw.get("email"):
        return None
    return Identity(str(raw["name"]), str(raw["email"]), raw.get("date"))
