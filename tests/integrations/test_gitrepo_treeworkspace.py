"""TreeWorkspace: file edits committed on a bare mirror, without a clone, as a clone would commit them."""

from __future__ import annotations

import os
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import pytest

from integrations.gitrepo import GitError, GitMirror, GitWorkspace, TreeWorkspace, UnsafeRepositoryContent
from integrations.gitrepo.treeworkspace import cleanup_whitespace

ENV = {
    **os.environ,
    "GIT_CONFIG_GLOBAL": os.devnull,
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_AUTHOR_NAME": "Dev One",
    "GIT_AUTHOR_EMAIL": "dev1@example.com",
    "GIT_COMMITTER_NAME": "Dev One",
    "GIT_COMMITTER_EMAIL": "dev1@example.com",
}
WHEN = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
MESSAGE = (
    "Promote checkout 1.0.0 -> 1.1.0 to prod\n\nPromote from stage to prod.\n- checkout: 1.0.0 -> 1.1.0  \n"
)
TRAILERS = {"Promotion-Id": "7", "Requested-By": "rita <rita@example.com>"}


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=cwd, env=ENV, check=True, capture_output=True, text=True).stdout


@pytest.fixture
def origin(tmp_path: Path) -> Path:
    """A bare origin whose main holds an overlay, an executable script and a symlinked directory."""
    bare = tmp_path / "origin.git"
    work = tmp_path / "seed"
    git(tmp_path, "init", "-q", "--bare", "-b", "main", str(bare))
    git(tmp_path, "clone", "-q", str(bare), str(work))
    git(work, "checkout", "-q", "-b", "main")
    overlay = work / "environments" / "prod" / "checkout"
    overlay.mkdir(parents=True)
    (overlay / "kustomization.yaml").write_text("images:\n  - name: checkout\n    newTag: '1.0.0'\n")
    (work / "tools").mkdir()
    (work / "tools" / "check.sh").write_text("#!/bin/sh\necho v1\n")
    (work / "tools" / "check.sh").chmod(0o755)
    os.symlink("environments", work / "linked")
    git(work, "add", "--all")
    git(work, "commit", "-q", "-m", "init")
    git(work, "push", "-q", "origin", "main")
    return bare


def _mirror(origin: Path, tmp_path: Path) -> GitMirror:
    mirror = GitMirror(tmp_path / "mirror.git", f"file://{origin}", allow_file=True)
    mirror.ensure()
    return mirror


def _edit(ws: GitWorkspace | TreeWorkspace) -> str | None:
    ws.pin_date(WHEN)
    text = (ws.read_file("environments/prod/checkout/kustomization.yaml") or b"").decode()
    ws.write_file("environments/prod/checkout/kustomization.yaml", text.replace("1.0.0", "1.1.0"))
    ws.write_file("environments/prod/checkout/NOTES.md", "new file\n")
    ws.write_file("tools/check.sh", "#!/bin/sh\necho v2\n")
    return ws.commit(MESSAGE, author_name="Rita", author_email="rita@example.com", trailers=TRAILERS)


def test_a_tree_edit_makes_the_commit_a_clone_makes(origin: Path, tmp_path: Path) -> None:
    mirror = _mirror(origin, tmp_path)
    base = mirror.branch_head("main")
    assert base
    clone = GitWorkspace.clone(f"file://{origin}", tmp_path / "clone", branch="main", allow_file=True)
    tree = TreeWorkspace(
        mirror, base, committer_name="GitOps Portal", committer_email="gitops-portal@localhost"
    )

    sha = _edit(tree)

    assert sha is not None and sha == _edit(clone)  # same tree, modes, message, identity and date
    assert tree.head() == sha
    assert git(origin, "cat-file", "-t", base).strip() == "commit"
    # The executable bit stays; the new file is a regular one.
    listing = mirror._git.run("ls-tree", "-r", sha)[1]
    assert "100755 blob" in next(line for line in listing.splitlines() if line.endswith("tools/check.sh"))
    assert "100644 blob" in next(line for line in listing.splitlines() if line.endswith("NOTES.md"))


def test_a_tree_edit_pushes_only_its_commit_to_the_branch(origin: Path, tmp_path: Path) -> None:
    mirror = _mirror(origin, tmp_path)
    base = mirror.branch_head("main") or ""
    tree = TreeWorkspace(mirror, base, committer_name="GitOps Portal", committer_email="p@localhost")
    sha = _edit(tree)
    assert sha is not None

    tree.push("promote/checkout/stage-to-prod/7-0a1b2c3d")

    assert git(origin, "rev-parse", "refs/heads/promote/checkout/stage-to-prod/7-0a1b2c3d").strip() == sha
    assert git(origin, "rev-parse", f"{sha}^").strip() == base
    assert git(origin, "show", f"{sha}:environments/prod/checkout/kustomization.yaml").count("1.1.0") == 1
    assert git(origin, "rev-parse", "refs/heads/main").strip() == base  # the base is untouched


def test_reads_see_the_edits_and_an_unchanged_tree_commits_nothing(origin: Path, tmp_path: Path) -> None:
    mirror = _mirror(origin, tmp_path)
    tree = TreeWorkspace(mirror, mirror.branch_head("main") or "", committer_name="P", committer_email="p@x")
    path = "environments/prod/checkout/kustomization.yaml"
    before = tree.read_file(path)
    assert before is not None and tree.read_file("environments/prod/missing.yaml") is None
    assert tree.read_file("environments/prod") is None  # a directory

    tree.write_file(path, b"edited\n")
    assert tree.read_file(path) == b"edited\n"
    tree.write_file(path, before)  # back to the original content

    assert tree.commit("nothing really", author_name="R", author_email="r@x") is None
    with pytest.raises(GitError):
        tree.push("promote/nothing")


def test_paths_through_links_or_over_the_cap_are_refused(origin: Path, tmp_path: Path) -> None:
    mirror = _mirror(origin, tmp_path)
    tree = TreeWorkspace(mirror, mirror.branch_head("main") or "", committer_name="P", committer_email="p@x")
    with pytest.raises(UnsafeRepositoryContent):
        tree.read_file("linked/prod/checkout/kustomization.yaml")
    with pytest.raises(UnsafeRepositoryContent):
        tree.write_file("linked/prod/checkout/kustomization.yaml", "x\n")
    with pytest.raises(UnsafeRepositoryContent):
        tree.write_file("environments", "a directory\n")
    with pytest.raises(UnsafeRepositoryContent):
        tree.write_file("big.yaml", b"x" * (mirror.max_file_bytes + 1))
    with pytest.raises(UnsafeRepositoryContent):
        tree.write_file("environments/prod/checkout/kustomization.yaml/inside", "a file is no directory\n")


def test_the_message_gets_gits_whitespace_cleanup() -> None:
    assert cleanup_whitespace("\n\nTitle  \n\n\n\nbody\t\n\n") == "Title\n\nbody\n"
    assert cleanup_whitespace("") == ""
