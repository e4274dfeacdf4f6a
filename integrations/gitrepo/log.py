"""Commit records and the parser for the portal's NUL-separated `git log` stream."""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime

from integrations.gitrepo.command import _decode
from integrations.gitrepo.errors import GitError


@dataclass(frozen=True)
class FileChange:
    """One --name-status line: status letter, path and (for renames/copies) the old path."""

    status: str
    path: str
    old_path: str | None = None


@dataclass(frozen=True)
class CommitRecord:
    """A commit as read from `git log` (no GitPython objects)."""

    sha: str
    parents: tuple[str, ...]
    author_name: str
    author_email: str
    authored_at: datetime
    committer_name: str
    committer_email: str
    committed_at: datetime
    message: str
    changes: tuple[FileChange, ...]

    @property
    def is_merge(self) -> bool:
        """Return True for commits with more than one parent."""
        return len(self.parents) > 1

    @property
    def subject(self) -> str:
        """Return the first line of the message."""
        return self.message.split("\n", 1)[0]


_LOG_FORMAT = "%x1e%H%x00%P%x00%an%x00%ae%x00%aI%x00%cn%x00%ce%x00%cI%x00%B"
_HEADER_FIELDS = 9
_STATUS_RE = re.compile(r"[ACDMRTUXB][0-9]*")


def _tokens(chunks: Iterable[bytes]) -> Iterator[str]:
    """Split a NUL-separated byte stream into decoded tokens, incrementally."""
    pending = b""
    for chunk in chunks:
        pending += chunk
        *complete, pending = pending.split(b"\x00")
        for token in complete:
            yield _decode(token)
    if pending:
        yield _decode(pending)


def parse_log_stream(chunks: Iterable[bytes]) -> Iterator[CommitRecord]:
    """Parse `git log -z --name-status --format=_LOG_FORMAT` output into CommitRecords."""
    tokens = _tokens(chunks)
    token = next(tokens, None)
    while token is not None:
        if not token.startswith("\x1e"):
            raise GitError(f"unexpected git log output near {token[:40]!r}")
        header = [token[1:]] + [next(tokens, "") for _ in range(_HEADER_FIELDS - 1)]
        changes: list[FileChange] = []
        token = next(tokens, None)
        # Name-status entries follow as status, path[, path] tokens; the first carries a newline.
        while token is not None and not token.startswith("\x1e"):
            status = token.strip()
            if not status:
                token = next(tokens, None)
                continue
            if not _STATUS_RE.fullmatch(status):
                raise GitError(f"unexpected name-status token {status[:20]!r}")
            first = next(tokens, "")
            if status[0] in "RC":
                changes.append(FileChange(status[0], next(tokens, ""), first))
            else:
                changes.append(FileChange(status[0], first))
            token = next(tokens, None)
        yield _record(header, changes)


def _record(fields: list[str], changes: list[FileChange]) -> CommitRecord:
    sha, parents, an, ae, ad, cn, ce, cd, message = fields
    return CommitRecord(
        sha=sha,
        parents=tuple(parents.split()),
        author_name=an,
        author_email=ae,
        authored_at=datetime.fromisoformat(ad),
        committer_name=cn,
        committer_email=ce,
        committed_at=datetime.fromisoformat(cd),
        message=message.rstrip("\n"),
        changes=tuple(changes),
    )
