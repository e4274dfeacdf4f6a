"""Git domain exceptions, sorted into transient and permanent at the boundary."""

from __future__ import annotations

from collections.abc import Sequence


class GitError(Exception):
    """A git command failed; the message holds the command name and the tail of stderr.

    `retryable` sorts errors at the boundary: False unless a subclass knows the cause is transient.
    """

    retryable: bool = False


class GitTransientError(GitError):
    """A git command failed for a reason that may go away: a held lock, a dropped connection, a 5xx."""

    retryable = True


class InvalidRef(GitError, ValueError):
    """A ref name, SHA, path or revision failed validation or does not resolve."""


class UnsafeRepositoryContent(InvalidRef):
    """The repository holds something the portal refuses to act on (symlink, submodule, huge file).

    Permanent: retrying reads the same content. Callers fail the request with this message and audit
    it; nothing has been pushed when it is raised. A kind of InvalidRef, so readers that treat an
    unreadable path as missing (previews) stay inert rather than failing.
    """


class UnsafeRemote(GitError, ValueError):
    """A remote URL uses a transport or form we refuse (ext::, fd::, file://, option-like)."""


class RevertConflict(GitError):
    """`git revert` stopped on conflicts; the workspace was restored to where it started."""

    def __init__(self, message: str, *, sha: str, files: Sequence[str]) -> None:
        super().__init__(message)
        self.sha = sha
        self.files = tuple(files)
