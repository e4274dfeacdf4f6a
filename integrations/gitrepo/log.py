"""Commit records and the parser for the portal's NUL-separated `git log` stream."""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import NamedTuple

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


_RECORD_START = b"\x00\x1e"
_SHA_FIELD = re.compile(r"[0-9a-f]{40}(?:[0-9a-f]{24})?")


def _records(chunks: Iterable[bytes]) -> Iterator[str]:
    """Split the stream into one decoded text per commit (from its SHA to its last path)."""
    pending = b""
    started = False
    for chunk in chunks:
        pending += chunk
        if not started and pending:
            if not pending.startswith(b"\x1e"):
                raise GitError(f"unexpected git log output near {_decode(pending[:40])!r}")
            pending, started = pending[1:], True
        cut = pending.rfind(_RECORD_START)
        if cut < 0:
            continue
        complete, pending = pending[:cut], pending[cut + 2 :]
        yield from _decode(complete).split("\x00\x1e")
    if pending:
        yield _decode(pending)


def _field_lists(chunks: Iterable[bytes]) -> Iterator[list[str]]:
    """Yield each commit's text split once on NUL (9 header fields, then name-status tokens)."""
    previous: list[str] | None = None
    for text in _records(chunks):
        fields = text.split("\x00")
        if previous is not None and not _SHA_FIELD.fullmatch(fields[0]):
            # A field (a message) that starts with the record separator: it belongs to the commit before.
            fields = [*previous, "\x1e" + fields[0], *fields[1:]]
        elif previous is not None:
            yield previous
        previous = fields
    if previous is not None:
        yield previous


def parse_log_stream(chunks: Iterable[bytes]) -> Iterator[CommitRecord]:
    """Parse `git log -z --name-status --format=_LOG_FORMAT` output into CommitRecords.

    Each commit's text is split once on NUL: 9 header fields, then name-status tokens (status,
    path[, path]; the first status carries a newline).
    """
    for fields in _field_lists(chunks):
        yield _parse_record(fields)


class LogEntry(NamedTuple):
    """A commit as the bulk ingest needs it: the fields as git printed them, no objects per file.

    `parents` is space-separated, the dates are ISO 8601 text, `message` keeps git's trailing
    newline and `paths` lists the changed paths, then the old paths of renames and copies.
    """

    sha: str
    parents: str
    author_name: str
    author_email: str
    authored_at: str
    committer_name: str
    committer_email: str
    committed_at: str
    message: str
    paths: list[str]
    # `git log --raw` only: each changed path's raw line (":oldmode newmode oldblob newblob status"
    # against the first parent); see `raw_side`.
    raw: dict[str, str] | None = None


# Statuses followed by one path: with --no-renames every token pair is (status, path).
_ONE_PATH_STATUS = frozenset("ADMTUXB")


def parse_log_entries(chunks: Iterable[bytes]) -> Iterator[LogEntry]:
    """Parse the same stream as `parse_log_stream` into LogEntries (same paths, same errors).

    About three times cheaper per commit: no datetimes, no FileChange per path, and the common
    shape (status, path pairs) is sliced instead of walked token by token.
    """
    for fields in _field_lists(chunks):
        if len(fields) < _HEADER_FIELDS:
            fields = fields + [""] * (_HEADER_FIELDS - len(fields))
        tokens = fields[_HEADER_FIELDS:]
        if tokens and not tokens[-1]:
            tokens.pop()  # the NUL that ends the last record of the stream
        if len(tokens) % 2 == 0 and _ONE_PATH_STATUS.issuperset(map(str.strip, tokens[0::2])):
            paths = tokens[1::2]
        else:
            changes = _changes(tokens)
            paths = [c.path for c in changes] + [c.old_path for c in changes if c.old_path]
        sha, parents, an, ae, ad, cn, ce, cd, message = fields[:_HEADER_FIELDS]
        yield LogEntry(sha, parents, an, ae, ad, cn, ce, cd, message, paths)


_RAW_LINE = re.compile(
    r":[0-7]{6} [0-7]{6} ([0-9a-f]{40}|[0-9a-f]{64}) (?:[0-9a-f]{40}|[0-9a-f]{64}) [ACDMRTUXB][0-9]*"
)
_RAW_LENGTHS = frozenset({98, 146})  # a raw line of one status letter, SHA-1 or SHA-256 ids
_REGULAR_FILE = frozenset({"100644", "100755"})


