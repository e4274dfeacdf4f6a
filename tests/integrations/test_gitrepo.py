"""gitrepo on real temporary git repositories."""

from __future__ import annotations

import os
import subprocess
from datetime import datetime
from pathlib import Path

import pytest

from integrations.gitrepo import (
    CommitRecord,
    GitError,
    GitMirror,
    GitWorkspace,
    InvalidRef,
    RevertConflict,
    UnsafeRemote,
    check_remote_url,
    parse_log_entries,
    parse_log_stream,
    validate_ref_name,
    validate_repo_path,
    validate_sha,
)
from integrations.gitrepo.command import _base_env

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


def commit_file(work: Path, path: str, content: str, message: str) -> str:
    target = work / path
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(content)
    git(work, "add", "--", path)
    git(work, "commit", "-q", "-m", message)
    return git(work, "rev-parse", "HEAD").strip()


@pytest.fixture
def origin(tmp_path: Path) -> dict[str, object]:
    """A bare origin with: base commit, a direct commit, a merged feature branch, a rename."""
    bare = tmp_path / "origin.git"
    work = tmp_path / "seed"
    git(tmp_path, "init", "-q", "--bare", "-b", "main", str(bare))
    git(tmp_path, "clone", "-q", str(bare), str(work))
    git(work, "checkout", "-q", "-b", "main")
    c1 = commit_file(work, "environments/dev/checkout/kustomization.yaml", "newTag: '1.0.0'\n", "init dev")
    c2 = commit_file(work, "environments/prod/checkout/kustomization.yaml", "newTag: '1.0.0'\n", "init prod")
    git(work, "checkout", "-q", "-b", "promote/checkout-prod")
    c3 = commit_file(
        work, "environments/prod/checkout/kustomization.yaml", "newTag: '1.1.0'\n", "promote checkout to prod"
    )
    git(work, "checkout", "-q", "main")
    c4 = commit_file(
        work,
        "environments/dev/checkout/kustomization.yaml",
        "newTag: '1.2.0'\n",
        "bump dev\n\nlong body\nline two",
    )
    git(
        work,
        "merge",
        "-q",
        "--no-ff",
        "promote/checkout-prod",
        "-m",
        "Merge pull request #7 from acme/promote/checkout-prod",
    )
    merge = git(work, "rev-parse", "HEAD").strip()
    git(
        work,
        "mv",
        "environments/dev/checkout/kustomization.yaml",
        "environments/dev/checkout/kustomization.yml",
    )
    git(work, "commit", "-q", "-m", "rename")
    rename = git(work, "rev-parse", "HEAD").strip()
    git(work, "push", "-q", "origin", "main")
    return {
        "bare": bare,
        "work": work,
        "c1": c1,
        "c2": c2,
        "c3": c3,
        "c4": c4,
        "merge": merge,
        "rename": rename,
    }


@pytest.fixture
def mirror(tmp_path: Path, origin: dict[str, object]) -> GitMirror:
    m = GitMirror(tmp_path / "mirror.git", str(origin["bare"]), allow_file=True)
    assert m.ensure() is True
    assert m.ensure() is False
    return m


# -- validators -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        "-uX",
        "--upload-pack=x",
        "a..b",
        "main@{1}",
        "a b",
        "x:y",
        "a/",
        "/a",
        "x.lock",
        ".hidden",
        "a\x01",
        "",
        "@",
        "a*",
        "a\\b",
        "a~1",
        "a^",
    ],
)
def test_validate_ref_name_refuses(value: str) -> None:
    with pytest.raises(InvalidRef):
        validate_ref_name(value)


@pytest.mark.parametrize(
    "value", ["main", "promote/checkout/prod-eu-west-1", "release-1.4", "refs/heads/main", "feature_x"]
)
def test_validate_ref_name_accepts(value: str) -> None:
    assert validate_ref_name(value) == value


