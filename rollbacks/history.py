"""Read the GitOps repository for rollbacks: which commits to revert, the diff, the versions.

Everything goes through `integrations.gitrepo.GitMirror` (a bare mirror under MIRRORS_DIR); no git
object leaves this module, callers get plain dataclasses.

Which commits "moved" an environment: the first-parent chain of the environment branch between the
previous deployed revision and the current one, keeping the commits whose first-parent diff touches
the environment's app path or the app's base. Following first parents matters for merged pull
requests: the merge commit is what landed on the branch (and is reverted with `-m 1`); the commits
of the merged branch are not reverted a second time.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from core.kustomize import KustomizationError, image_version
from integrations.gitrepo import CommitRecord, GitError, GitMirror, InvalidRef
from inventory.mirrors import mirror_for
from inventory.models import Application, Commit, Environment, GitRepository

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RevertCommit:
    """A commit the rollback reverts, ready for display."""

    sha: str
    parents: tuple[str, ...]
    subject: str
    author_name: str
    authored_at: datetime
    paths: tuple[str, ...]
    url: str

    @property
    def short_sha(self) -> str:
        return self.sha[:8]

    @property
    def is_merge(self) -> bool:
        return len(self.parents) > 1


def repository_mirror(repository: GitRepository) -> GitMirror:
    """Return the repository's bare mirror, shared with the inventory's Git ingest."""
    return mirror_for(repository)


def mirror_fresh(repository: GitRepository) -> GitMirror:
    """Return the mirror after fetching; a failed fetch (e.g. a concurrent one) keeps the old state."""
    mirror = repository_mirror(repository)
    if not mirror.ensure():
        try:
            mirror.fetch()
        except GitError as exc:
            logger.warning("fetch of %s failed, using the mirror as is: %s", repository.name, exc)
    return mirror


def app_base_path(application: Application) -> str:
    """Return the app's shared base directory (the repository's base pattern, e.g. apps/<app>)."""
    options = application.strategy_options if isinstance(application.strategy_options, dict) else {}
    if options.get("base_path"):
        return str(options["base_path"]).strip("/")
    pattern = getattr(application.repository, "base_path_pattern", "") or "apps/{app}"
    return pattern.format(app=application.name).strip("/")


def app_paths(application: Application, environment: Environment) -> list[str]:
    """Return the paths whose changes move what `environment` runs for `application`."""
    return [environment.app_path(application.name), app_base_path(application)]


def touches(path: str, prefixes: Iterable[str]) -> bool:
    return any(path == p or path.startswith(p.rstrip("/") + "/") for p in prefixes)


def changed_paths(record: CommitRecord) -> tuple[str, ...]:
    paths: list[str] = []
    for change in record.changes:
        paths.append(change.path)
        if change.old_path:
            paths.append(change.old_path)
    return tuple(dict.fromkeys(paths))


def _as_revert_commit(repository: GitRepository, record: CommitRecord) -> RevertCommit:
    return RevertCommit(
        sha=record.sha,
        parents=record.parents,
        subject=record.subject,
        author_name=record.author_name,
        authored_at=record.authored_at,
        paths=changed_paths(record),
        url=repository.commit_url(record.sha),
    )


def commits_moving_env(
    repository: GitRepository, mirror: GitMirror, *, old: str, new: str, paths: Sequence[str]
) -> list[RevertCommit]:
    """Return the first-parent commits in old..new touching `paths`, newest first."""
    records = {r.sha: r for r in mirror.iter_commits(ref=new, since_sha=old, reverse=False)}
    chain: list[RevertCommit] = []
    cursor: str | None = mirror.rev_parse(new)
    while cursor and cursor in records:
        record = records[cursor]
        if any(touches(p, paths) for p in changed_paths(record)):
            chain.append(_as_revert_commit(repository, record))
        cursor = record.parents[0] if record.parents else None
    return chain


def commit_details(repository: GitRepository, mirror: GitMirror, sha: str) -> RevertCommit:
    """Return one commit (its first-parent changes); raise InvalidRef when it does not exist."""
    full = mirror.rev_parse(sha)
    # With the parents known (ingested commits), the log walks exactly one commit.
    known = Commit.objects.filter(repository=repository, sha=full).values_list("parents", flat=True).first()
    records = mirror.iter_commits(ref=full, known_shas=list(known or ()), reverse=False)
    try:
        for record in records:
            if record.sha == full:
                return _as_revert_commit(repository, record)
    finally:
        records.close()  # type: ignore[attr-defined]
    raise InvalidRef(f"unknown revision {sha!r:.80}")


def env_version_at(mirror: GitMirror, rev: str, environment: Environment, application: Application) -> str:
    """Return the version the env's kustomization references at a revision."""
    path = f"{environment.app_path(application.name)}/kustomization.yaml"
    try:
        return image_version(mirror.file_at(rev, path), application.name)
    except (InvalidRef, GitError, KustomizationError):
        return ""
