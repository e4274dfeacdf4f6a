"""GitHubClient, GitWorkspace and GitMirror end to end against the sandbox forge emulator."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from integrations.forges import ForgeUnavailable, GitHubClient, PullRequestAlreadyExists, forge_client
from integrations.gitrepo import GitError, GitMirror, GitWorkspace

forge_module = pytest.importorskip("sandbox.forge")

TOKEN = "sandbox-forge-token"
ENV = {
    **os.environ,
    "GIT_CONFIG_GLOBAL": os.devnull,
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_AUTHOR_NAME": "Dev",
    "GIT_AUTHOR_EMAIL": "dev@example.com",
    "GIT_COMMITTER_NAME": "Dev",
    "GIT_COMMITTER_EMAIL": "dev@example.com",
}


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=cwd, env=ENV, check=True, capture_output=True, text=True).stdout


@pytest.fixture
def forge(tmp_path: Path) -> Iterator[object]:
    repos = tmp_path / "repos"
    bare = repos / "acme" / "gitops.git"
    bare.parent.mkdir(parents=True)
    git(tmp_path, "init", "-q", "--bare", "-b", "main", str(bare))
    seed = tmp_path / "seed"
    git(tmp_path, "init", "-q", "-b", "main", str(seed))
    (seed / "environments/prod/web").mkdir(parents=True)
    (seed / "environments/prod/web/kustomization.yaml").write_text("newTag: '1.0.0'\n")
    git(seed, "add", ".")
    git(seed, "commit", "-q", "-m", "init")
    git(seed, "push", "-q", str(bare), "main")
    emulator = forge_module.ForgeEmulator(repos)
    emulator.start()
    yield emulator
    emulator.stop()


def test_promotion_flow_over_http_and_rest(forge: object, tmp_path: Path) -> None:
    base_url: str = forge.base_url  # type: ignore[attr-defined]
    remote = f"{base_url}/acme/gitops.git"
    gh = forge_client("github", base_url, TOKEN, "acme/gitops", allow_http=True)
    assert isinstance(gh, GitHubClient)

    ws = GitWorkspace.clone(remote, tmp_path / "ws", branch="main", token=TOKEN, allow_http=True)
    ws.create_branch("promote/web/prod", "main")
    ws.write_file("environments/prod/web/kustomization.yaml", "newTag: '1.1.0'\n")
    head = ws.commit(
        "Promote web 1.1.0 to prod",
        author_name="Alice",
        author_email="a@x",
        trailers={"Portal-Promotion": "1"},
    )
    ws.push("promote/web/prod")
    assert ws.remote_branch_sha("promote/web/prod") == head
    assert gh.get_branch_sha("promote/web/prod") == head

    pr = gh.create_pull_request(head="promote/web/prod", base="main", title="Promote web", body="by portal")
    with pytest.raises(PullRequestAlreadyExists):
        gh.create_pull_request(head="promote/web/prod", base="main", title="Promote web", body="by portal")
    found = gh.find_pull_request(head="promote/web/prod", base="main")
    assert found is not None and found.number == pr.number and found.head_sha == head

    merge_sha = gh.merge_pull_request(pr.number, sha=head)
    merged = gh.get_pull_request(pr.number)
    assert merged.state == "merged" and merged.merge_commit_sha == merge_sha

    mirror = GitMirror(tmp_path / "mirror.git", remote, token=TOKEN, allow_http=True)
    mirror.ensure()
    commits = list(mirror.iter_commits())
    assert commits[-1].sha == merge_sha and commits[-1].is_merge
    assert [c.path for c in commits[-1].changes] == ["environments/prod/web/kustomization.yaml"]

    # Roll back by reverting the merge commit and pushing a branch.
    rollback = GitWorkspace.clone(remote, tmp_path / "rb", branch="main", token=TOKEN, allow_http=True)
    rollback.create_branch("rollback/web/prod", "main")
    (revert_sha,) = rollback.revert([merge_sha])
    rollback.push("rollback/web/prod")
    assert gh.get_branch_sha("rollback/web/prod") == revert_sha
    gh.delete_branch("rollback/web/prod")
    assert gh.get_branch_sha("rollback/web/prod") is None


def test_push_without_token_fails_cleanly(forge: object, tmp_path: Path) -> None:
    remote = f"{forge.base_url}/acme/gitops.git"  # type: ignore[attr-defined]
    ws = GitWorkspace.clone(remote, tmp_path / "ws", branch="main", allow_http=True)
    ws.write_file("x.txt", "x\n")
    ws.commit("x", author_name="A", author_email="a@x")

    with pytest.raises(GitError):
        ws.push("main")


def test_faults_map_to_forge_unavailable(forge: object) -> None:
    base_url: str = forge.base_url  # type: ignore[attr-defined]
    gh = forge_client("github", base_url, TOKEN, "acme/gitops", allow_http=True)
    requests.post(
        f"{base_url}/sandbox/faults", json={"status": 502, "count": 1, "paths": ["pulls"]}, timeout=5
    )
    requests.post(
        f"{base_url}/sandbox/faults", json={"secondary_rate_limit": {"count": 1, "retry_after": 7}}, timeout=5
    )

    with pytest.raises(ForgeUnavailable) as first:
        gh.find_pull_request(head="x", base="main")
    with pytest.raises(ForgeUnavailable) as second:
        gh.find_pull_request(head="x", base="main")

    statuses = sorted([first.value.status or 0, second.value.status or 0])
    assert statuses == [403, 502]
    assert 7.0 in (first.value.retry_after, second.value.retry_after)
    assert gh.find_pull_request(head="x", base="main") is None


def test_mirror_ingests_generated_demo_repo(tmp_path: Path) -> None:
    repogen = pytest.importorskip("sandbox.repogen")
    generated = repogen.generate_repo(tmp_path / "demo.git", apps=4, clusters=2, commits=400, seed=3)

    mirror = GitMirror(tmp_path / "mirror.git", str(generated.path), allow_file=True)
    mirror.ensure()
    commits = list(mirror.iter_commits())

    total = int(git(tmp_path, "--git-dir", str(generated.path), "rev-list", "--count", "main").strip())
    assert len(commits) == total
    assert commits[-1].sha == generated.head_sha
    seen: set[str] = set()
    for commit in commits:  # oldest first: every parent was yielded before its child
        assert all(p in seen for p in commit.parents)
        seen.add(commit.sha)
    assert any(c.is_merge for c in commits) == any(
        len(line.split()) > 2
        for line in git(
            tmp_path, "--git-dir", str(generated.path), "rev-list", "--parents", "main"
        ).splitlines()
    )
    assert all(ch.path for c in commits for ch in c.changes)