def test_validate_ref_name_agrees_with_git_on_samples() -> None:
    for name in ["main", "a..b", "-x", "a/.b", "x.lock", "ok/name", "a@{b", "a//b"]:
        ours = True
        try:
            validate_ref_name(name)
        except InvalidRef:
            ours = False
        theirs = (
            subprocess.run(["git", "check-ref-format", "--branch", name], capture_output=True).returncode == 0
        )
        assert ours == theirs, name


@pytest.mark.parametrize("value", ["-uX", "--upload-pack=x", "abc", "g" * 40, "a" * 41, "../x", "HEAD"])
def test_validate_sha_refuses(value: str) -> None:
    with pytest.raises(InvalidRef):
        validate_sha(value)


def test_validate_sha_accepts_and_normalises() -> None:
    assert validate_sha("ABCDEF1") == "abcdef1"
    assert validate_sha("a" * 64) == "a" * 64
    with pytest.raises(InvalidRef):
        validate_sha("abcdef1", full=True)


@pytest.mark.parametrize("value", ["../x", "a/../../x", "/etc/passwd", "-rf", "a/.git/config", "", "a\x00b"])
def test_validate_repo_path_refuses(value: str) -> None:
    with pytest.raises(InvalidRef):
        validate_repo_path(value)


@pytest.mark.parametrize(
    "url",
    [
        "ext::sh -c x",
        "fd::0",
        "-uX",
        "--upload-pack=x",
        "file:///tmp/x",
        "/tmp/repo.git",
        "http://forge.example/acme/repo.git",
        "https://169.254.169.254/x.git",
        "https://user:token@forge.example/acme/repo.git",
        "git@github.com:acme/repo.git",
        "ssh://git@github.com/acme/repo.git",
    ],
)
def test_check_remote_url_refuses(url: str) -> None:
    with pytest.raises(UnsafeRemote):
        check_remote_url(url)


def test_check_remote_url_allows_sandbox_forms_only_when_asked() -> None:
    assert check_remote_url("https://github.com/acme/gitops.git")
    assert check_remote_url("file:///tmp/x", allow_file=True)
    assert check_remote_url("http://127.0.0.1:8080/acme/gitops.git", allow_http=True)
    with pytest.raises(UnsafeRemote):
        check_remote_url("ext::sh -c x", allow_file=True, allow_http=True)


def test_token_only_in_environment_scoped_to_origin() -> None:
    env = _base_env(
        "https://forge.example:8443/acme/gitops.git", "tok-123", allow_file=False, allow_http=False
    )

    keys = {
        env[f"GIT_CONFIG_KEY_{i}"]: env[f"GIT_CONFIG_VALUE_{i}"] for i in range(int(env["GIT_CONFIG_COUNT"]))
    }
    header = keys["http.https://forge.example:8443/.extraHeader"]
    assert header == "Authorization: Basic eC1hY2Nlc3MtdG9rZW46dG9rLTEyMw=="  # x-access-token:tok-123
    assert env["GIT_TERMINAL_PROMPT"] == "0"
    assert env["GIT_ALLOW_PROTOCOL"] == "https"


def test_repr_hides_token(tmp_path: Path) -> None:
    m = GitMirror(tmp_path / "m.git", "https://forge.example/acme/gitops.git", token="tok-secret")

    assert "tok-secret" not in repr(m) and "tok-secret" not in repr(vars(m))


# -- mirror ---------------------------------------------------------------------------------------