def parse_raw_log_entries(chunks: Iterable[bytes]) -> Iterator[LogEntry]:
    """Parse `git log -z --raw --no-abbrev --format=_LOG_FORMAT` output into LogEntries.

    Same commits and paths as `parse_log_entries` of the `--name-status` run (the raw line ends with
    the same status letter), plus each path's raw line in `raw`: the blob ids before and after.
    """
    for fields in _field_lists(chunks):
        if len(fields) < _HEADER_FIELDS:
            fields = fields + [""] * (_HEADER_FIELDS - len(fields))
        tokens = fields[_HEADER_FIELDS:]
        if tokens and not tokens[-1]:
            tokens.pop()  # the NUL that ends the last record of the stream
        if len(tokens) == 2:  # the common shape, one path: as below without the generator
            line = tokens[0].strip()
            if len(line) in _RAW_LENGTHS and line[0] == ":" and line[-1] in _ONE_PATH_STATUS:
                path = tokens[1]
                sha, parents, an, ae, ad, cn, ce, cd, message = fields[:_HEADER_FIELDS]
                yield LogEntry(sha, parents, an, ae, ad, cn, ce, cd, message, [path], {path: line})
                continue
        lines = [t.strip() for t in tokens[0::2]]
        if len(tokens) % 2 == 0 and all(
            len(line) in _RAW_LENGTHS and line[0] == ":" and line[-1] in _ONE_PATH_STATUS for line in lines
        ):
            paths = tokens[1::2]
            raw = dict(zip(paths, lines, strict=True))
        else:
            paths, raw = _raw_changes(tokens)
        sha, parents, an, ae, ad, cn, ce, cd, message = fields[:_HEADER_FIELDS]
        yield LogEntry(sha, parents, an, ae, ad, cn, ce, cd, message, paths, raw)


def _raw_changes(tokens: list[str]) -> tuple[list[str], dict[str, str]]:
    new: list[str] = []
    old: list[str] = []
    raw: dict[str, str] = {}
    i, n = 0, len(tokens)
    while i < n:
        line = tokens[i].strip()
        i += 1
        if not line:
            continue
        if not _RAW_LINE.fullmatch(line):
            raise GitError(f"unexpected raw diff token {line[:20]!r}")
        first = tokens[i] if i < n else ""
        i += 1
        status = line.rpartition(" ")[2]
        if status[0] in "RC":
            path = tokens[i] if i < n else ""
            i += 1
            new.append(path)
            old.append(first)
        else:
            path = first
            new.append(path)
        raw[path] = line
    return new + old, raw


def raw_sides(line: str) -> tuple[str | None, str | None]:
    """`raw_side` of a raw line before and after, from one split."""
    mode_a, mode_b, blob_a, blob_b = line[1:].split(" ", 4)[:4]
    return (
        blob_a if mode_a in _REGULAR_FILE and blob_a.strip("0") else None,
        blob_b if mode_b in _REGULAR_FILE and blob_b.strip("0") else None,
    )


def raw_side(line: str, after: bool) -> str | None:
    """The blob id of a regular file on one side of a raw line (None: absent, symlink, submodule)."""
    fields = line[1:].split(" ")
    mode, blob = (fields[1], fields[3]) if after else (fields[0], fields[2])
    return blob if mode in _REGULAR_FILE and blob.strip("0") else None


def _parse_record(fields: list[str]) -> CommitRecord:
    if len(fields) < _HEADER_FIELDS:
        fields = fields + [""] * (_HEADER_FIELDS - len(fields))
    return _record(fields[:_HEADER_FIELDS], _changes(fields[_HEADER_FIELDS:]))


def _changes(tokens: list[str]) -> list[FileChange]:
    changes: list[FileChange] = []
    i, n = 0, len(tokens)
    while i < n:
        status = tokens[i].strip()
        i += 1
        if not status:
            continue
        if not _STATUS_RE.fullmatch(status):
            raise GitError(f"unexpected name-status token {status[:20]!r}")
        first = tokens[i] if i < n else ""
        i += 1
        if status[0] in "RC":
            changes.append(FileChange(status[0], tokens[i] if i < n else "", first))
            i += 1
        else:
            changes.append(FileChange(status[0], first))
    return changes


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
