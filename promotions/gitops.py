"""Read access to a GitOps repository for previews and tracking.

Promotions read the inventory's bare mirror of each repository (`inventory.services.mirror_for`,
MIRRORS_DIR/<name>.git), so a repository is cloned and fetched once for the whole portal; the
Git ingest fetches it on its schedule, promotions fetch it (throttled) when they need a fresh view.
"""

from __future__ import annotations

import enum
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from integrations.gitrepo import CommitRecord, GitError, GitMirror, InvalidRef
from inventory.mirrors import mirror_for as inventory_mirror_for
from inventory.models import GitRepository

_locks: dict[str, threading.Lock] = {}
_locks_guard = threading.Lock()
_last_fetch: dict[str, float] = {}
FETCH_MIN_INTERVAL = 2.0  # seconds: a page with many apps fetches once
# The ingest (another process) may hold the mirror's config or ref locks for a moment.
GIT_LOCK_RETRIES = 3


def _lock_for(name: str) -> threading.Lock:
    with _locks_guard:
        return _locks.setdefault(name, threading.Lock())


def mirror_for(repository: GitRepository, *, fetch: bool = True) -> GitMirror:
    """Return the repository's shared mirror, created and fetched (throttled) as needed."""
    mirror = inventory_mirror_for(repository)
    with _lock_for(repository.name):
        created = _retrying(mirror.ensure)
        if created:
            _last_fetch[repository.name] = time.monotonic()
        elif fetch and time.monotonic() - _last_fetch.get(repository.name, 0) > FETCH_MIN_INTERVAL:
            _fetch(mirror)
            _last_fetch[repository.name] = time.monotonic()
    return mirror


def mirror_with_commit(repository: GitRepository, sha: str) -> GitMirror | None:
    """The repository's mirror once it holds commit `sha`, fetched when it lacks it (a commit pushed
    since the last fetch); None when the remote does not give it. Raises GitError if fetching fails."""
    mirror = mirror_for(repository, fetch=False)
    if has_commit(mirror, sha):
        return mirror
    with _lock_for(repository.name):
        if not has_commit(mirror, sha):  # a concurrent task may have fetched it meanwhile
            _fetch(mirror)
            _last_fetch[repository.name] = time.monotonic()
    return mirror if has_commit(mirror, sha) else None


def _retrying(operation: Callable[[], bool]) -> bool:
    for attempt in range(GIT_LOCK_RETRIES):
        try:
            return operation()
        except GitError:
            if attempt == GIT_LOCK_RETRIES - 1:
                raise
            time.sleep(0.3 * (attempt + 1))  # a concurrent fetch or config write holds a lock
    raise AssertionError("unreachable")


def _fetch(mirror: GitMirror) -> None:
    def fetch() -> bool:
        mirror.fetch()
        return True

    _retrying(fetch)


def ensure_commit(mirror: GitMirror, sha: str) -> bool:
    """Tell whether `sha` is in the mirror, fetching once when it is not (yet)."""
    if has_commit(mirror, sha):
        return True
    try:
        _fetch(mirror)
    except GitError:
        return False
    return has_commit(mirror, sha)


def reader(mirror: GitMirror, rev: str) -> Callable[[str], str | None]:
    """Return path → text at `rev` (None when missing or not decodable)."""

    def read(path: str) -> str | None:
        try:
            data = mirror.file_at(rev, path)
        except InvalidRef:
            return None
        if data is None:
            return None
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            return None

    return read


def has_commit(mirror: GitMirror, sha: str) -> bool:
    try:
        mirror.rev_parse(sha)
        return True
    except InvalidRef:
        return False


class Carried(enum.Enum):
    """Whether a commit changed what a promotion carries (see promotions.preview._carried_by)."""

    YES = "yes"
    NO = "no"  # it touched the source's files, but not what the promotion copies
    REACHED = "reached"  # what the promotion would copy at this commit is in the target already


Carries = Callable[[str, "str | None"], Carried]


@dataclass(frozen=True)
class ChangelogEntry:
    sha: str
    short_sha: str
    subject: str
    author: str
    authored_at: datetime
    url: str


def changelog(
    mirror: GitMirror,
    repository: GitRepository,
    *,
    source_rev: str,
    source_paths: list[str],
    source_file: str | None = None,
    target_markers: list[str] | None = None,
    limit: int = 30,
    scan_limit: int = 5000,
    carries: Carries | None = None,
) -> list[ChangelogEntry]:
    """Commits that changed the app in the source since it ran what the target runs, newest first.

    Walks the source's history from `source_rev`; the walk stops at the commit after which
    `source_file` contains every one of `target_markers` (the pins the target has now): that
    commit and older ones already reached the target. With `carries`, a commit is listed only when
    it changed what the promotion copies, and the walk also stops where that reached the target.
    """
    prefixes = [p.rstrip("/") + "/" for p in source_paths]
    markers = [m for m in (target_markers or []) if m]
    read = reader(mirror, source_rev)
    entries: list[ChangelogEntry] = []
    try:
        for n, record in enumerate(mirror.iter_commits(ref=source_rev, reverse=False)):
            if n >= scan_limit or len(entries) >= limit:
                break
            if not _touches(record, prefixes):
                continue
            if source_file and markers and carries is None:
                read = reader(mirror, record.sha)
                text = read(source_file) or ""
                if all(_pinned(m, text) for m in markers):
                    break
            if carries is not None:
                verdict = carries(record.sha, record.parents[0] if record.parents else None)
                if verdict is Carried.REACHED:
                    break
                if verdict is Carried.NO:
                    continue
            entries.append(
                ChangelogEntry(
                    sha=record.sha,
                    short_sha=record.sha[:8],
                    subject=record.subject[:200],
                    author=record.author_name,
                    authored_at=record.authored_at,
                    url=repository.commit_url(record.sha),
                )
            )
    except (GitError, InvalidRef):
        return entries
    return entries


def _pinned(marker: str, text: str) -> bool:
    """Tell whether `text` pins `marker` as a whole value ("1.2.1" is not pinned by "1.2.12")."""
    return re.search(rf"(?<![\w.:@-]){re.escape(marker)}(?![\w.-])", text) is not None


def _touches(record: CommitRecord, prefixes: list[str]) -> bool:
    return any(
        c.path.startswith(p) or (c.old_path or "").startswith(p) for c in record.changes for p in prefixes
    )