def test_iter_commits_parses_history_with_merges(mirror: GitMirror, origin: dict[str, object]) -> None:
    commits = list(mirror.iter_commits())

    assert [c.sha for c in commits][-2:] == [origin["merge"], origin["rename"]]
    by_sha = {c.sha: c for c in commits}
    assert set(by_sha) == {origin[k] for k in ("c1", "c2", "c3", "c4", "merge", "rename")}
    merge = by_sha[str(origin["merge"])]
    assert merge.is_merge and merge.parents == (origin["c4"], origin["c3"])
    # Changes of a merge are relative to its first parent: what the merge brought into main.
    assert [(c.status, c.path) for c in merge.changes] == [
        ("M", "environments/prod/checkout/kustomization.yaml")
    ]
    c4 = by_sha[str(origin["c4"])]
    assert c4.message == "bump dev\n\nlong body\nline two" and c4.subject == "bump dev"
    assert c4.author_email == "dev1@example.com" and isinstance(c4.authored_at, datetime)
    assert c4.authored_at.tzinfo is not None
    rename = by_sha[str(origin["rename"])]
    assert sorted((c.status, c.path) for c in rename.changes) == [
        ("A", "environments/dev/checkout/kustomization.yml"),
        ("D", "environments/dev/checkout/kustomization.yaml"),
    ]
    root = by_sha[str(origin["c1"])]
    assert root.parents == () and root.changes[0].status == "A"


def test_iter_commits_since_and_known(mirror: GitMirror, origin: dict[str, object]) -> None:
    newer = [c.sha for c in mirror.iter_commits(since_sha=str(origin["c4"]))]
    assert newer == [origin["c3"], origin["merge"], origin["rename"]]

    unknown = [
        c.sha for c in mirror.iter_commits(known_shas=[str(origin["c2"]), str(origin["c3"])], reverse=False)
    ]
    assert unknown == [origin["rename"], origin["merge"], origin["c4"]]


def test_iter_commits_refuses_option_like_ref(mirror: GitMirror) -> None:
    with pytest.raises(InvalidRef):
        mirror.iter_commits(ref="--output=/tmp/x")


def test_fetch_picks_up_new_commits(mirror: GitMirror, origin: dict[str, object]) -> None:
    work = Path(str(origin["work"]))
    new = commit_file(work, "README.md", "hi\n", "docs")
    git(work, "push", "-q", "origin", "main")

    mirror.fetch()

    assert mirror.branch_head("main") == new
    assert [c.sha for c in mirror.iter_commits(since_sha=str(origin["rename"]))] == [new]


def test_remote_heads_reads_the_branches_without_fetching(
    mirror: GitMirror, origin: dict[str, object]
) -> None:
    work = Path(str(origin["work"]))
    before = mirror.branch_head("main")
    assert mirror.remote_heads()["main"] == before
    new = commit_file(work, "NOTES.md", "hi\n", "notes")
    git(work, "push", "-q", "origin", "main")

    heads = mirror.remote_heads()

    assert heads["main"] == new
    assert all(ref and "/" not in sha for ref, sha in heads.items())
    assert mirror.branch_head("main") == before  # nothing was fetched


def test_ancestry_files_diffs(mirror: GitMirror, origin: dict[str, object]) -> None:
    c2, c3, merge = str(origin["c2"]), str(origin["c3"]), str(origin["merge"])

    assert mirror.is_ancestor(c3, "main") is True
    assert mirror.is_ancestor(merge, c2) is False
    assert mirror.rev_parse("main") == origin["rename"]
    assert mirror.rev_parse(c2[:10]) == c2
    with pytest.raises(InvalidRef):
        mirror.rev_parse("0" * 40)
    assert mirror.branch_head("nope") is None
    assert mirror.file_at(merge, "environments/prod/checkout/kustomization.yaml") == b"newTag: '1.1.0'\n"
    assert mirror.file_at(c2, "missing.yaml") is None
    diff = mirror.diff(c2, merge, ["environments/prod"])
    assert "-newTag: '1.0.0'" in diff and "+newTag: '1.1.0'" in diff and "environments/dev" not in diff
    assert mirror.commits_between(c2, "main", ["environments/prod"]) == [c3]
    assert mirror.commits_between(c2, "main", ["environments/prod"], first_parent=True) == [merge]
    assert len(mirror.commits_between(c2, "main")) == 4
    with pytest.raises(InvalidRef):
        mirror.diff(c2, merge, ["../etc"])


