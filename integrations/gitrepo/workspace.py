"""GitWorkspace: a shallow working clone to edit files, commit, revert and push a branch."""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from pathlib import Path

from integrations.gitrepo.command import DEFAULT_MAX_FILE_BYTES, _base_env, _Runner, _scrubber
from integrations.gitrepo.errors import GitError, InvalidRef, RevertConflict, UnsafeRepositoryContent
from integrations.gitrepo.paths import _MODE_GITLINK, _MODE_SYMLINK, _check_tree_path
from integrations.gitrepo.validate import (
    _TRAILER_KEY,
    check_remote_url,
    validate_ref_name,
    validate_repo_path,
    validate_rev,
    validate_sha,
)


class GitWorkspace:
    """A non-bare clone of one branch used to prepare promotion and revert commits."""

    def __init__(
        self,
        path: Path,
        remote_url: str,
        *,
        token: str | None,
        allow_file: bool,
        allow_http: bool,
        committer_name: str,
        committer_email: str,
        max_file_bytes: int = DEFAULT_MAX_FILE_BYTES,
    ) -> None:
        self.path = path
        self.remote_url = remote_url
        self.max_file_bytes = max_file_bytes
        self.committer = (committer_name, committer_email)
        # Author and committer date of the commits made here (None: now); see `pin_date`.
        self.commit_date: str | None = None
        self._env = _base_env(remote_url, token, allow_file=allow_file, allow_http=allow_http)
        self._scrubber = _scrubber(token)
        # Explicit so that a GIT_DIR in the worker's environment can never redirect us.
        self._git = _Runner(
            path, {**self._env, "GIT_DIR": str(path / ".git"), "GIT_WORK_TREE": str(path)}, self._scrubber
        )

    def __repr__(self) -> str:
        return f"GitWorkspace({str(self.path)!r})"

    @classmethod
    def clone(
        cls,
        remote_url: str,
        dest: str | os.PathLike[str],
        *,
        branch: str,
        token: str | None = None,
        allow_file: bool = False,
        allow_http: bool = False,
        committer_name: str = "GitOps Portal",
        committer_email: str = "gitops-portal@localhost",
        max_file_bytes: int = DEFAULT_MAX_FILE_BYTES,
        depth: int | None = None,
    ) -> GitWorkspace:
        """Clone one branch with full history (revert needs it), no tags and no submodules.

        `depth`: only that many commits (edits that need no history: faster on a long one).
        """
        url = check_remote_url(remote_url, allow_file=allow_file, allow_http=allow_http)
        target = Path(dest)
        target.parent.mkdir(parents=True, exist_ok=True)
        ws = cls(
            target,
            url,
            token=token,
            allow_file=allow_file,
            allow_http=allow_http,
            committer_name=committer_name,
            committer_email=committer_email,
            max_file_bytes=max_file_bytes,
        )
        runner = _Runner(target.parent, ws._env, ws._scrubber)
        runner.run(
            "clone",
            "--quiet",
            "--no-tags",
            "--no-recurse-submodules",
            "--single-branch",
            *([f"--depth={int(depth)}"] if depth else []),
            "--branch",
            validate_ref_name(branch),
            "--",
            url,
            str(target),
        )
        return ws

    def pin_date(self, when: datetime) -> None:
        """Date every later commit (author and committer) at `when`: the same edits on the same parent
        then make the same commit SHA, so a lost branch can be rebuilt exactly."""
        self.commit_date = f"{int(when.timestamp())} +0000"

    def _identity(self, name: str | None = None, email: str | None = None) -> dict[str, str]:
        return _identity_env(self.committer, self.commit_date, name, email)

    def fetch_commit(self, sha: str) -> bool:
        """Fetch one commit by SHA from origin (shallow); False when the server does not give it."""
        try:
            self._git.run("fetch", "--quiet", "--no-tags", "--depth=1", "origin", validate_sha(sha))
        except GitError:
            return False
        return self.has_commit(sha)

    def has_commit(self, rev: str) -> bool:
        """Tell whether `rev` names a commit of this clone."""
        code, _ = self._git.run(
            "cat-file", "-e", "--end-of-options", f"{validate_sha(rev)}^{{commit}}", ok_codes=(0, 1, 128)
        )
        return code == 0

    def head(self) -> str:
        """Return the SHA of HEAD."""
        return self._git.run("rev-parse", "--verify", "HEAD")[1].strip()

    def create_branch(self, name: str, start: str) -> None:
        """Create and check out branch `name` at `start`."""
        self._git.run("checkout", "--quiet", "-b", validate_ref_name(name), validate_rev(start), "--")

    def write_file(self, path: str, content: bytes | str) -> None:
        """Write a regular file inside the work tree (parents created).

        Raises UnsafeRepositoryContent for a path through a symlink, a submodule or `.git`, or
        content over `max_file_bytes`.
        """
        data = content.encode() if isinstance(content, str) else content
        if len(data) > self.max_file_bytes:
            raise UnsafeRepositoryContent(
                f"refusing to write {path!r}: {len(data)} bytes is over the limit of {self.max_file_bytes}"
            )
        target = self._checked(path)
        for parent in reversed(target.relative_to(self.path).parents[:-1]):
            directory = self.path / parent
            if not directory.exists():
                directory.mkdir()
            self._lstat_dir(directory, path)
        # O_NOFOLLOW: a symlink planted between the check and the open is refused, not followed.
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o644)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)

    def read_file(self, path: str) -> bytes | None:
        """Read a regular file from the work tree, or None if missing.

        Raises UnsafeRepositoryContent like `write_file`, and for a file over `max_file_bytes`.
        """
        target = self._checked(path)
        try:
            st = os.lstat(target)
        except FileNotFoundError:
            return None
        if not stat.S_ISREG(st.st_mode):
            return None
        if st.st_size > self.max_file_bytes:
            raise UnsafeRepositoryContent(
                f"refusing {path!r}: {st.st_size} bytes is over the portal's limit of {self.max_file_bytes} bytes"
            )
        fd = os.open(target, os.O_RDONLY | os.O_NOFOLLOW)
        with os.fdopen(fd, "rb") as handle:
            return handle.read(self.max_file_bytes + 1)

    def _checked(self, path: str) -> Path:
        """Return the work-tree path of a repository path that is safe to read or write.

        Checked twice: in HEAD's tree (with core.symlinks=false a committed symlink is a plain file
        on disk, but `git add` would still commit it as a link) and on disk, every component lstat'ed
        (nothing of ours creates links, so one there was planted).
        """
        safe = validate_repo_path(path)
        _check_tree_path(self._git, "HEAD", safe, max_bytes=self.max_file_bytes)
        target = self.path.joinpath(*safe.split("/"))
        current = self.path
        for part in safe.split("/"):
            current = current / part
            try:
                st = os.lstat(current)
            except FileNotFoundError:
                break
            if stat.S_ISLNK(st.st_mode):
                raise UnsafeRepositoryContent(
                    f"refusing {path!r}: {current.relative_to(self.path)} is a symbolic link"
                )
            if current != target and not stat.S_ISDIR(st.st_mode):
                raise UnsafeRepositoryContent(
                    f"refusing {path!r}: {current.relative_to(self.path)} is not a directory"
                )
        return target

    def _lstat_dir(self, directory: Path, path: str) -> None:
        if not stat.S_ISDIR(os.lstat(directory).st_mode):
            raise UnsafeRepositoryContent(
                f"refusing {path!r}: {directory.relative_to(self.path)} is not a directory"
            )

    def commit(
        self,
        message: str,
        *,
        author_name: str,
        author_email: str,
        trailers: Mapping[str, str] | None = None,
    ) -> str | None:
        """Stage everything and commit; return the new SHA, or None when nothing changed."""
        self._git.run("add", "--all", "--", ".")
        code, _ = self._git.run("diff", "--cached", "--quiet", ok_codes=(0, 1))
        if code == 0:
            return None
        full = _with_trailers(message, trailers or {})
        self._git.run(
            "commit",
            "--quiet",
            "--no-verify",
            "--file=-",
            stdin=full,
            extra_env=self._identity(author_name, author_email),
        )
        return self.head()

    def revert(
        self,
        shas: Sequence[str],
        *,
        mainline_for_merges: bool = True,
        trailers: Mapping[str, str] | None = None,
        author_name: str | None = None,
        author_email: str | None = None,
    ) -> list[str]:
        """Revert commits in the given order (newest first); return the new commit SHAs.

        All or nothing: on a conflict or an empty revert the branch is reset to where it started
        and RevertConflict / GitError is raised.
        """
        env = self._identity(author_name, author_email)
        return self._all_or_nothing(
            shas, lambda sha: self._revert_one(sha, mainline_for_merges, trailers, env)
        )

    def _all_or_nothing(self, shas: Sequence[str], revert_one: Callable[[str], str]) -> list[str]:
        """Run `revert_one` for each SHA; on a GitError reset the branch to where it started."""
        start = self.head()
        created: list[str] = []
        try:
            for raw in shas:
                created.append(revert_one(validate_sha(raw)))
        except GitError:
            self._git.run("reset", "--quiet", "--hard", start)
            raise
        return created

    def revert_paths(
        self,
        shas: Sequence[str],
        *,
        paths: Sequence[str],
        trailers: Mapping[str, str] | None = None,
        author_name: str | None = None,
        author_email: str | None = None,
    ) -> list[str]:
        """Revert commits (newest first) on `paths` only; return the new commit SHAs.

        Each commit's first-parent diff, limited to `paths`, is applied in reverse (three-way, so
        later unrelated edits of the same files merge); what the commits changed elsewhere stays.
        All or nothing like `revert`: on a conflict, an empty revert or a staged symlink, submodule
        or path outside `paths`, the branch is reset to where it started and the error raised.
        """
        scope = [validate_repo_path(p) for p in paths]
        if not scope:
            raise GitError("a scoped revert needs at least one path")
        env = self._identity(author_name, author_email)
        return self._all_or_nothing(shas, lambda sha: self._revert_paths_one(sha, scope, trailers, env))

    def _revert_paths_one(
        self, sha: str, scope: list[str], trailers: Mapping[str, str] | None, env: dict[str, str]
    ) -> str:
        parents = self._git.run("rev-list", "--parents", "-n", "1", "--end-of-options", sha)[1].split()[1:]
        if not parents:
            raise GitError(f"{sha} is the root commit and cannot be reverted")
        full = self._git.run("rev-parse", "--verify", "--end-of-options", f"{sha}^{{commit}}")[1].strip()
        # The inverse of the commit against its first parent (what landed on the branch), on the scope.
        patch = self._git.run(
            "diff",
            "--binary",
            "--full-index",
            "--no-color",
            "--no-ext-diff",
            "--no-textconv",
            "--no-renames",
            "--end-of-options",
            full,
            parents[0],
            "--",
            *scope,
        )[1]
        if patch.strip():
            code, _ = self._git.run(
                "apply", "--3way", "--index", "--whitespace=nowarn", "-", stdin=patch, ok_codes=(0, 1)
            )
            if code != 0:
                self._abort_revert_paths(full)
        self._check_staged(scope)
        code, _ = self._git.run("diff", "--cached", "--quiet", ok_codes=(0, 1))
        if code == 0:
            raise GitError(f"reverting {full} produced no change in {', '.join(scope)} (already reverted?)")
        subject = self._git.run("log", "-1", "--format=%s", "--end-of-options", full)[1].strip()
        message = (
            f'Revert "{subject}"\n\nThis reverts commit {full} in {", ".join(scope)} only; '
            "its changes elsewhere stay.\n"
        )
        self._git.run(
            "commit",
            "--quiet",
            "--no-verify",
            "--file=-",
            stdin=_with_trailers(message, trailers or {}),
            extra_env=env,
        )
        return self.head()

    def _abort_revert_paths(self, sha: str) -> None:
        conflicted = self._git.run("diff", "--name-only", "--diff-filter=U", "-z")[1].split("\x00")
        files = [f for f in conflicted if f]
        if files:
            raise RevertConflict(f"reverting {sha} conflicts in {len(files)} file(s)", sha=sha, files=files)
        raise GitError(f"reverting {sha} does not apply to the branch")

    def _check_staged(self, scope: list[str]) -> None:
        """Refuse staged symlinks, submodules and paths outside the scope (`git apply` wrote them)."""
        out = self._git.run("diff", "--cached", "--raw", "--no-renames", "-z")[1]
        fields = [f for f in out.split("\x00")]
        for meta, path in zip(fields[0::2], fields[1::2], strict=False):
            if not meta.startswith(":"):
                continue
            new_mode = meta[1:].split()[1]
            if new_mode in (_MODE_SYMLINK, _MODE_GITLINK):
                raise UnsafeRepositoryContent(
                    f"refusing {path!r}: the revert would write a link or submodule"
                )
            validate_repo_path(path)
            if not any(path == p or path.startswith(p + "/") for p in scope):
                raise GitError(f"refusing {path!r}: outside {', '.join(scope)}")

    def _revert_one(
        self, sha: str, mainline: bool, trailers: Mapping[str, str] | None, env: dict[str, str]
    ) -> str:
        parents = self._git.run("rev-list", "--parents", "-n", "1", "--end-of-options", sha)[1].split()[1:]
        args = ["revert", "--no-edit"]
        if len(parents) > 1:
            if not mainline:
                raise GitError(f"{sha} is a merge commit; reverting it needs a mainline parent")
            args += ["-m", "1"]
        code, _ = self._git.run(*args, "--end-of-options", sha, extra_env=env, ok_codes=(0, 1))
        if code != 0:
            self._abort_revert(sha)
        if trailers:
            message = self._git.run("log", "-1", "--format=%B")[1]
            amend = ["commit", "--quiet", "--amend", "--no-verify", "--file=-"]
            self._git.run(*amend, stdin=_with_trailers(message, trailers), extra_env=env)
        return self.head()

    def _abort_revert(self, sha: str) -> None:
        conflicted = self._git.run("diff", "--name-only", "--diff-filter=U", "-z")[1].split("\x00")
        files = [f for f in conflicted if f]
        self._git.run("revert", "--abort", ok_codes=(0, 128))
        if files:
            raise RevertConflict(f"reverting {sha} conflicts in {len(files)} file(s)", sha=sha, files=files)
        raise GitError(f"reverting {sha} produced no change (already reverted?)")

    def push(self, branch: str, *, force_with_lease: bool = False, expected_sha: str | None = None) -> None:
        """Push HEAD to refs/heads/<branch> on origin (optionally with a lease)."""
        name = validate_ref_name(branch)
        args = ["push", "--quiet", "--porcelain", "--no-verify"]
        if force_with_lease:
            lease = f"refs/heads/{name}" + (f":{validate_sha(expected_sha)}" if expected_sha else "")
            args.append(f"--force-with-lease={lease}")
        self._git.run(*args, "origin", f"HEAD:refs/heads/{name}")

    def remote_branch_sha(self, branch: str) -> str | None:
        """Return the branch SHA on origin, or None when it does not exist."""
        name = validate_ref_name(branch)
        out = self._git.run("ls-remote", "--heads", "origin", f"refs/heads/{name}")[1]
        for line in out.splitlines():
            sha, _, ref = line.partition("\t")
            if ref == f"refs/heads/{name}":
                return sha
        return None


def _with_trailers(message: str, trailers: Mapping[str, str]) -> str:
    body = message.rstrip("\n")
    if not trailers:
        return body + "\n"
    lines = []
    for key, value in trailers.items():
        if not _TRAILER_KEY.fullmatch(key) or "\n" in value or "\r" in value:
            raise InvalidRef(f"invalid trailer {key!r}")
        lines.append(f"{key}: {value}")
    return f"{body}\n\n" + "\n".join(lines) + "\n"


def _identity_env(
    committer: tuple[str, str], commit_date: str | None, name: str | None, email: str | None
) -> dict[str, str]:
    """git's author and committer environment (the author defaults to the committer; one pinned date)."""
    cname, cemail = committer
    env = {
        "GIT_AUTHOR_NAME": name or cname,
        "GIT_AUTHOR_EMAIL": email or cemail,
        "GIT_COMMITTER_NAME": cname,
        "GIT_COMMITTER_EMAIL": cemail,
    }
    if commit_date:
        env["GIT_AUTHOR_DATE"] = env["GIT_COMMITTER_DATE"] = commit_date
    return env
