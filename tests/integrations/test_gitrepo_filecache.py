"""GitMirror.file_at keeps what it read at a full commit SHA (a commit's files never change)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from integrations.gitrepo import GitMirror
from integrations.gitrepo import mirror as mirror_module

ENV = {
    **os.environ,
    "GIT_CONFIG_GLOBAL": os.devnull,
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_AUTHOR_NAME": "Dev One",
    "GIT_AUTHOR_EMAIL": "dev1@example.com",
    "GIT_COMMITTER_NAME": "Dev One",
    "GIT_COMMITTER_EMAIL": "dev1@example.com",
}


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=cwd, env=ENV, check=True, capture_output=True, text=True).stdout


@pytest.fixture
def origin(tmp_path: Path) -> Path:
    bare = tmp_path / "origin.git"
    work = tmp_path / "seed"
    git(tmp_path, "init", "-q", "--bare", "-b", "main", str(bare))
    git(tmp_path, "clone", "-q", str(bare), str(work))
    git(work, "checkout", "-q", "-b", "main")
    overlay = work / "environments" / "prod" / "checkout"
    overlay.mkdir(parents=True)
    (overlay / "kustomization.yaml").write_text("images:\n  - name: checkout\n    newTag: '1.0.0'\n")
    git(work, "add", "--all")
    git(work, "commit", "-q", "-m", "init")
    git(work, "push", "-q", "origin", "main")
    return bare


def _mirror(origin: Path, tmp_path: Path) -> GitMirror:
    mirror = GitMirror(tmp_path / "mirror.git", f"file://{origin}", allow_file=True)
    mirror.ensure()
    return mirror


def test_file_reads_at_a_commit_are_kept_and_at_a_branch_are_not(
    origin: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    mirror = _mirror(origin, tmp_path)
    path = "environments/prod/checkout/kustomization.yaml"
    base = mirror.branch_head("main") or ""
    first = mirror.file_at(base, path)
    assert first is not None and mirror.file_at("main", path) == first

    work = tmp_path / "later"
    git(tmp_path, "clone", "-q", str(origin), str(work))
    (work / path).write_text("images: []\n")
    git(work, "commit", "-q", "-am", "later")
    git(work, "push", "-q", "origin", "main")
    mirror.fetch()

    assert mirror.file_at("main", path) == b"images: []\n"  # a branch is resolved every time

    def no_git(*args: object, **kwargs: object) -> object:
        raise AssertionError("read again")

    monkeypatch.setattr(mirror._git, "run_bytes", no_git)
    monkeypatch.setattr(mirror._git, "run", no_git)
    assert mirror.file_at(base, path) == first  # a commit's file is kept, across mirror objects too
    assert GitMirror(mirror.path, f"file://{origin}", allow_file=True).file_at(base, path) == first
    # A mirror with a smaller cap does not get the kept content: it reads (and refuses) itself.
    small = GitMirror(mirror.path, f"file://{origin}", allow_file=True, max_file_bytes=4)
    monkeypatch.setattr(small._git, "run", no_git)
    with pytest.raises(AssertionError, match="read again"):
        small.file_at(base, path)
    assert mirror_module._FILES.get((str(mirror.path), base, path)) == (first,)


def test_a_read_at_a_full_sha_runs_two_gits_and_refuses_unknown_or_non_commit_shas(
    origin: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from integrations.gitrepo import InvalidRef

    mirror = _mirror(origin, tmp_path)
    base = mirror.branch_head("main") or ""
    runs: list[str] = []
    real = mirror._git._exec_with

    def counted(args, *rest):  # type: ignore[no-untyped-def]
        runs.append(args[0])
        return real(args, *rest)

    monkeypatch.setattr(mirror._git, "_exec_with", counted)
    path = "environments/prod/checkout/kustomization.yaml"
    assert mirror.file_at(base, path) == b"images:\n  - name: checkout\n    newTag: '1.0.0'\n"
    assert runs == ["ls-tree", "cat-file"]  # no rev-parse of its own

    tree = git(origin, "rev-parse", f"{base}^{{tree}}").strip()
    with pytest.raises(InvalidRef):
        mirror.file_at(tree, path)  # a tree is no commit
    with pytest.raises(InvalidRef):
        mirror.file_at("0" * 40, path)
    assert mirror.file_at(base, "environments/prod/missing.yaml") is None
