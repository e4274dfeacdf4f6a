"""Behaviour and contract tests for the GitHub-compatible forge emulator (no Django, no DB)."""

from __future__ import annotations

import base64
import copy
import hashlib
import hmac
import json
import os
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from functools import cache
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests
from openapi_schema_validator import OAS30Validator, oas30_format_checker

from sandbox.forge import ForgeEmulator
from tests.shared_paths import SHARED

SPEC = SHARED / "forges/github-pulls-subset.json"
TOKEN = "sandbox-forge-token"
ALICE_TOKEN = "alice-token"
SECRET = "webhook-s3cret"
GIT_ENV = {
    "GIT_AUTHOR_NAME": "Dev",
    "GIT_AUTHOR_EMAIL": "dev@example.com",
    "GIT_COMMITTER_NAME": "Dev",
    "GIT_COMMITTER_EMAIL": "dev@example.com",
    "GIT_TERMINAL_PROMPT": "0",
    "GIT_CONFIG_NOSYSTEM": "1",
}


# --- helpers ------------------------------------------------------------------------------------
def git(*args: str, cwd: Path | None = None) -> str:
    env = {**os.environ, **GIT_ENV, "HOME": str(cwd or Path.cwd())}
    proc = subprocess.run(["git", *args], cwd=cwd, env=env, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, f"git {args} failed: {proc.stderr}"
    return proc.stdout.strip()


def write(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


@cache
def _components() -> dict[str, Any]:
    """The spec's schemas, tightened with additionalProperties: false so renamed fields fail."""
    components = copy.deepcopy(json.loads(SPEC.read_text())["components"])

    def tighten(node: Any) -> None:
        if isinstance(node, dict):
            if node.get("type") == "object" and "properties" in node:
                node.setdefault("additionalProperties", False)
            if node.get("nullable") and "oneOf" in node and "type" not in node:
                # The validator only honours `nullable` beside `type`; spell out null for oneOf.
                node["oneOf"] = [*node["oneOf"], {"enum": [None]}]
            if node.get("nullable") and None not in node.get("enum", [None]):
                node["enum"] = [*node["enum"], None]  # same validator quirk with enums
            for value in node.values():
                tighten(value)
        elif isinstance(node, list):
            for value in node:
                tighten(value)

    tighten(components["schemas"])
    return components


def assert_schema(instance: Any, name: str, *, array: bool = False) -> None:
    ref: dict[str, Any] = {"$ref": f"#/components/schemas/{name}"}
    schema = {"allOf": [{"type": "array", "items": ref} if array else ref], "components": _components()}
    errors = sorted(
        OAS30Validator(schema, format_checker=oas30_format_checker).iter_errors(instance), key=str
    )
    assert not errors, "\n".join(f"{list(e.absolute_path)}: {e.message}" for e in errors[:10])


class Receiver:
    """A tiny webhook receiver recording (headers, raw body) of each POST."""

    def __init__(self) -> None:
        self.deliveries: list[tuple[dict[str, str], bytes]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                outer.deliveries.append(({k.lower(): v for k, v in self.headers.items()}, body))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/github"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def events(self, name: str) -> list[dict[str, Any]]:
        return [json.loads(body) for headers, body in self.deliveries if headers["x-github-event"] == name]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


# --- fixtures -----------------------------------------------------------------------------------
@pytest.fixture
def repos_dir(tmp_path: Path) -> Path:
    """acme/gitops.git with two commits on main, built with plain git (no sandbox generator)."""
    repos = tmp_path / "repos"
    bare = repos / "acme" / "gitops.git"
    bare.parent.mkdir(parents=True)
    git("init", "--bare", "-b", "main", str(bare))
    work = tmp_path / "seed"
    git("init", "-b", "main", str(work))
    write(
        work,
        {"apps/web/kustomization.yaml": "images:\n- name: web\n  newTag: '1.0.0'\n", "README.md": "demo\n"},
    )
    git("add", ".", cwd=work)
    git("commit", "-m", "Initial layout", cwd=work)
    write(work, {"environments/prod/web/kustomization.yaml": "resources: [../../../apps/web]\n"})
    git("add", ".", cwd=work)
    git("commit", "-m", "Add prod env", cwd=work)
    git("push", str(bare), "main", cwd=work)
    return repos


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    rec = Receiver()
    yield rec
    rec.close()


@pytest.fixture
def forge(repos_dir: Path, receiver: Receiver, tmp_path: Path) -> Iterator[ForgeEmulator]:
    emulator = ForgeEmulator(
        repos_dir,
        users={ALICE_TOKEN: "alice"},
        webhook_url=receiver.url,
        webhook_secret=SECRET,
        state_file=tmp_path / "forge-state.json",
    )
    emulator.start()
    yield emulator
    emulator.stop()


@pytest.fixture
def api(forge: ForgeEmulator) -> requests.Session:
    session = requests.Session()
    session.headers.update({"Authorization": f"Bearer {TOKEN}", "Accept": "application/vnd.github+json"})
    return session


def repo_url(forge: ForgeEmulator, path: str = "") -> str:
    return f"{forge.base_url}/repos/acme/gitops{path}"


def push_branch(
    forge: ForgeEmulator, tmp_path: Path, branch: str, files: dict[str, str], *, base: str = "main"
) -> str:
    """Clone over smart HTTP, commit `files` on a new branch and push it; return the new sha."""
    work = tmp_path / f"work-{branch.replace('/', '-')}-{uuid.uuid4().hex[:6]}"
    authed = forge.base_url.replace("http://", f"http://x-access-token:{TOKEN}@")
    git("clone", "-q", "-b", base, f"{authed}/acme/gitops.git", str(work))
    git("checkout", "-q", "-b", branch, cwd=work)
    write(work, files)
    git("add", ".", cwd=work)
    git("commit", "-q", "-m", f"Change on {branch}", cwd=work)
    git("push", "-q", "origin", branch, cwd=work)
    return git("rev-parse", "HEAD", cwd=work)


def bare_git(repos_dir: Path, *args: str) -> str:
    return git("--git-dir", str(repos_dir / "acme" / "gitops.git"), *args)


def open_pull(api: requests.Session, forge: ForgeEmulator, head: str, **extra: Any) -> dict[str, Any]:
    resp = api.post(
        repo_url(forge, "/pulls"), json={"title": f"Promote {head}", "head": head, "base": "main", **extra}
    )
    assert resp.status_code == 201, resp.text
    return resp.json()


def verify_signature(headers: dict[str, str], body: bytes) -> bool:
    expected = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, headers["x-hub-signature-256"])


# --- git over smart HTTP ------------------------------------------------------------------------
def test_clone_commit_push_over_http_moves_the_bare_branch(forge, repos_dir, tmp_path, receiver):
    sha = push_branch(
        forge, tmp_path, "promote/web-prod", {"apps/web/kustomization.yaml": "newTag: '1.1.0'\n"}
    )

    assert bare_git(repos_dir, "rev-parse", "refs/heads/promote/web-prod") == sha
    assert forge.wait_for_webhooks()
    push = receiver.events("push")[-1]
    assert push["ref"] == "refs/heads/promote/web-prod"
    assert push["created"] is True and push["before"] == "0" * 40 and push["after"] == sha
    assert push["head_commit"]["modified"] == ["apps/web/kustomization.yaml"]
    assert push["pusher"]["name"] == "portal-bot"


def test_push_without_token_is_refused(forge, tmp_path):
    work = tmp_path / "anon"
    git("clone", "-q", f"{forge.base_url}/acme/gitops.git", str(work))  # anonymous clone is fine
    write(work, {"x.txt": "x\n"})
    git("add", ".", cwd=work)
    git("commit", "-q", "-m", "anon", cwd=work)
    proc = subprocess.run(
        ["git", "push", "origin", "HEAD:main"],
        cwd=work,
        env={**os.environ, **GIT_ENV},
        capture_output=True,
        text=True,
    )
    assert proc.returncode != 0
    assert "401" in proc.stderr or "Authentication" in proc.stderr or "could not read Username" in proc.stderr


# --- REST basics --------------------------------------------------------------------------------
def test_bad_or_missing_token_gets_401_with_rate_limit_headers(forge):
    for headers in ({}, {"Authorization": "Bearer nope"}):
        resp = requests.get(repo_url(forge), headers=headers)
        assert resp.status_code == 401
        assert resp.json()["message"] == "Bad credentials"
        assert "documentation_url" in resp.json()
        assert_schema(resp.json(), "basic-error")
        for name in ("limit", "remaining", "used", "reset", "resource"):
            assert f"x-ratelimit-{name}" in resp.headers


def test_token_scheme_and_repository_shape(forge):
    resp = requests.get(repo_url(forge), headers={"Authorization": f"token {TOKEN}"})
    assert resp.status_code == 200
    assert resp.json()["default_branch"] == "main"
    assert resp.json()["clone_url"] == f"{forge.base_url}/acme/gitops.git"
    assert_schema(resp.json(), "repository")
    assert int(resp.headers["x-ratelimit-remaining"]) == int(resp.headers["x-ratelimit-limit"]) - int(
        resp.headers["x-ratelimit-used"]
    )


def test_refs_create_read_move_delete(forge, api, repos_dir):
    main = api.get(repo_url(forge, "/git/ref/heads/main")).json()
    assert_schema(main, "git-ref")
    sha = main["object"]["sha"]
    parent = bare_git(repos_dir, "rev-parse", "main~1")

    assert api.get(repo_url(forge, "/git/ref/heads/feature")).status_code == 404
    created = api.post(repo_url(forge, "/git/refs"), json={"ref": "refs/heads/feature", "sha": parent})
    assert created.status_code == 201
    assert_schema(created.json(), "git-ref")
    again = api.post(repo_url(forge, "/git/refs"), json={"ref": "refs/heads/feature", "sha": parent})
    assert again.status_code == 422 and again.json()["message"] == "Reference already exists"

    moved = api.patch(repo_url(forge, "/git/refs/heads/feature"), json={"sha": sha})
    assert moved.status_code == 200 and moved.json()["object"]["sha"] == sha
    back = api.patch(repo_url(forge, "/git/refs/heads/feature"), json={"sha": parent})
    assert back.status_code == 422 and back.json()["message"] == "Update is not a fast forward"
    assert api.patch(repo_url(forge, "/git/refs/heads/feature"), json={"sha": parent, "force": True}).ok

    branch = api.get(repo_url(forge, "/branches/feature"))
    assert branch.status_code == 200 and branch.json()["commit"]["sha"] == parent
    assert_schema(branch.json(), "branch-with-protection")
    assert api.delete(repo_url(forge, "/git/refs/heads/feature")).status_code == 204
    assert "feature" not in bare_git(repos_dir, "branch", "--list")


# --- pull requests ------------------------------------------------------------------------------
def test_create_pull_returns_the_full_github_shape(forge, api, tmp_path):
    head_sha = push_branch(
        forge, tmp_path, "promote/web", {"apps/web/kustomization.yaml": "newTag: '2.0.0'\n"}
    )

    pull = open_pull(api, forge, "promote/web", body="Promote web to 2.0.0", draft=False)

    assert_schema(pull, "pull-request")
    assert pull["number"] == 1
    assert pull["html_url"] == f"{forge.base_url}/acme/gitops/pull/1"
    assert pull["url"] == repo_url(forge, "/pulls/1")
    assert pull["state"] == "open" and pull["merged"] is False and pull["mergeable"] is True
    assert pull["head"]["sha"] == head_sha and pull["head"]["label"] == "acme:promote/web"
    assert pull["base"]["ref"] == "main"
    assert pull["user"]["login"] == "portal-bot"
    assert pull["commits"] == 1 and pull["changed_files"] == 1
    fetched = api.get(repo_url(forge, "/pulls/1")).json()
    assert_schema(fetched, "pull-request")


def test_duplicate_pull_gets_githubs_422_body(forge, api, tmp_path):
    push_branch(forge, tmp_path, "promote/dup", {"a.txt": "a\n"})
    open_pull(api, forge, "promote/dup")

    resp = api.post(
        repo_url(forge, "/pulls"), json={"title": "again", "head": "acme:promote/dup", "base": "main"}
    )

    assert resp.status_code == 422
    body = resp.json()
    assert_schema(body, "validation-error")
    assert body["message"] == "Validation Failed"
    assert body["errors"] == [
        {
            "resource": "PullRequest",
            "code": "custom",
            "message": "A pull request already exists for acme:promote/dup.",
        }
    ]
    assert body["documentation_url"].startswith("https://docs.github.com/")


def test_invalid_heads_are_rejected(forge, api):
    missing = api.post(repo_url(forge, "/pulls"), json={"title": "t", "head": "nope", "base": "main"})
    assert missing.status_code == 422 and missing.json()["errors"][0]["field"] == "head"
    same = api.post(repo_url(forge, "/pulls"), json={"title": "t", "head": "main", "base": "main"})
    assert same.status_code == 422 and "No commits between" in same.json()["errors"][0]["message"]


def test_list_pulls_filters_by_head_and_paginates_with_link(forge, api, tmp_path):
    for n in range(3):
        push_branch(forge, tmp_path, f"promote/p{n}", {f"p{n}.txt": f"{n}\n"})
        open_pull(api, forge, f"promote/p{n}")

    by_head = api.get(
        repo_url(forge, "/pulls"), params={"state": "open", "head": "acme:promote/p1", "base": "main"}
    )
    assert [p["head"]["ref"] for p in by_head.json()] == ["promote/p1"]
    assert_schema(by_head.json(), "pull-request-simple", array=True)

    first = api.get(repo_url(forge, "/pulls"), params={"per_page": 2})
    assert len(first.json()) == 2
    assert first.links["next"]["url"].endswith("page=2") and "last" in first.links
    second = api.get(first.links["next"]["url"])
    assert len(second.json()) == 1 and "next" not in second.links and "prev" in second.links
    numbers = {p["number"] for p in first.json() + second.json()}
    assert numbers == {1, 2, 3}


def test_merge_makes_a_real_two_parent_merge_commit(forge, api, tmp_path, repos_dir, receiver):
    head_sha = push_branch(
        forge, tmp_path, "promote/merge", {"apps/web/kustomization.yaml": "newTag: '3.0.0'\n"}
    )
    old_main = bare_git(repos_dir, "rev-parse", "main")
    pull = open_pull(api, forge, "promote/merge")
    assert api.get(repo_url(forge, "/pulls/1/merge")).status_code == 404

    resp = api.put(repo_url(forge, "/pulls/1/merge"), json={"merge_method": "merge", "sha": head_sha})

    assert resp.status_code == 200, resp.text
    result = resp.json()
    assert_schema(result, "pull-request-merge-result")
    assert result["merged"] is True
    assert bare_git(repos_dir, "rev-parse", "main") == result["sha"]
    parents = bare_git(repos_dir, "log", "-1", "--format=%P", result["sha"]).split()
    assert parents == [old_main, head_sha]
    assert bare_git(repos_dir, "log", "-1", "--format=%s", result["sha"]) == (
        f"Merge pull request #{pull['number']} from acme/promote/merge"
    )
    merged = api.get(repo_url(forge, "/pulls/1")).json()
    assert merged["merged"] is True and merged["state"] == "closed"
    assert merged["merge_commit_sha"] == result["sha"] and merged["merged_by"]["login"] == "portal-bot"
    assert merged["merged_at"] and merged["head"]["sha"] == head_sha
    assert api.get(repo_url(forge, "/pulls/1/merge")).status_code == 204
    assert [p["number"] for p in api.get(repo_url(forge, f"/commits/{head_sha}/pulls")).json()] == [1]
    again = api.put(repo_url(forge, "/pulls/1/merge"), json={})
    assert again.status_code == 405


def test_squash_merge_has_one_parent(forge, api, tmp_path, repos_dir):
    push_branch(forge, tmp_path, "promote/squash", {"s.txt": "s\n"})
    old_main = bare_git(repos_dir, "rev-parse", "main")
    open_pull(api, forge, "promote/squash")

    sha = api.put(repo_url(forge, "/pulls/1/merge"), json={"merge_method": "squash"}).json()["sha"]

    assert bare_git(repos_dir, "log", "-1", "--format=%P", sha) == old_main
    assert bare_git(repos_dir, "show", f"{sha}:s.txt") == "s"


def test_merge_with_moved_head_is_409_and_conflict_is_405(forge, api, tmp_path, repos_dir):
    push_branch(forge, tmp_path, "promote/c1", {"README.md": "one\n"})
    push_branch(forge, tmp_path, "promote/c2", {"README.md": "two\n"})
    open_pull(api, forge, "promote/c1")
    open_pull(api, forge, "promote/c2")

    stale = api.put(repo_url(forge, "/pulls/1/merge"), json={"sha": "0" * 40})
    assert stale.status_code == 409 and "Head branch was modified" in stale.json()["message"]
    assert api.put(repo_url(forge, "/pulls/1/merge"), json={}).status_code == 200

    conflicted = api.get(repo_url(forge, "/pulls/2")).json()
    assert conflicted["mergeable"] is False and conflicted["mergeable_state"] == "dirty"
    resp = api.put(repo_url(forge, "/pulls/2/merge"), json={})
    assert resp.status_code == 405 and resp.json()["message"] == "Pull Request is not mergeable"


def test_files_commits_and_compare(forge, api, tmp_path):
    push_branch(forge, tmp_path, "promote/diff", {"apps/web/kustomization.yaml": "newTag: '9.9.9'\n"})
    open_pull(api, forge, "promote/diff")

    files = api.get(repo_url(forge, "/pulls/1/files")).json()
    assert_schema(files, "diff-entry", array=True)
    assert files[0]["filename"] == "apps/web/kustomization.yaml" and files[0]["status"] == "modified"
    assert "+newTag: '9.9.9'" in files[0]["patch"]
    commits = api.get(repo_url(forge, "/pulls/1/commits")).json()
    assert_schema(commits, "commit", array=True)
    assert len(commits) == 1

    compare = api.get(repo_url(forge, "/compare/main...promote/diff")).json()
    assert_schema(compare, "commit-comparison")
    assert (compare["status"], compare["ahead_by"], compare["behind_by"]) == ("ahead", 1, 0)
    single = api.get(repo_url(forge, f"/commits/{commits[0]['sha']}")).json()
    assert_schema(single, "commit")
    assert single["files"][0]["filename"] == "apps/web/kustomization.yaml"


def test_list_commits_by_path_and_pages(forge, api):
    everything = api.get(repo_url(forge, "/commits"), params={"per_page": 1})
    assert_schema(everything.json(), "commit", array=True)
    assert everything.json()[0]["commit"]["message"] == "Add prod env"
    assert 'rel="next"' in everything.headers["Link"]
    page2 = api.get(everything.links["next"]["url"]).json()
    assert page2[0]["commit"]["message"] == "Initial layout"
    by_path = api.get(repo_url(forge, "/commits"), params={"path": "apps/web/kustomization.yaml"}).json()
    assert [c["commit"]["message"] for c in by_path] == ["Initial layout"]


def test_close_and_reopen_via_patch(forge, api, tmp_path, receiver):
    push_branch(forge, tmp_path, "promote/close", {"c.txt": "c\n"})
    open_pull(api, forge, "promote/close")

    closed = api.patch(repo_url(forge, "/pulls/1"), json={"state": "closed", "title": "Renamed"})

    assert closed.status_code == 200
    assert_schema(closed.json(), "pull-request")
    assert (closed.json()["state"], closed.json()["merged"], closed.json()["title"]) == (
        "closed",
        False,
        "Renamed",
    )
    assert api.patch(repo_url(forge, "/pulls/1"), json={"state": "open"}).json()["state"] == "open"
    assert forge.wait_for_webhooks()
    actions = [(e["action"], e["pull_request"]["merged"]) for e in receiver.events("pull_request")]
    assert ("closed", False) in actions and ("reopened", False) in actions


# --- reviews, labels, comments ------------------------------------------------------------------
def test_labels_reviewers_reviews_and_comments(forge, api, tmp_path):
    push_branch(forge, tmp_path, "promote/review", {"r.txt": "r\n"})
    open_pull(api, forge, "promote/review")
    alice = requests.Session()
    alice.headers["Authorization"] = f"Bearer {ALICE_TOKEN}"

    labels = api.post(repo_url(forge, "/issues/1/labels"), json={"labels": ["promotion", "env:prod"]})
    assert labels.status_code == 200
    assert_schema(labels.json(), "label", array=True)
    assert [lbl["name"] for lbl in api.get(repo_url(forge, "/issues/1/labels")).json()] == [
        "promotion",
        "env:prod",
    ]

    requested = api.post(
        repo_url(forge, "/pulls/1/requested_reviewers"),
        json={"reviewers": ["alice"], "team_reviewers": ["sre"]},
    )
    assert requested.status_code == 201
    assert_schema(requested.json(), "pull-request-simple")
    listed = api.get(repo_url(forge, "/pulls/1/requested_reviewers")).json()
    assert_schema(listed, "pull-request-review-request")
    assert [u["login"] for u in listed["users"]] == ["alice"]
    own = api.post(repo_url(forge, "/pulls/1/requested_reviewers"), json={"reviewers": ["portal-bot"]})
    assert own.status_code == 422

    self_approve = api.post(repo_url(forge, "/pulls/1/reviews"), json={"event": "APPROVE"})
    assert self_approve.status_code == 422
    review = alice.post(repo_url(forge, "/pulls/1/reviews"), json={"event": "APPROVE", "body": "LGTM"})
    assert review.status_code == 200 and review.json()["state"] == "APPROVED"
    assert [r["user"]["login"] for r in api.get(repo_url(forge, "/pulls/1/reviews")).json()] == ["alice"]
    assert api.get(repo_url(forge, "/pulls/1")).json()["requested_reviewers"] == []

    comment = api.post(repo_url(forge, "/issues/1/comments"), json={"body": "Promotion requested by bob"})
    assert comment.status_code == 201
    assert_schema(comment.json(), "issue-comment")
    assert [c["body"] for c in api.get(repo_url(forge, "/issues/1/comments")).json()] == [
        "Promotion requested by bob"
    ]
    pull = api.get(repo_url(forge, "/pulls/1")).json()
    assert pull["comments"] == 1 and [lbl["name"] for lbl in pull["labels"]] == ["promotion", "env:prod"]


def test_issue_and_pull_numbers_share_one_counter(forge, api, tmp_path):
    for n in range(2):
        push_branch(forge, tmp_path, f"promote/n{n}", {f"n{n}.txt": "n\n"})
    assert open_pull(api, forge, "promote/n0")["number"] == 1
    assert open_pull(api, forge, "promote/n1")["number"] == 2
    assert api.get(repo_url(forge, "/issues/3/labels")).status_code == 404


# --- statuses -----------------------------------------------------------------------------------
def test_commit_statuses_and_combined_status(forge, api, repos_dir):
    sha = bare_git(repos_dir, "rev-parse", "main")
    pending = api.get(repo_url(forge, "/commits/main/status")).json()
    assert pending["state"] == "pending" and pending["total_count"] == 0

    created = api.post(repo_url(forge, f"/statuses/{sha}"), json={"state": "failure", "context": "ci/test"})
    assert created.status_code == 201
    assert_schema(created.json(), "status")
    check = requests.post(
        f"{forge.base_url}/sandbox/checks",
        json={"repo": "acme/gitops", "sha": sha, "context": "ci/test", "state": "success"},
    )
    assert check.status_code == 201
    requests.post(
        f"{forge.base_url}/sandbox/checks",
        json={"repo": "acme/gitops", "ref": "main", "context": "ci/lint", "state": "success"},
    )

    combined = api.get(repo_url(forge, "/commits/main/status")).json()
    assert_schema(combined, "combined-commit-status")
    assert combined["state"] == "success" and combined["total_count"] == 2
    history = api.get(repo_url(forge, f"/commits/{sha}/statuses")).json()
    assert_schema(history, "status", array=True)
    assert [s["state"] for s in history] == ["success", "success", "failure"]


# --- contents -----------------------------------------------------------------------------------
def test_contents_read_and_commit_with_stale_sha_conflict(forge, api, repos_dir, receiver):
    path = "apps/web/kustomization.yaml"
    current = api.get(repo_url(forge, f"/contents/{path}"), params={"ref": "main"}).json()
    assert_schema(current, "content-file")
    assert base64.b64decode(current["content"]).decode().startswith("images:")

    new = base64.b64encode(b"images:\n- name: web\n  newTag: '1.2.0'\n").decode()
    put = api.put(
        repo_url(forge, f"/contents/{path}"),
        json={"message": "Bump web", "content": new, "sha": current["sha"], "branch": "main"},
    )
    assert put.status_code == 200, put.text
    assert_schema(put.json(), "file-commit")
    assert bare_git(repos_dir, "rev-parse", "main") == put.json()["commit"]["sha"]
    assert "1.2.0" in bare_git(repos_dir, "show", f"main:{path}")

    stale = api.put(
        repo_url(forge, f"/contents/{path}"),
        json={"message": "Bump again", "content": new, "sha": current["sha"]},
    )
    assert stale.status_code == 409
    created = api.put(repo_url(forge, "/contents/new/file.txt"), json={"message": "Add", "content": new})
    assert created.status_code == 201
    listing = api.get(repo_url(forge, "/contents/new")).json()
    assert [item["name"] for item in listing] == ["file.txt"]
    assert forge.wait_for_webhooks()
    assert receiver.events("push")[-1]["head_commit"]["added"] == ["new/file.txt"]


# --- webhooks -----------------------------------------------------------------------------------
def test_pull_request_webhooks_are_signed_and_github_shaped(forge, api, tmp_path, receiver):
    push_branch(forge, tmp_path, "promote/hook", {"h.txt": "h\n"})
    pull = open_pull(api, forge, "promote/hook")
    api.put(repo_url(forge, f"/pulls/{pull['number']}/merge"), json={})
    assert forge.wait_for_webhooks()

    pr_deliveries = [(h, b) for h, b in receiver.deliveries if h["x-github-event"] == "pull_request"]
    assert len(pr_deliveries) == 2
    for headers, body in receiver.deliveries:
        assert verify_signature(headers, body)
        assert uuid.UUID(headers["x-github-delivery"])
    opened, closed = (json.loads(b) for _h, b in pr_deliveries)
    assert opened["action"] == "opened" and opened["number"] == pull["number"]
    assert closed["action"] == "closed" and closed["pull_request"]["merged"] is True
    sample = json.loads((SHARED / "forges/webhooks/github-pull_request-opened.json").read_text())
    assert {"action", "number", "pull_request", "repository", "sender"} <= set(opened)
    assert set(sample["pull_request"]) - set(opened["pull_request"]) <= {"stack"}
    push_sample = json.loads((SHARED / "forges/webhooks/github-push.json").read_text())
    merge_push = receiver.events("push")[-1]
    assert set(push_sample) <= set(merge_push)
    assert merge_push["after"] == closed["pull_request"]["merge_commit_sha"]


def test_push_to_pull_head_sends_synchronize(forge, api, tmp_path, receiver, repos_dir):
    push_branch(forge, tmp_path, "promote/sync", {"s.txt": "1\n"})
    open_pull(api, forge, "promote/sync")
    new_main_child = api.put(
        repo_url(forge, "/contents/s2.txt"),
        json={"message": "more", "content": base64.b64encode(b"2\n").decode(), "branch": "promote/sync"},
    ).json()["commit"]["sha"]
    assert forge.wait_for_webhooks()

    sync = [e for e in receiver.events("pull_request") if e["action"] == "synchronize"]
    assert sync and sync[-1]["after"] == new_main_child
    assert api.get(repo_url(forge, "/pulls/1")).json()["head"]["sha"] == new_main_child


def test_admin_merge_acts_as_a_human_and_emits_webhook(forge, api, tmp_path, receiver):
    push_branch(forge, tmp_path, "promote/human", {"m.txt": "m\n"})
    open_pull(api, forge, "promote/human")

    resp = requests.post(f"{forge.base_url}/sandbox/pulls/acme/gitops/1/merge", json={"user": "carol"})

    assert resp.status_code == 200 and resp.json()["merged"] is True
    assert api.get(repo_url(forge, "/pulls/1")).json()["merged_by"]["login"] == "carol"
    assert forge.wait_for_webhooks()
    closed = receiver.events("pull_request")[-1]
    assert closed["action"] == "closed" and closed["sender"]["login"] == "carol"


def test_failed_webhook_delivery_is_recorded_not_raised(repos_dir):
    with ForgeEmulator(
        repos_dir, webhook_url="http://127.0.0.1:9/unreachable", webhook_secret=SECRET
    ) as emulator:
        requests.post(
            f"{emulator.base_url}/sandbox/checks",
            json={"repo": "acme/gitops", "ref": "main", "state": "success"},
        )
        created = requests.post(
            f"{emulator.base_url}/repos/acme/gitops/git/refs",
            headers={"Authorization": f"Bearer {TOKEN}"},
            json={"ref": "refs/heads/x", "sha": bare_git(repos_dir, "rev-parse", "main")},
        )
        assert created.status_code == 201
        assert emulator.wait_for_webhooks()
        deliveries = requests.get(f"{emulator.base_url}/sandbox/state").json()["deliveries"]
    assert deliveries and deliveries[-1]["error"]


# --- faults -------------------------------------------------------------------------------------
def test_502_fault_then_success(forge, api):
    assert requests.post(
        f"{forge.base_url}/sandbox/faults", json={"status": 502, "count": 2, "paths": ["pulls"]}
    ).ok

    assert api.get(repo_url(forge)).status_code == 200  # path filter spares other routes
    assert [api.get(repo_url(forge, "/pulls")).status_code for _ in range(3)] == [502, 502, 200]


def test_secondary_rate_limit_carries_retry_after(forge, api):
    requests.post(
        f"{forge.base_url}/sandbox/faults", json={"secondary_rate_limit": {"count": 1, "retry_after": 7}}
    )

    limited = api.post(repo_url(forge, "/pulls"), json={})

    assert limited.status_code == 403
    assert limited.headers["retry-after"] == "7"
    assert "secondary rate limit" in limited.json()["message"]
    assert int(limited.headers["x-ratelimit-remaining"]) > 0
    assert api.get(repo_url(forge, "/pulls")).status_code == 200


def test_fail_after_create_still_creates_the_pull(forge, api, tmp_path):
    push_branch(forge, tmp_path, "promote/idem", {"i.txt": "i\n"})
    requests.post(f"{forge.base_url}/sandbox/faults", json={"fail_after_create": True, "paths": ["/pulls"]})

    first = api.post(repo_url(forge, "/pulls"), json={"title": "t", "head": "promote/idem", "base": "main"})
    assert first.status_code == 502
    found = api.get(repo_url(forge, "/pulls"), params={"head": "acme:promote/idem"}).json()
    assert [p["number"] for p in found] == [1]
    retry = api.post(repo_url(forge, "/pulls"), json={"title": "t", "head": "promote/idem", "base": "main"})
    assert retry.status_code == 422


def test_latency_rate_and_reset(forge, api):
    requests.post(f"{forge.base_url}/sandbox/faults", json={"latency_ms": 300, "paths": ["/branches"]})
    requests.post(
        f"{forge.base_url}/sandbox/faults", json={"status": 503, "rate": 1.0, "paths": ["/commits"]}
    )
    started = time.monotonic()
    assert api.get(repo_url(forge, "/branches")).status_code == 200
    assert time.monotonic() - started >= 0.3
    assert api.get(repo_url(forge, "/commits")).status_code == 503
    assert api.get(repo_url(forge, "/commits")).status_code == 503

    assert requests.post(f"{forge.base_url}/sandbox/reset-faults").ok
    assert api.get(repo_url(forge, "/commits")).status_code == 200


# --- admin state and persistence ----------------------------------------------------------------
def test_state_reports_repos_pulls_and_request_counts(forge, api, tmp_path):
    push_branch(forge, tmp_path, "promote/state", {"st.txt": "s\n"})
    open_pull(api, forge, "promote/state")

    state = requests.get(f"{forge.base_url}/sandbox/state").json()

    repo = state["repos"]["acme/gitops"]
    assert "promote/state" in repo["branches"]
    assert repo["pulls"][0]["number"] == 1 and repo["pulls"][0]["state"] == "open"
    assert state["requests"]["POST /repos/{owner}/{repo}/pulls"] == 1
    assert any(route.endswith("git-receive-pack") for route in state["requests"])


def test_state_file_keeps_pulls_across_restart(repos_dir, tmp_path):
    state_file = tmp_path / "persist.json"
    headers = {"Authorization": f"Bearer {TOKEN}"}
    with ForgeEmulator(repos_dir, state_file=state_file) as first:
        push_branch(first, tmp_path, "promote/persist", {"p.txt": "p\n"})
        created = requests.post(
            f"{first.base_url}/repos/acme/gitops/pulls",
            headers=headers,
            json={"title": "keep me", "head": "promote/persist", "base": "main"},
        )
        assert created.status_code == 201
        requests.post(f"{first.base_url}/repos/acme/gitops/issues/1/labels", headers=headers, json=["keep"])

    with ForgeEmulator(repos_dir, state_file=state_file) as second:
        pull = requests.get(f"{second.base_url}/repos/acme/gitops/pulls/1", headers=headers).json()
        assert pull["title"] == "keep me" and [lbl["name"] for lbl in pull["labels"]] == ["keep"]
        nxt = push_branch(second, tmp_path, "promote/next", {"q.txt": "q\n"})
        assert nxt
        again = requests.post(
            f"{second.base_url}/repos/acme/gitops/pulls",
            headers=headers,
            json={"title": "next", "head": "promote/next", "base": "main"},
        )
        assert again.json()["number"] == 2


# --- hardening ----------------------------------------------------------------------------------
def test_branch_protection_blocks_merge_until_checks_and_approval(forge, api, tmp_path):
    head = push_branch(forge, tmp_path, "promote/gated", {"g.txt": "g\n"})
    rule = {"repo": "acme/gitops", "branch": "main", "contexts": ["ci/test"], "required_approvals": 1}
    assert requests.put(f"{forge.base_url}/sandbox/protection", json=rule).ok
    open_pull(api, forge, "promote/gated")
    branch = api.get(repo_url(forge, "/branches/main")).json()
    assert branch["protected"] is True
    assert_schema(branch, "branch-with-protection")

    assert api.get(repo_url(forge, "/pulls/1")).json()["mergeable_state"] == "blocked"
    blocked = api.put(repo_url(forge, "/pulls/1/merge"), json={})
    assert (
        blocked.status_code == 405
        and blocked.json()["message"] == 'Required status check "ci/test" is expected.'
    )

    requests.post(
        f"{forge.base_url}/sandbox/checks",
        json={"repo": "acme/gitops", "sha": head, "context": "ci/test", "state": "success"},
    )
    needs_review = api.put(repo_url(forge, "/pulls/1/merge"), json={})
    assert needs_review.status_code == 405 and "approving review" in needs_review.json()["message"]

    requests.post(f"{forge.base_url}/sandbox/pulls/acme/gitops/1/review", json={"user": "alice"})
    assert api.get(repo_url(forge, "/pulls/1")).json()["mergeable_state"] == "clean"
    assert api.put(repo_url(forge, "/pulls/1/merge"), json={}).status_code == 200


def test_the_portal_status_is_requirable_by_branch_protection(forge, api, tmp_path):
    """`gitops-portal/gates` required on main: a failure or pending blocks the merge, success allows it;
    a description over GitHub's 140 characters is refused (422) as GitHub does."""
    head = push_branch(forge, tmp_path, "promote/portal", {"p.txt": "p\n"})
    rule = {"repo": "acme/gitops", "branch": "main", "contexts": ["gitops-portal/gates"]}
    assert requests.put(f"{forge.base_url}/sandbox/protection", json=rule).ok
    open_pull(api, forge, "promote/portal")
    status = {"context": "gitops-portal/gates", "target_url": "https://portal.example.com/promotions/1/"}

    too_long = api.post(
        repo_url(forge, f"/statuses/{head}"), json={**status, "state": "pending", "description": "x" * 141}
    )
    assert too_long.status_code == 422 and "140" in too_long.text
    for state in ("pending", "failure"):
        posted = api.post(
            repo_url(forge, f"/statuses/{head}"), json={**status, "state": state, "description": "Blocked"}
        )
        assert posted.status_code == 201 and posted.json()["context"] == "gitops-portal/gates"
        blocked = api.put(repo_url(forge, "/pulls/1/merge"), json={})
        assert blocked.status_code == 405 and "gitops-portal/gates" in blocked.json()["message"]

    api.post(
        repo_url(forge, f"/statuses/{head}"), json={**status, "state": "success", "description": "Approved"}
    )
    history = api.get(repo_url(forge, f"/commits/{head}/statuses")).json()
    assert [s["state"] for s in history] == ["success", "failure", "pending"]
    assert history[0]["target_url"] == status["target_url"] and history[0]["creator"]["login"] == "portal-bot"
    assert api.put(repo_url(forge, "/pulls/1/merge"), json={}).status_code == 200


def test_draft_pull_cannot_be_merged(forge, api, tmp_path):
    push_branch(forge, tmp_path, "promote/draft", {"d.txt": "d\n"})
    pull = open_pull(api, forge, "promote/draft", draft=True)
    assert pull["draft"] is True and pull["mergeable_state"] == "draft"
    resp = api.put(repo_url(forge, "/pulls/1/merge"), json={})
    assert resp.status_code == 405


def test_concurrent_duplicate_creates_yield_exactly_one_pull(forge, tmp_path):
    push_branch(forge, tmp_path, "promote/race", {"race.txt": "r\n"})
    results: list[int] = []

    def create() -> None:
        resp = requests.post(
            repo_url(forge, "/pulls"),
            headers={"Authorization": f"Bearer {TOKEN}"},
            json={"title": "race", "head": "promote/race", "base": "main"},
        )
        results.append(resp.status_code)

    threads = [threading.Thread(target=create) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results) == [201] + [422] * 5


def test_primary_rate_limit_fault_reports_zero_remaining(forge, api):
    requests.post(
        f"{forge.base_url}/sandbox/faults", json={"primary_rate_limit": {"count": 1, "reset_in": 30}}
    )
    resp = api.get(repo_url(forge))
    assert resp.status_code == 403
    assert resp.headers["x-ratelimit-remaining"] == "0"
    assert int(resp.headers["x-ratelimit-reset"]) > time.time()
    assert "rate limit exceeded" in resp.json()["message"]
    assert api.get(repo_url(forge)).status_code == 200


def test_clone_url_without_dot_git_and_git_faults_opt_in(forge, tmp_path):
    requests.post(f"{forge.base_url}/sandbox/faults", json={"status": 502, "count": 1})
    work = tmp_path / "nodotgit"
    git("clone", "-q", f"{forge.base_url}/acme/gitops", str(work))  # spared: git traffic needs "git": true
    assert (work / "README.md").is_file()
    requests.post(f"{forge.base_url}/sandbox/reset-faults")
    requests.post(f"{forge.base_url}/sandbox/faults", json={"status": 502, "count": 1, "git": True})
    proc = subprocess.run(
        ["git", "ls-remote", f"{forge.base_url}/acme/gitops.git"],
        env={**os.environ, **GIT_ENV},
        capture_output=True,
        text=True,
    )
    assert proc.returncode != 0


def test_git_data_api_builds_a_multi_file_commit(forge, api, repos_dir):
    main = api.get(repo_url(forge, "/git/ref/heads/main")).json()["object"]["sha"]
    base_tree = api.get(repo_url(forge, f"/git/commits/{main}")).json()["tree"]["sha"]
    blob = api.post(repo_url(forge, "/git/blobs"), json={"content": "b\n", "encoding": "utf-8"})
    assert blob.status_code == 201
    assert_schema(blob.json(), "short-blob")
    tree = api.post(
        repo_url(forge, "/git/trees"),
        json={
            "base_tree": base_tree,
            "tree": [
                {"path": "x/one.txt", "mode": "100644", "type": "blob", "sha": blob.json()["sha"]},
                {"path": "x/two.txt", "mode": "100644", "type": "blob", "content": "two\n"},
                {"path": "README.md", "mode": "100644", "type": "blob", "sha": None},
            ],
        },
    )
    assert tree.status_code == 201
    assert_schema(tree.json(), "git-tree")
    commit = api.post(
        repo_url(forge, "/git/commits"),
        json={"message": "Multi-file", "tree": tree.json()["sha"], "parents": [main]},
    )
    assert commit.status_code == 201
    assert_schema(commit.json(), "git-commit")
    moved = api.patch(repo_url(forge, "/git/refs/heads/main"), json={"sha": commit.json()["sha"]})
    assert moved.status_code == 200
    files = bare_git(repos_dir, "ls-tree", "-r", "--name-only", "main").splitlines()
    assert "x/one.txt" in files and "x/two.txt" in files and "README.md" not in files


def test_html_url_serves_a_readable_page(forge, api, tmp_path):
    push_branch(forge, tmp_path, "promote/page", {"pg.txt": "p\n"})
    pull = open_pull(api, forge, "promote/page", body="<script>x</script>")
    page = requests.get(pull["html_url"])
    assert page.status_code == 200 and page.headers["Content-Type"].startswith("text/html")
    assert "Promote promote/page" in page.text and "<script>x" not in page.text


def test_percent_encoded_paths_and_legacy_refs_prefix_listing(forge, api, tmp_path):
    sha = push_branch(forge, tmp_path, "team/web+hotfix", {"e.txt": "e\n"})
    assert api.get(repo_url(forge, "/git/ref/heads/team/web%2Bhotfix")).json()["object"]["sha"] == sha
    assert api.get(repo_url(forge, "/branches/team%2Fweb%2Bhotfix")).json()["commit"]["sha"] == sha
    assert api.get(repo_url(forge, "/git/ref/heads/team")).status_code == 404
    listed = api.get(repo_url(forge, "/git/refs/heads/team")).json()
    assert_schema(listed, "git-ref", array=True)
    assert [r["ref"] for r in listed] == ["refs/heads/team/web+hotfix"]


# --- checks: check runs and the simulated CI ------------------------------------------------------
def wait_for(predicate: Any, timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError("condition not met in time")


def test_check_runs_create_update_and_list_per_ref(forge, api, repos_dir):
    sha = bare_git(repos_dir, "rev-parse", "main")
    assert api.get(repo_url(forge, "/commits/main/check-runs")).json() == {"total_count": 0, "check_runs": []}
    created = api.post(
        repo_url(forge, "/check-runs"), json={"name": "validate", "head_sha": sha, "status": "in_progress"}
    )
    assert created.status_code == 201
    assert_schema(created.json(), "check-run")
    run_id = created.json()["id"]
    done = api.patch(repo_url(forge, f"/check-runs/{run_id}"), json={"conclusion": "failure"})
    assert done.json()["status"] == "completed" and done.json()["conclusion"] == "failure"
    assert done.json()["completed_at"]
    api.post(
        repo_url(forge, "/check-runs"), json={"name": "validate", "head_sha": sha, "conclusion": "success"}
    )
    requests.post(
        f"{forge.base_url}/sandbox/checks",
        json={
            "repo": "acme/gitops",
            "ref": "main",
            "context": "lint",
            "state": "failure",
            "kind": "check_run",
        },
    )

    listed = api.get(repo_url(forge, f"/commits/{sha}/check-runs")).json()
    for run in listed["check_runs"]:
        assert_schema(run, "check-run")
    # filter=latest (the default): the newest run per name.
    assert {(r["name"], r["conclusion"]) for r in listed["check_runs"]} == {
        ("validate", "success"),
        ("lint", "failure"),
    }
    every = api.get(repo_url(forge, "/commits/main/check-runs?filter=all&check_name=validate")).json()
    assert every["total_count"] == 2
    bad = api.post(repo_url(forge, "/check-runs"), json={"name": "x", "head_sha": sha, "status": "completed"})
    assert bad.status_code == 422
    assert api.get(repo_url(forge, "/check-runs/999999")).status_code == 404
    # The run's html_url is a page naming its state and linking its commit.
    page = requests.get(done.json()["html_url"])
    assert page.status_code == 200 and page.headers["Content-Type"].startswith("text/html")
    assert "validate" in page.text and "failure" in page.text and f"/commit/{sha}" in page.text
    assert requests.get(done.json()["html_url"].rsplit("/", 1)[0] + "/999999").status_code == 404


def test_simulated_ci_reports_on_every_pull_head_and_fails_on_the_marker(forge, api, tmp_path, repos_dir):
    cfg = requests.post(f"{forge.base_url}/sandbox/ci", json={"enabled": True, "delay": 1.0}).json()
    assert cfg["context"] == "ci/validate" and cfg["fail_marker"] == "[fail-ci]"
    push_branch(forge, tmp_path, "promote/ok", {"ok.txt": "1\n"})
    pull = open_pull(api, forge, "promote/ok")
    head = pull["head"]["sha"]
    assert api.get(repo_url(forge, f"/commits/{head}/status")).json()["state"] == "pending"

    combined = wait_for(
        lambda: (c := api.get(repo_url(forge, f"/commits/{head}/status")).json())["state"] != "pending" and c
    )
    assert combined["state"] == "success"
    assert [s["context"] for s in combined["statuses"]] == ["ci/validate"]
    runs = api.get(repo_url(forge, f"/commits/{head}/check-runs")).json()["check_runs"]
    assert [(r["name"], r["status"], r["conclusion"]) for r in runs] == [("validate", "completed", "success")]

    # A new head whose commit message carries the marker fails, on the same pull request.
    new_head = api.put(
        repo_url(forge, "/contents/bad.txt"),
        json={
            "message": "Break it [fail-ci]",
            "content": base64.b64encode(b"x\n").decode(),
            "branch": "promote/ok",
        },
    ).json()["commit"]["sha"]
    failed = wait_for(
        lambda: (
            (c := api.get(repo_url(forge, f"/commits/{new_head}/status")).json())["state"] != "pending" and c
        )
    )
    assert failed["state"] == "failure" and "[fail-ci]" in failed["statuses"][0]["description"]
    runs = api.get(repo_url(forge, f"/commits/{new_head}/check-runs")).json()["check_runs"]
    assert runs[0]["conclusion"] == "failure"

    # mode=fail fails everything; /sandbox/ci/run re-runs on demand.
    requests.post(f"{forge.base_url}/sandbox/ci", json={"mode": "fail", "delay": 0})
    requests.post(f"{forge.base_url}/sandbox/ci/run", json={"repo": "acme/gitops", "sha": head})
    assert api.get(repo_url(forge, f"/commits/{head}/status")).json()["state"] == "failure"
    assert requests.post(f"{forge.base_url}/sandbox/ci", json={"mode": "sometimes"}).status_code == 422


def test_simulated_ci_is_off_by_default(forge, api, tmp_path):
    push_branch(forge, tmp_path, "promote/quiet", {"q.txt": "1\n"})
    head = open_pull(api, forge, "promote/quiet")["head"]["sha"]
    time.sleep(0.3)
    assert api.get(repo_url(forge, f"/commits/{head}/status")).json()["total_count"] == 0


# --- HTML pages: commit pages and the merge button ------------------------------------------------
def test_commit_page_at_githubs_url_shape(forge, api, tmp_path, repos_dir):
    sha = push_branch(
        forge, tmp_path, "promote/commit-page", {"apps/web/kustomization.yaml": "newTag: '3.0.0'\n"}
    )
    html_url = api.get(repo_url(forge, f"/commits/{sha}")).json()["html_url"]
    assert html_url == f"{forge.base_url}/acme/gitops/commit/{sha}"
    requests.post(
        f"{forge.base_url}/sandbox/checks",
        json={"repo": "acme/gitops", "sha": sha, "context": "ci/validate", "state": "failure"},
    )
    page = requests.get(html_url)
    assert page.status_code == 200 and page.headers["Content-Type"].startswith("text/html")
    assert "Change on promote/commit-page" in page.text and sha in page.text
    assert "apps/web/kustomization.yaml" in page.text and "newTag: &#x27;3.0.0&#x27;" in page.text
    assert "ci/validate: ✗ failure" in page.text
    parent = bare_git(repos_dir, "rev-parse", "main")
    assert f'href="{forge.base_url}/acme/gitops/commit/{parent}"' in page.text
    short = requests.get(f"{forge.base_url}/acme/gitops/commit/{sha[:7]}")
    assert short.status_code == 200
    assert requests.get(f"{forge.base_url}/acme/gitops/commit/{'0' * 40}").status_code == 404


def test_pull_page_merge_button_merges_as_the_named_user(forge, api, tmp_path, receiver):
    push_branch(forge, tmp_path, "promote/button", {"b.txt": "b\n"})
    pull = open_pull(api, forge, "promote/button")
    page = requests.get(pull["html_url"]).text
    assert '<form method="post" action="/acme/gitops/pull/1/merge">' in page
    assert '<button type="submit">Merge pull request</button>' in page
    assert f'name="sha" value="{pull["head"]["sha"]}"' in page

    # A stale head (the form was rendered before a push) is refused like the API's 409.
    stale = requests.post(
        f"{forge.base_url}/acme/gitops/pull/1/merge",
        data={"sha": "0" * 40, "user": "dana"},
        allow_redirects=False,
    )
    assert stale.status_code == 409 and "Head branch was modified" in stale.text
    assert api.get(repo_url(forge, "/pulls/1")).json()["merged"] is False

    merged = requests.post(
        f"{forge.base_url}/acme/gitops/pull/1/merge",
        data={"sha": pull["head"]["sha"], "user": "dana", "merge_method": "squash"},
        allow_redirects=False,
    )
    assert merged.status_code == 303 and merged.headers["Location"] == pull["html_url"]
    after = api.get(repo_url(forge, "/pulls/1")).json()
    assert after["merged"] is True and after["merged_by"]["login"] == "dana"
    merge_page = requests.get(pull["html_url"]).text
    assert "Merged by <strong>dana</strong>" in merge_page and "Merge pull request</button>" not in merge_page
    assert f"/acme/gitops/commit/{after['merge_commit_sha']}" in merge_page
    assert forge.wait_for_webhooks()
    closed = receiver.events("pull_request")[-1]
    assert closed["action"] == "closed" and closed["pull_request"]["merged_by"]["login"] == "dana"


def test_ci_enabled_from_the_constructor_as_the_command_line_does(repos_dir, tmp_path):
    emulator = ForgeEmulator(repos_dir, ci={"enabled": True, "context": "ci/validate", "delay": 0})
    emulator.start()
    try:
        session = requests.Session()
        session.headers["Authorization"] = f"Bearer {TOKEN}"
        push_branch(emulator, tmp_path, "promote/ctor", {"c.txt": "c\n"})
        head = open_pull(session, emulator, "promote/ctor")["head"]["sha"]
        combined = session.get(repo_url(emulator, f"/commits/{head}/status")).json()
        assert combined["state"] == "success" and combined["statuses"][0]["context"] == "ci/validate"
    finally:
        emulator.stop()