def test_list_files_under_a_path_at_a_revision(mirror: GitMirror, origin: dict[str, object]) -> None:
    c1, merge, rename = str(origin["c1"]), str(origin["merge"]), str(origin["rename"])

    assert mirror.list_files(c1, "environments") == ["environments/dev/checkout/kustomization.yaml"]
    assert mirror.list_files(merge, "environments/") == [
        "environments/dev/checkout/kustomization.yaml",
        "environments/prod/checkout/kustomization.yaml",
    ]
    assert mirror.list_files("main", "environments/dev/checkout") == [
        "environments/dev/checkout/kustomization.yml"
    ]
    assert mirror.list_files(rename, "environments/prod/checkout/kustomization.yaml") == [
        "environments/prod/checkout/kustomization.yaml"
    ]
    assert mirror.list_files(c1, "environments/prod") == []
    # A prefix of a directory name is not the directory.
    assert mirror.list_files(merge, "environments/pro") == []
    for bad in ("../etc", "-x", "/abs"):
        with pytest.raises(InvalidRef):
            mirror.list_files("main", bad)
    with pytest.raises(InvalidRef):
        mirror.list_files("--all", "environments")


def test_diff_paths_compares_two_directories_at_two_revisions(
    mirror: GitMirror, origin: dict[str, object]
) -> None:
    c2, merge = str(origin["c2"]), str(origin["merge"])

    # dev (1.2.0 at the merge) against prod (1.1.0): file by file, named by full path.
    diff = mirror.diff_paths(merge, "environments/prod/checkout", merge, "environments/dev/checkout")
    assert "--- environments/prod/checkout/kustomization.yaml" in diff
    assert "+++ environments/dev/checkout/kustomization.yaml" in diff
    assert "-newTag: '1.1.0'" in diff and "+newTag: '1.2.0'" in diff
    # Same path, two revisions.
    over_time = mirror.diff_paths(c2, "environments/prod/checkout", merge, "environments/prod/checkout")
    assert "-newTag: '1.0.0'" in over_time and "+newTag: '1.1.0'" in over_time
    assert mirror.diff_paths(merge, "environments/prod/checkout", merge, "environments/prod/checkout") == ""
    # A directory missing on one side diffs as all-new files.
    created = mirror.diff_paths(
        str(origin["c1"]), "environments/prod/checkout", c2, "environments/prod/checkout"
    )
    assert "+newTag: '1.0.0'" in created and "new file mode" in created
    with pytest.raises(InvalidRef):
        mirror.diff_paths(merge, "../x", merge, "environments")
    with pytest.raises(InvalidRef, match="not a directory"):
        mirror.diff_paths(merge, "environments/prod/checkout/kustomization.yaml", merge, "environments")


def test_parse_log_stream_handles_chunk_boundaries() -> None:
    record = (
        b"\x1e" + b"a" * 40 + b"\x00" + b"\x00Ann\x00ann@x\x002024-01-01T00:00:00+00:00\x00Cid\x00c@x\x00"
        b"2024-01-01T00:00:01+00:00\x00msg\n\x00\nM\x00path with spaces/f.yaml\x00R100\x00old\x00new\x00"
    )
    chunks = [record[i : i + 7] for i in range(0, len(record), 7)]

    (commit,) = list(parse_log_stream(chunks))

    assert isinstance(commit, CommitRecord)
    assert commit.message == "msg"
    assert [(c.status, c.path, c.old_path) for c in commit.changes] == [
        ("M", "path with spaces/f.yaml", None),
        ("R", "new", "old"),
    ]


