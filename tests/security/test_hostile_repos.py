"""Repository content is data, never code: a corpus of hostile repositories built with real git.

Each repository below holds something that, followed or executed, would let whoever can push to
a GitOps repository run commands on the portal's workers (which hold every token and key) or read
their files. Each is refused with a clear error (UnsafeRepositoryContent) or inert; the first test
is the end-to-end regression through the real promotion path on the sandbox forge.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from pathlib import Path

import pytest

from audit.models import AuditEvent
from changes.pullrequests import PullRequestPermanent, PullRequestSpec, pull_request_ensure
from integrations.gitrepo import (
    GitError,
    GitMirror,
    GitWorkspace,
    InvalidRef,
    UnsafeRepositoryContent,
    validate_repo_path,
)
from inventory.models import Application
from promotions import services
from promotions.models import PromotionState
from tests.promotions.conftest import roles, sandbox, users  # noqa: F401  (fixtures)
from tests.promotions.helpers import promotable_app
from tests.sandbox_fixtures import GIT_IDENTITY

ENV = {**os.environ, **GIT_IDENTITY}
SYMLINK, FILE = "120000", "100644"


def git(repo: Path, *args: str, stdin: str | None = None, env: dict[str, str] | None = None) -> str:
    """Run git on a bare repository (plumbing only: no work tree, so no link is ever followed here)."""
    return subprocess.run(
        ["git", "--git-dir", str(repo), *args],
        input=stdin,
        env={**ENV, **(env or {})},
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()


def commit_entries(
    repo: Path, entries: dict[str, tuple[str, str]], message: str, branch: str = "main"
) -> str:
    """Commit {path: (mode, content)} on top of `branch` of a bare repo; content of a link is its target."""
    head = git(repo, "rev-parse", "--verify", "--quiet", f"refs/heads/{branch}") if _has(repo, branch) else ""
    with tempfile.TemporaryDirectory() as tmp:
        env = {"GIT_INDEX_FILE": str(Path(tmp) / "index")}
        if head:
            git(repo, "read-tree", head, env=env)
        for path, (mode, content) in entries.items():
            blob = git(repo, "hash-object", "-w", "--stdin", stdin=content)
            git(repo, "update-index", "--add", "--cacheinfo", f"{mode},{blob},{path}", env=env)
        tree = git(repo, "write-tree", env=env)
    sha = git(repo, "commit-tree", tree, *(["-p", head] if head else []), stdin=message)
    git(repo, "update-ref", f"refs/heads/{branch}", sha)
    return sha


def commit_tree(repo: Path, tree: str, message: str, branch: str = "main") -> str:
    """Commit a hand-made tree (names git itself would never add) on top of `branch`."""
    head = git(repo, "rev-parse", f"refs/heads/{branch}")
    sha = git(repo, "commit-tree", tree, "-p", head, stdin=message)
    git(repo, "update-ref", f"refs/heads/{branch}", sha)
    return sha


def _has(repo: Path, branch: str) -> bool:
    return (
        subprocess.run(
            ["git", "--git-dir", str(repo), "rev-parse", "--verify", "--quiet", f"refs/heads/{branch}"],
            env=ENV,
            capture_output=True,
        ).returncode
        == 0
    )


@pytest.fixture
def origin(tmp_path: Path) -> Path:
    bare = tmp_path / "origin.git"
    subprocess.run(["git", "init", "-q", "--bare", "-b", "main", str(bare)], env=ENV, check=True)
    commit_entries(
        bare,
        {
            "environments/prod/app/kustomization.yaml": (FILE, "newTag: '1.0.0'\n"),
            "README.md": (FILE, "hi\n"),
        },
        "init",
    )
    return bare


def clone(origin: Path, tmp_path: Path, **kwargs) -> GitWorkspace:
    ws = GitWorkspace.clone(str(origin), tmp_path / "ws", branch="main", allow_file=True, **kwargs)
    ws.create_branch("promote/app/prod", ws.head())
    return ws


def mirror_of(origin: Path, tmp_path: Path, **kwargs) -> GitMirror:
    mirror = GitMirror(tmp_path / "mirror.git", str(origin), allow_file=True, **kwargs)
    mirror.ensure()
    return mirror


# ---------------------------------------------------------------------------------------------
# End to end: the reproduced attack through the real promotion path


pytestmark_e2e = pytest.mark.django_db(transaction=True)


@pytestmark_e2e
def test_promotion_through_a_symlink_into_dot_git_runs_nothing_and_fails_clearly(
    sandbox,  # noqa: F811
    users,  # noqa: F811
    purge_broker,
    tmp_path,
):
    app = promotable_app(sandbox)
    marker = tmp_path / "fsmonitor-ran"
    # Stage "ships" a config.yaml that is a git config naming a command; prod's config.yaml is a
    # link to the clone's own .git/config. Copying one onto the other used to write the first
    # into .git/config, and the commit's `git add` then ran the command.
    hostile = (
        "[core]\n\trepositoryformatversion = 0\n\tbare = false\n"
        f'\tfsmonitor = "touch {marker}; false"\n'
        f'\thooksPath = "{tmp_path}"\n'
    )
    stage_dir, prod_dir = sandbox.stage.app_path(app.name), sandbox.prod.app_path(app.name)
    commit_entries(
        sandbox.bare,
        {
            f"{stage_dir}/config.yaml": (FILE, hostile),
            f"{prod_dir}/config.yaml": (SYMLINK, "../../../.git/config"),
        },
        "Add config",
    )
    sandbox.reconcile()
    sandbox.poll()
    Application.objects.filter(pk=app.pk).update(
        strategy="copy-paths", strategy_options={"paths": ["config.yaml"]}
    )
    app.refresh_from_db()
    promotion = services.promotion_request_create(
        actor=users["rm"], applications=[app], source_env=sandbox.stage, target_env=sandbox.prod
    )
    branches_before = set(sandbox.branches())

    # The branch is built (and refused) at request time, before anyone could approve it.
    outcome = services.promotion_branch_push(promotion_id=promotion.pk)

    assert not marker.exists(), "the command planted in the repository ran on the worker"
    assert outcome == "failed"
    promotion.refresh_from_db()
    assert promotion.state == PromotionState.FAILED
    assert (
        "symbolic link" in promotion.failure_reason and f"{prod_dir}/config.yaml" in promotion.failure_reason
    )
    assert sandbox.pulls() == []
    assert set(sandbox.branches()) == branches_before
    failed = AuditEvent.objects.filter(
        target_type="promotion", target_id=str(promotion.pk), action="promotion.failed"
    ).get()
    assert "symbolic link" in failed.message or "symbolic link" in str(failed.after)


@pytestmark_e2e
def test_pull_request_ensure_refuses_unsafe_content_before_pushing(sandbox, purge_broker):  # noqa: F811
    commit_entries(sandbox.bare, {"environments/prod/evil": (SYMLINK, "/etc")}, "link a directory out")
    calls: list[str] = []

    def prepare(ws: GitWorkspace) -> str | None:
        calls.append("prepare")
        ws.write_file("environments/prod/evil/passwd", "root::0:0::/:/bin/sh\n")
        return ws.commit("x", author_name="A", author_email="a@example.com")

    with pytest.raises(PullRequestPermanent, match="symbolic link"):
        pull_request_ensure(
            spec=PullRequestSpec(
                repository=sandbox.repository, branch="promote/evil/prod", base="main", title="t", body="b"
            ),
            prepare_branch=prepare,
        )
    assert calls == ["prepare"]
    assert "promote/evil/prod" not in sandbox.branches()
    assert sandbox.pulls() == []


# ---------------------------------------------------------------------------------------------
# The corpus, one hostile shape per test (workspace and mirror)


def test_symlink_to_dot_git_config_is_checked_out_as_a_plain_file_and_refused(origin, tmp_path):
    commit_entries(origin, {"environments/prod/app/config.yaml": (SYMLINK, "../../../.git/config")}, "link")
    ws = clone(origin, tmp_path)
    on_disk = ws.path / "environments/prod/app/config.yaml"
    config_before = (ws.path / ".git/config").read_bytes()

    assert not on_disk.is_symlink()  # core.symlinks=false: the link is its text, pointing nowhere
    with pytest.raises(UnsafeRepositoryContent, match="symbolic link"):
        ws.read_file("environments/prod/app/config.yaml")
    with pytest.raises(UnsafeRepositoryContent, match="symbolic link"):
        ws.write_file("environments/prod/app/config.yaml", '[core]\n\tfsmonitor = "touch x"\n')
    assert (ws.path / ".git/config").read_bytes() == config_before
    with pytest.raises(UnsafeRepositoryContent, match="symbolic link"):
        mirror_of(origin, tmp_path).file_at("main", "environments/prod/app/config.yaml")


def test_symlink_to_etc_passwd_is_never_read(origin, tmp_path):
    commit_entries(origin, {"environments/prod/app/values.yaml": (SYMLINK, "/etc/passwd")}, "link")
    ws = clone(origin, tmp_path)
    mirror = mirror_of(origin, tmp_path)

    with pytest.raises(UnsafeRepositoryContent):
        ws.read_file("environments/prod/app/values.yaml")
    with pytest.raises(UnsafeRepositoryContent):
        mirror.file_at("main", "environments/prod/app/values.yaml")
    # A link planted on disk (not in git) is refused too: every component is lstat'ed.
    os.symlink("/etc", ws.path / "environments/prod/etc")
    with pytest.raises(UnsafeRepositoryContent, match="symbolic link"):
        ws.read_file("environments/prod/etc/passwd")
    with pytest.raises(UnsafeRepositoryContent, match="symbolic link"):
        ws.write_file("environments/prod/etc/hostname", "pwned\n")


def test_symlinked_directory_is_refused_for_paths_below_it(origin, tmp_path):
    commit_entries(origin, {"environments/staging": (SYMLINK, "../.git")}, "link a directory")
    ws = clone(origin, tmp_path)

    for path in ("environments/staging/config", "environments/staging/hooks/post-commit"):
        with pytest.raises(UnsafeRepositoryContent, match="'environments/staging' is a symbolic link"):
            ws.write_file(path, "x\n")
        with pytest.raises(UnsafeRepositoryContent, match="symbolic link"):
            mirror_of(origin, tmp_path).file_at("main", path)
    assert not (ws.path / ".git/hooks/post-commit").exists()


@pytest.mark.parametrize(
    "path",
    [
        "../outside.txt",
        "environments/../../outside.txt",
        "/etc/passwd",
        ".git/config",
        "environments/.GIT/config",
        "environments/.Git./config",
        "a/./b",
        "a//b",
        "a/b\x00c",
        "-rf",
    ],
)
def test_hostile_paths_are_refused_before_any_git_or_file_access(origin, tmp_path, path):
    ws = clone(origin, tmp_path)
    with pytest.raises(InvalidRef):
        validate_repo_path(path)
    with pytest.raises(InvalidRef):
        ws.write_file(path, "x")
    with pytest.raises(InvalidRef):
        ws.read_file(path)
    assert not (tmp_path / "outside.txt").exists()


def test_dot_dot_and_dot_git_tree_entries_never_reach_the_work_tree(origin, tmp_path):
    blob = git(origin, "hash-object", "-w", "--stdin", stdin='[core]\n\tfsmonitor = "touch /tmp/x"\n')
    inner = git(origin, "mktree", stdin=f"100644 blob {blob}\tconfig\n")
    base = git(origin, "rev-parse", "main^{tree}")
    entries = git(origin, "ls-tree", base)
    tree = git(origin, "mktree", stdin=f"{entries}\n100644 blob {blob}\t..\n040000 tree {inner}\t.GIT\n")
    commit_tree(origin, tree, "hostile names")

    # git refuses to check such a tree out: the clone fails, nothing is written outside or into .git.
    with pytest.raises(GitError):
        clone(origin, tmp_path)
    assert not (tmp_path / "config").exists()
    assert not (tmp_path / "ws" / ".GIT").exists()
    mirror = mirror_of(origin, tmp_path)
    with pytest.raises(InvalidRef):
        mirror.file_at("main", ".GIT/config")
    with pytest.raises(InvalidRef):
        mirror.file_at("main", "..")


def test_gitmodules_pointing_at_a_local_path_is_never_cloned(origin, tmp_path):
    secret = tmp_path / "secret.git"
    subprocess.run(["git", "init", "-q", "--bare", "-b", "main", str(secret)], env=ENV, check=True)
    secret_sha = commit_entries(secret, {"key.pem": (FILE, "PRIVATE\n")}, "secret")
    gitmodules = f'[submodule "vendor"]\n\tpath = vendor\n\turl = {secret}\n'
    commit_entries(origin, {".gitmodules": (FILE, gitmodules)}, "submodule")
    head = git(origin, "rev-parse", "main")
    with tempfile.TemporaryDirectory() as tmp:
        env = {"GIT_INDEX_FILE": str(Path(tmp) / "index")}
        git(origin, "read-tree", head, env=env)
        git(origin, "update-index", "--add", "--cacheinfo", f"160000,{secret_sha},vendor", env=env)
        tree = git(origin, "write-tree", env=env)
    commit_tree(origin, tree, "gitlink")

    ws = clone(origin, tmp_path)
    assert not (ws.path / "vendor" / "key.pem").exists()
    assert not (ws.path / ".git" / "modules").exists()
    with pytest.raises(UnsafeRepositoryContent, match="submodule"):
        ws.write_file("vendor/key.pem", "x")
    with pytest.raises(UnsafeRepositoryContent, match="submodule"):
        mirror_of(origin, tmp_path).file_at("main", "vendor/key.pem")
    # Fetching and committing never recurse into it either.
    ws.write_file("README.md", "changed\n")
    assert ws.commit("edit", author_name="A", author_email="a@example.com")
    assert not (ws.path / "vendor" / "key.pem").exists()


def test_gitattributes_filters_hooks_and_planted_user_config_are_inert(origin, tmp_path, monkeypatch):
    marker = tmp_path / "ran"
    command = f"touch {marker}; cat"
    planted = (
        f'[filter "evil"]\n\tclean = "{command}"\n\tsmudge = "{command}"\n\trequired = true\n'
        f'[diff "evil"]\n\ttextconv = "{command}"\n\tcommand = "{command}"\n'
        f'[core]\n\tfsmonitor = "{command}"\n\tpager = "{command}"\n'
    )
    # The repository asks for the driver and carries a config file of its own (git never reads it).
    commit_entries(
        origin,
        {
            ".gitattributes": (FILE, "* filter=evil diff=evil\n"),
            ".gitconfig": (FILE, planted),
            "environments/prod/app/kustomization.yaml": (FILE, "newTag: '2.0.0'\n"),
        },
        "attributes",
    )
    # The worker's own HOME, XDG and system-wide settings are planted too: none is read.
    home = tmp_path / "home"
    (home / ".config" / "git").mkdir(parents=True)
    (home / ".gitconfig").write_text(planted)
    (home / ".config" / "git" / "config").write_text(planted)
    (home / ".config" / "git" / "attributes").write_text("* filter=evil diff=evil\n")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / ".config"))
    monkeypatch.setenv("GIT_CONFIG_PARAMETERS", f"'core.fsmonitor'='{command}'")

    ws = clone(origin, tmp_path)
    hooks = ws.path / ".git" / "hooks"
    hooks.mkdir(exist_ok=True)
    for hook in ("post-checkout", "pre-commit", "post-commit", "pre-push", "reference-transaction"):
        (hooks / hook).write_text(f"#!/bin/sh\ntouch {marker}\n")
        (hooks / hook).chmod(0o755)
    ws.create_branch("second", ws.head())
    ws.write_file("environments/prod/app/kustomization.yaml", "newTag: '2.1.0'\n")
    first = ws.commit("bump", author_name="A", author_email="a@example.com")
    ws.push("promote/app/prod")
    mirror = mirror_of(origin, tmp_path)
    mirror.diff("main", "refs/heads/promote/app/prod")
    mirror.file_at("promote/app/prod", "environments/prod/app/kustomization.yaml")

    assert first is not None
    assert not marker.exists(), "a filter, diff driver, fsmonitor or hook from planted config ran"


def test_files_over_the_size_cap_are_refused(origin, tmp_path):
    cap = 64 * 1024
    big = "x" * (cap + 1) + "\n"
    commit_entries(origin, {"environments/prod/app/huge.yaml": (FILE, big)}, "huge")
    ws = clone(origin, tmp_path, max_file_bytes=cap)
    mirror = mirror_of(origin, tmp_path, max_file_bytes=cap)

    with pytest.raises(UnsafeRepositoryContent, match="over the portal's limit"):
        ws.read_file("environments/prod/app/huge.yaml")
    with pytest.raises(UnsafeRepositoryContent, match="over the portal's limit"):
        mirror.file_at("main", "environments/prod/app/huge.yaml")
    with pytest.raises(UnsafeRepositoryContent, match="over the limit"):
        ws.write_file("environments/prod/app/new.yaml", big)
    # Within the cap everything reads as before.
    assert mirror.file_at("main", "environments/prod/app/kustomization.yaml") == b"newTag: '1.0.0'\n"
    assert ws.read_file("environments/prod/app/kustomization.yaml") == b"newTag: '1.0.0'\n"


def test_file_protocol_is_refused_unless_the_sandbox_allows_it(origin, tmp_path):
    with pytest.raises(GitError):
        GitMirror(tmp_path / "m.git", str(origin))
    with pytest.raises(GitError):
        GitWorkspace.clone(str(origin), tmp_path / "w", branch="main")
    with pytest.raises(GitError):
        GitWorkspace.clone(f"file://{origin}", tmp_path / "w2", branch="main")
