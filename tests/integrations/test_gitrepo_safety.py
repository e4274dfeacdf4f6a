"""gitrepo's inert-content settings and its transient/permanent sorting of git failures."""

from __future__ import annotations

import os
import socket
import subprocess
from pathlib import Path

import pytest

from changes.pullrequests import (
    PullRequestPermanent,
    PullRequestRetryable,
    PullRequestSpec,
    _from_git,
    pull_request_ensure,
)
from integrations.gitrepo import (
    GitError,
    GitMirror,
    GitTransientError,
    GitWorkspace,
    InvalidRef,
    RevertConflict,
    UnsafeRepositoryContent,
)
from integrations.gitrepo.command import _base_env
from tests.promotions.conftest import sandbox  # noqa: F401  (fixture)
from tests.sandbox_fixtures import GIT_IDENTITY

ENV = {**os.environ, **GIT_IDENTITY}


def _config(env: dict[str, str]) -> dict[str, str]:
    return {
        env[f"GIT_CONFIG_KEY_{i}"]: env[f"GIT_CONFIG_VALUE_{i}"] for i in range(int(env["GIT_CONFIG_COUNT"]))
    }


@pytest.fixture
def origin(tmp_path: Path) -> Path:
    bare = tmp_path / "origin.git"
    seed = tmp_path / "seed"
    subprocess.run(["git", "init", "-q", "--bare", "-b", "main", str(bare)], env=ENV, check=True)
    subprocess.run(["git", "clone", "-q", str(bare), str(seed)], env=ENV, check=True, capture_output=True)
    (seed / "a.txt").write_text("a\n")
    for args in (
        ["checkout", "-q", "-b", "main"],
        ["add", "a.txt"],
        ["commit", "-qm", "a"],
        ["push", "-q", "origin", "main"],
    ):
        subprocess.run(["git", *args], cwd=seed, env=ENV, check=True, capture_output=True)
    return bare


def test_every_command_runs_with_repository_content_inert() -> None:
    env = _base_env("https://forge.example/acme/gitops.git", None, allow_file=False, allow_http=False)
    config = _config(env)

    assert config["core.symlinks"] == "false"
    assert config["core.fsmonitor"] == "false"
    assert config["core.hooksPath"] == os.devnull
    assert config["protocol.file.allow"] == "never"
    assert config["submodule.recurse"] == "false" and config["fetch.recurseSubmodules"] == "false"
    assert env["GIT_CONFIG_NOSYSTEM"] == "1" and env["GIT_CONFIG_GLOBAL"] == os.devnull
    assert env["GIT_ATTR_NOSYSTEM"] == "1" and env["GIT_CONFIG_PARAMETERS"] == ""
    assert os.path.isdir(env["HOME"]) and os.listdir(env["HOME"]) == []
    assert env["XDG_CONFIG_HOME"] == env["HOME"]
    sandbox_env = _base_env("/srv/repo.git", None, allow_file=True, allow_http=False)
    assert _config(sandbox_env)["protocol.file.allow"] == "always"
    assert sandbox_env["GIT_ALLOW_PROTOCOL"] == "https:file"


def test_a_held_index_lock_is_a_transient_error(origin: Path, tmp_path: Path) -> None:
    ws = GitWorkspace.clone(str(origin), tmp_path / "ws", branch="main", allow_file=True)
    ws.write_file("b.txt", "b\n")
    (ws.path / ".git" / "index.lock").write_text("")

    with pytest.raises(GitTransientError) as caught:
        ws.commit("b", author_name="A", author_email="a@example.com")
    assert caught.value.retryable
    (ws.path / ".git" / "index.lock").unlink()
    assert ws.commit("b", author_name="A", author_email="a@example.com")


def test_a_refused_connection_is_transient_and_a_missing_repository_is_not(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    mirror = GitMirror(tmp_path / "m.git", f"http://127.0.0.1:{port}/acme/gitops.git", allow_http=True)
    with pytest.raises(GitTransientError):
        mirror.ensure()

    with pytest.raises(GitError) as caught:
        GitWorkspace.clone(str(tmp_path / "nowhere.git"), tmp_path / "ws", branch="main", allow_file=True)
    assert not caught.value.retryable
    assert not InvalidRef("x").retryable and not UnsafeRepositoryContent("x").retryable


def test_git_errors_are_sorted_at_the_pull_request_boundary() -> None:
    assert isinstance(
        _from_git(GitTransientError("git commit failed: index.lock exists"), "w"), PullRequestRetryable
    )
    assert isinstance(_from_git(UnsafeRepositoryContent("refusing 'x': symlink"), "w"), PullRequestPermanent)
    assert isinstance(_from_git(InvalidRef("bad"), "w"), PullRequestPermanent)
    assert isinstance(
        _from_git(GitError("git push failed (128): Authentication failed"), "w"), PullRequestPermanent
    )


@pytest.mark.django_db(transaction=True)
def test_a_lock_held_while_preparing_the_branch_retries_and_pushes_nothing(sandbox) -> None:  # noqa: F811
    def prepare(ws: GitWorkspace) -> str | None:
        ws.write_file("README.md", "changed\n")
        (ws.path / ".git" / "index.lock").write_text("")  # another git process, as far as git knows
        return ws.commit("x", author_name="A", author_email="a@example.com")

    spec = PullRequestSpec(
        repository=sandbox.repository, branch="promote/locked/prod", base="main", title="t", body="b"
    )
    with pytest.raises(PullRequestRetryable, match=r"index\.lock': File exists"):
        pull_request_ensure(spec=spec, prepare_branch=prepare)
    assert "promote/locked/prod" not in sandbox.branches()
    assert sandbox.pulls() == []


@pytest.mark.django_db(transaction=True)
def test_a_revert_conflict_in_prepare_still_reaches_the_caller_as_is(sandbox) -> None:  # noqa: F811
    def prepare(ws: GitWorkspace) -> str | None:
        raise RevertConflict("conflict", sha="a" * 40, files=["x"])

    spec = PullRequestSpec(
        repository=sandbox.repository, branch="rollback/x/prod", base="main", title="t", body="b"
    )
    with pytest.raises(RevertConflict):
        pull_request_ensure(spec=spec, prepare_branch=prepare)