def test_parse_log_stream_splits_commits_once_whatever_their_messages_hold() -> None:
    def record(sha: str, message: bytes, tail: bytes = b"\nM\x00f.yaml\x00") -> bytes:
        return (
            b"\x1e" + sha.encode() * 40 + b"\x00\x00A\x00a@x\x002024-01-01T00:00:00+00:00\x00C\x00c@x\x00"
            b"2024-01-01T00:00:01+00:00\x00" + message + b"\x00" + tail
        )

    stream = (
        record("a", b"starts with the separator\n")
        + record("b", b"\x1eodd message \xff\n", tail=b"")  # no changes, invalid UTF-8
        + record("c", b"last\n", tail=b"\nA\x00x\x00D\x00y\x00")
    )
    for size in (1, 3, 64, len(stream)):
        chunks = [stream[i : i + size] for i in range(0, len(stream), size)]
        commits = list(parse_log_stream(chunks))
        assert [c.sha[0] for c in commits] == ["a", "b", "c"]
        assert commits[1].message == "\x1eodd message \ufffd" and commits[1].changes == ()
        assert [(c.status, c.path) for c in commits[2].changes] == [("A", "x"), ("D", "y")]


@pytest.mark.parametrize(
    "tail",
    [
        b"\nM\x00f.yaml\x00",
        b"",
        b"\nA\x00x\x00D\x00y\x00T\x00t\x00",
        b"\nR100\x00old\x00new\x00M\x00m\x00C75\x00src\x00copy\x00",  # renames and copies: two paths
        b"\nM\x00a\x00\x00M\x00b\x00",  # an empty token between pairs
        b"\nM\x00only-status-no-path",
    ],
)
def test_parse_log_entries_gives_the_paths_of_parse_log_stream(tail: bytes) -> None:
    stream = (
        b"\x1e"
        + b"a" * 40
        + b"\x00"
        + b"b" * 40
        + b" "
        + b"c" * 40
        + b"\x00An\x00a@x\x002024-01-01T00:00:00+00:00"
        b"\x00Cn\x00c@x\x002024-01-01T00:00:01+02:00\x00msg\n\n\x1ebody\n\x00" + tail
    )
    for size in (1, 5, len(stream)):
        chunks = [stream[i : i + size] for i in range(0, len(stream), size)]
        (record,) = list(parse_log_stream(chunks))
        (entry,) = list(parse_log_entries(chunks))

        changes = record.changes
        assert entry.paths == [c.path for c in changes] + [c.old_path for c in changes if c.old_path]
        assert (entry.sha, entry.parents.split(), entry.message.rstrip("\n")) == (
            record.sha, list(record.parents), record.message,
        )  # fmt: skip
        assert (entry.author_name, entry.committer_email, entry.committed_at) == (
            "An", "c@x", record.committed_at.isoformat(),
        )  # fmt: skip


def test_parse_log_entries_refuses_what_parse_log_stream_refuses() -> None:
    stream = b"\x1e" + b"a" * 40 + b"\x00\x00A\x00a@x\x00d\x00C\x00c@x\x00d\x00m\x00\nZ\x00x\x00"
    with pytest.raises(GitError, match="unexpected name-status token"):
        list(parse_log_entries([stream]))


# -- workspace ------------------------------------------------------------------------------------


@pytest.fixture
def workspace(tmp_path: Path, origin: dict[str, object]) -> GitWorkspace:
    return GitWorkspace.clone(str(origin["bare"]), tmp_path / "ws", branch="main", allow_file=True)


def test_commit_with_trailers_and_noop(workspace: GitWorkspace, origin: dict[str, object]) -> None:
    workspace.create_branch("promote/checkout/prod", "main")
    workspace.write_file("environments/prod/checkout/kustomization.yaml", "newTag: '1.2.0'\n")

    sha = workspace.commit(
        "Promote checkout 1.2.0 to prod",
        author_name="Alice",
        author_email="alice@example.com",
        trailers={"Portal-Promotion": "42", "Portal-Request-Id": "abc"},
    )

    assert sha is not None
    log = git(workspace.path, "log", "-1", "--format=%an <%ae>|%cn|%B")
    assert log.startswith(
        "Alice <alice@example.com>|GitOps Portal|Promote checkout 1.2.0 to prod\n\nPortal-Promotion: 42\nPortal-Request-Id: abc"
    )
    assert workspace.commit("again", author_name="A", author_email="a@x") is None


def test_write_file_refuses_escapes(workspace: GitWorkspace) -> None:
    with pytest.raises(InvalidRef):
        workspace.write_file("../outside.txt", "x")
    os.symlink("/tmp", workspace.path / "link")
    with pytest.raises(InvalidRef):
        workspace.write_file("link/evil.txt", "x")


def test_push_and_remote_branch_sha(workspace: GitWorkspace, origin: dict[str, object]) -> None:
    workspace.create_branch("promote/x", "main")
    workspace.write_file("a.txt", "a\n")
    sha = workspace.commit("a", author_name="A", author_email="a@x")

    assert workspace.remote_branch_sha("promote/x") is None
    workspace.push("promote/x")
    assert workspace.remote_branch_sha("promote/x") == sha

    workspace.write_file("a.txt", "b\n")
    workspace.commit("b", author_name="A", author_email="a@x")
    with pytest.raises(GitError):
        workspace.push("promote/x", force_with_lease=True, expected_sha="0" * 40)
    workspace.push("promote/x", force_with_lease=True, expected_sha=sha)
    assert workspace.remote_branch_sha("promote/x") == workspace.head()


def test_revert_normal_and_merge_commit(workspace: GitWorkspace, origin: dict[str, object]) -> None:
    start = workspace.head()

    created = workspace.revert([str(origin["merge"])], trailers={"Portal-Rollback": "7"})

    assert len(created) == 1 and workspace.head() == created[0]
    assert (
        workspace.path / "environments/prod/checkout/kustomization.yaml"
    ).read_text() == "newTag: '1.0.0'\n"
    message = git(workspace.path, "log", "-1", "--format=%B")
    assert message.startswith('Revert "Merge pull request #7') and "Portal-Rollback: 7" in message
    assert git(workspace.path, "rev-parse", "HEAD~1").strip() == start

    again = workspace.revert([str(origin["c2"])])
    assert not (workspace.path / "environments/prod/checkout/kustomization.yaml").exists()
    assert len(again) == 1


def test_revert_conflict_leaves_nothing_half_done(workspace: GitWorkspace, origin: dict[str, object]) -> None:
    # The rename revert applies, then c3's revert conflicts with the local edit of the prod file:
    # the whole batch (including the applied rename revert) must be undone.
    workspace.write_file("environments/prod/checkout/kustomization.yaml", "newTag: '9.9.9'\n")
    base = workspace.commit("local change", author_name="A", author_email="a@x")

    with pytest.raises(RevertConflict) as info:
        workspace.revert([str(origin["rename"]), str(origin["c3"])])

    assert info.value.files == ("environments/prod/checkout/kustomization.yaml",)
    assert info.value.sha == origin["c3"]
    assert workspace.head() == base
    assert git(workspace.path, "status", "--porcelain") == ""
    assert not (workspace.path / ".git" / "REVERT_HEAD").exists()
    assert not (workspace.path / ".git" / "sequencer").exists()


def test_revert_paths_reverts_only_the_given_paths(
    workspace: GitWorkspace, origin: dict[str, object]
) -> None:
    # One commit changing dev and prod: reverting it for prod leaves dev's change in place.
    workspace.write_file("environments/dev/checkout/kustomization.yml", "newTag: '2.0.0'\n")
    workspace.write_file("environments/prod/checkout/kustomization.yaml", "newTag: '2.0.0'\n")
    train = workspace.commit("train", author_name="A", author_email="a@x")
    assert train is not None

    created = workspace.revert_paths(
        [train], paths=["environments/prod/checkout"], trailers={"Rollback-Id": "3"}
    )

    assert len(created) == 1
    assert (
        workspace.path / "environments/prod/checkout/kustomization.yaml"
    ).read_text() == "newTag: '1.1.0'\n"
    assert (workspace.path / "environments/dev/checkout/kustomization.yml").read_text() == "newTag: '2.0.0'\n"
    assert git(workspace.path, "diff", "--name-only", train, "HEAD").split() == [
        "environments/prod/checkout/kustomization.yaml"
    ]
    message = git(workspace.path, "log", "-1", "--format=%B")
    assert message.startswith('Revert "train"') and "Rollback-Id: 3" in message


def test_revert_paths_of_a_commit_outside_the_paths_is_an_error(
    workspace: GitWorkspace, origin: dict[str, object]
) -> None:
    start = workspace.head()

    with pytest.raises(GitError, match="no change"):
        workspace.revert_paths([str(origin["c4"])], paths=["environments/prod/checkout"])
    with pytest.raises(InvalidRef):
        workspace.revert_paths([str(origin["c3"])], paths=[".git/hooks"])

    assert workspace.head() == start
    assert git(workspace.path, "status", "--porcelain") == ""


def test_revert_paths_conflict_leaves_nothing_half_done(
    workspace: GitWorkspace, origin: dict[str, object]
) -> None:
    workspace.write_file("environments/prod/checkout/kustomization.yaml", "newTag: '9.9.9'\n")
    base = workspace.commit("local change", author_name="A", author_email="a@x")

    with pytest.raises(RevertConflict) as info:
        workspace.revert_paths([str(origin["merge"])], paths=["environments/prod/checkout"])

    assert info.value.files == ("environments/prod/checkout/kustomization.yaml",)
    assert workspace.head() == base
    assert git(workspace.path, "status", "--porcelain") == ""


def test_revert_of_merge_without_mainline_is_refused(
    workspace: GitWorkspace, origin: dict[str, object]
) -> None:
    start = workspace.head()

    with pytest.raises(GitError, match="merge commit"):
        workspace.revert([str(origin["merge"])], mainline_for_merges=False)

    assert workspace.head() == start


def test_revert_refuses_option_like_sha(workspace: GitWorkspace) -> None:
    with pytest.raises(InvalidRef):
        workspace.revert(["--upload-pack=x"])


def test_clone_refuses_unsafe_remote_and_branch(tmp_path: Path, origin: dict[str, object]) -> None:
    with pytest.raises(UnsafeRemote):
        GitWorkspace.clone("ext::sh -c touch% /tmp/pwned", tmp_path / "x", branch="main")
    with pytest.raises(UnsafeRemote):
        GitWorkspace.clone(str(origin["bare"]), tmp_path / "y", branch="main")  # file not allowed
    with pytest.raises(InvalidRef):
        GitWorkspace.clone(str(origin["bare"]), tmp_path / "z", branch="-uX", allow_file=True)


def test_empty_revert_is_an_error_and_rolls_back_the_batch(
    workspace: GitWorkspace, origin: dict[str, object]
) -> None:
    start = workspace.head()

    with pytest.raises(GitError, match="no change"):
        workspace.revert([str(origin["c3"]), str(origin["c3"])])

    assert workspace.head() == start
    assert git(workspace.path, "status", "--porcelain") == ""


def test_ensure_repairs_config_and_follows_url_change(tmp_path: Path, origin: dict[str, object]) -> None:
    path = tmp_path / "m.git"
    GitMirror(path, str(origin["bare"]), allow_file=True).ensure()
    moved = tmp_path / "moved.git"
    Path(str(origin["bare"])).rename(moved)

    mirror = GitMirror(path, str(moved), allow_file=True)
    assert mirror.ensure() is False
    mirror.fetch()
    assert mirror.branch_head("main") == origin["rename"]


def test_files_at_reads_many_files_like_file_at_and_refuses_what_it_refuses(
    mirror: GitMirror, origin: dict[str, object], tmp_path: Path
) -> None:
    work = origin["work"]
    assert isinstance(work, Path)
    # A symlinked overlay file and a symlinked directory: file_at refuses both.
    (work / "environments/dev/linked").mkdir(parents=True)
    os.symlink("../checkout/kustomization.yml", work / "environments/dev/linked/kustomization.yaml")
    os.symlink("checkout", work / "environments/dev/dirlink")
    git(work, "add", "-A")
    git(work, "commit", "-q", "-m", "links")
    links = git(work, "rev-parse", "HEAD").strip()
    git(work, "push", "-q", "origin", "main")
    mirror.fetch()
    c1, c2, merge = str(origin["c1"]), str(origin["c2"]), str(origin["merge"])
    wanted = [
        (c1, "environments/dev/checkout/kustomization.yaml"),
        (c2, "environments/dev/checkout/kustomization.yaml"),  # the same blob at another revision
        (merge, "environments/prod/checkout/kustomization.yaml"),
        (c2, "missing.yaml"),
        (c2, "environments/prod"),  # a directory
        (links, "environments/dev/linked/kustomization.yaml"),
        (links, "environments/dev/dirlink/kustomization.yml"),
        ("0" * 40, "environments/dev/checkout/kustomization.yaml"),  # an unknown revision
        (c2, "../escape.yaml"),
    ]

    found = mirror.files_at(wanted)

    assert set(found) == set(wanted)
    assert found[wanted[0]] is not None and found[wanted[0]][1] == b"newTag: '1.0.0'\n"
    assert found[wanted[1]] == found[wanted[0]]  # same blob id, same content
    assert found[wanted[2]] is not None and found[wanted[2]][1] == b"newTag: '1.1.0'\n"
    assert all(found[pair] is None for pair in wanted[3:])
    for rev, path in wanted[:5]:
        got = found[(rev, path)]
        assert mirror.file_at(rev, path) == (got[1] if got else None)
    for rev, path in wanted[5:7]:
        with pytest.raises(GitError):
            mirror.file_at(rev, path)


@pytest.mark.parametrize(
    "line",
    [
        ":100644 100644 " + "a" * 40 + " " + "b" * 40 + " M",
        ":000000 100755 " + "0" * 40 + " " + "c" * 40 + " A",
        ":100644 000000 " + "d" * 40 + " " + "0" * 40 + " D",
        ":120000 100644 " + "e" * 40 + " " + "e" * 40 + " T",
        ":160000 160000 " + "f" * 64 + " " + "1" * 64 + " M",
    ],
)
def test_raw_sides_reads_both_sides_as_raw_side(line: str) -> None:
    from integrations.gitrepo import raw_side, raw_sides

    assert raw_sides(line) == (raw_side(line, False), raw_side(line, True))


def test_blobs_started_then_read_or_abandoned(tmp_path: Path) -> None:
    bare = tmp_path / "b.git"
    subprocess.run(["git", "init", "-q", "--bare", str(bare)], check=True)
    blob = (
        subprocess.run(
            ["git", "--git-dir", str(bare), "hash-object", "-w", "--stdin"],
            input=b"x: 1\n",
            capture_output=True,
            check=True,
        )
        .stdout.decode()
        .strip()
    )
    mirror = GitMirror(bare, "file:///nowhere", allow_file=True)
    missing = "1" * 40
    read = mirror.blobs_start([blob, missing])
    assert read() == {blob: b"x: 1\n", missing: None} == mirror.blobs([blob, missing])
    assert mirror.blobs_start([])() == {}
    mirror.blobs_start([blob]).abandon()
    # The names are checked all at once, or each as `validate_sha` does: normalized, or refused.
    assert mirror.blobs([blob.upper(), f" {missing}\n", blob]) == {blob: b"x: 1\n", missing: None}
    for bad in ("1" * 39, "g" * 40, f"{missing}\n{missing}", "1" * 41):
        with pytest.raises(InvalidRef):
            mirror.blobs_start([blob, bad])
