"""Ingest Git history: fetch the mirror, store new commits and which app/environment they touch."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from django.db import connection, transaction
from django.db.models import Max
from django.utils import timezone

from integrations.argocd import ArgoApplication as RemoteApp
from integrations.gitrepo import CommitRecord, GitError, GitMirror

from .appstate import SHA
from .carried import carried_files, carried_value
from .claims import INGEST_CLAIM, claim_release, row_claim
from .mirrors import mirror_for
from .models import Application, ArgoInstance, Commit, CommitTouch, Deployment, Environment, GitRepository

INGEST_BATCH = 2000
_TRAILER = re.compile(r"^(Promotion-Id|Rollback-Id):[ \t]*(\S+)[ \t]*$", re.MULTILINE | re.IGNORECASE)
_PORTAL_BRANCH = re.compile(r"""(?:^|[\s'"/:])((?:promote|rollback)/[A-Za-z0-9._\-/]+)""", re.MULTILINE)


@dataclass
class IngestResult:
    """Summary of one repository ingest."""

    repository: str
    skipped: bool = False
    commits: int = 0
    touches: int = 0
    error: str = ""
    duration_ms: int = 0

    @property
    def ok(self) -> bool:
        return not self.error


def _pattern_regex(pattern: str, env: str | None) -> re.Pattern[str]:
    parts = re.split(r"(\{app\}|\{env\})", pattern.strip("/"))
    out = []
    for part in parts:
        if part == "{app}":
            out.append(r"(?P<app>[^/]+)")
        elif part == "{env}":
            out.append(re.escape(env or ""))
        else:
            out.append(re.escape(part))
    return re.compile("^" + "".join(out) + "(?:/|$)")


@dataclass
class PathMapper:
    """Map changed paths to (app name, environment id or None for the shared base)."""

    matchers: list[tuple[re.Pattern[str], int | None, str | None]]

    @classmethod
    def for_repository(cls, repo: GitRepository, envs: Sequence[Environment]) -> PathMapper:
        matchers: list[tuple[re.Pattern[str], int | None, str | None]] = [
            (_pattern_regex(e.path_pattern, e.name), e.pk, e.branch) for e in envs
        ]
        matchers.append((_pattern_regex(repo.base_path_pattern or "apps/{app}", None), None, None))
        return cls(matchers)

    def map(self, paths: Iterable[str], branch: str) -> dict[tuple[str, int | None], list[str]]:
        out: dict[tuple[str, int | None], list[str]] = {}
        for path in paths:
            for regex, env_id, env_branch in self.matchers:
                if env_branch is not None and env_branch != branch:
                    continue
                match = regex.match(path)
                if match:
                    out.setdefault((match.group("app"), env_id), []).append(path)
                    break
        return out


def portal_ref_of(record: CommitRecord) -> str:
    """Return the Promotion-Id/Rollback-Id trailer or the merged promote/…/rollback/… branch."""
    trailer = _TRAILER.search(record.message)
    if trailer:
        return f"{trailer.group(1)}: {trailer.group(2)}"[:200]
    if record.is_merge:
        branch = _PORTAL_BRANCH.search(record.message)
        if branch:
            return branch.group(1).rstrip(".'\"")[:200]
    return ""


def repository_ingest(*, repository_id: int) -> IngestResult:
    """Fetch the mirror and ingest new commits of the default and environment branches.

    One streaming `git log` per branch, commits bulk-inserted in batches with increasing `seq`
    (parents first), and their changed paths mapped to (application, environment).
    """
    started = time.monotonic()
    now = timezone.now()
    repo = GitRepository.objects.get(pk=repository_id)
    result = IngestResult(repository=repo.name)
    if not row_claim(model=GitRepository, pk=repository_id, fields=INGEST_CLAIM, now=now):
        result.skipped = True
        return result
    try:
        mirror = mirror_for(repo)
        if not mirror.ensure():
            mirror.fetch()
        envs = list(Environment.objects.all())
        mapper = PathMapper.for_repository(repo, envs)
        branches = [repo.default_branch, *sorted({e.branch for e in envs} - {repo.default_branch})]
        heads = dict(repo.ingested_heads or {})
        known = [sha for sha in set(heads.values()) if _known_in_mirror(mirror, sha)]
        next_seq = (Commit.objects.filter(repository=repo).aggregate(m=Max("seq"))["m"] or 0) + 1
        new_heads = dict(heads)
        for branch in branches:
            head = mirror.branch_head(branch)
            if head is None:
                continue
            if head in known:
                new_heads[branch] = head
                continue
            records = mirror.iter_commits(ref=f"refs/heads/{branch}", known_shas=known)
            for batch in _batches(records, INGEST_BATCH):
                commits, touches = _ingest_batch(
                    repo=repo,
                    batch=batch,
                    mapper=mapper,
                    branch=branch,
                    first_seq=next_seq,
                    mirror=mirror,
                    envs={e.pk: e for e in envs},
                )
                next_seq += len(batch)
                result.commits += commits
                result.touches += touches
            new_heads[branch] = head
            known.append(head)
        result.duration_ms = int((time.monotonic() - started) * 1000)
        GitRepository.objects.filter(pk=repo.pk).update(
            ingested_heads=new_heads,
            last_ingested_sha=new_heads.get(repo.default_branch, repo.last_ingested_sha),
            last_fetch_at=timezone.now(),
            last_ingest_finished_at=timezone.now(),
            last_ingest_duration_ms=result.duration_ms,
            last_error="",
            commits_count=Commit.objects.filter(repository=repo).count(),
        )
    except (GitError, ValueError) as exc:
        result.error = str(exc)[:1000] or exc.__class__.__name__
        result.duration_ms = int((time.monotonic() - started) * 1000)
        GitRepository.objects.filter(pk=repo.pk).update(
            last_error=result.error,
            last_ingest_finished_at=timezone.now(),
            last_ingest_duration_ms=result.duration_ms,
        )
    except BaseException:
        claim_release(GitRepository, repo.pk, "last_ingest_finished_at")
        raise
    return result


def _known_in_mirror(mirror: GitMirror, sha: str) -> bool:
    try:
        mirror.rev_parse(sha)
    except GitError:
        return False
    return True


def _batches(records: Iterator[CommitRecord], size: int) -> Iterator[list[CommitRecord]]:
    batch: list[CommitRecord] = []
    for record in records:
        batch.append(record)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


COMMIT_COLUMNS = (
    "repository_id", "sha", "seq", "parents", "author_name", "author_email", "authored_at",
    "committer_name", "committed_at", "message", "is_merge", "portal_ref",
)  # fmt: skip
TOUCH_COLUMNS = ("commit_id", "application_id", "environment_id", "seq", "paths", "carried")
JSON_COLUMNS = frozenset({"parents", "paths"})


def _insert_rows(
    model: Any, columns: Sequence[str], rows: list[tuple[Any, ...]], *, returning: Sequence[str] = ()
) -> list[tuple[Any, ...]]:
    """Insert rows, skipping ones that already exist (unique constraints).

    PostgreSQL: COPY into a temporary table, then INSERT … ON CONFLICT DO NOTHING RETURNING the
    ``returning`` columns of the rows inserted (an order of magnitude faster than building model
    instances for 100,000 commits, and no query to read the ids back). Elsewhere: bulk_create, and
    nothing returned. Table and column names come from the model's metadata, never from input.
    """
    if not rows:
        return []
    if connection.vendor != "postgresql":
        objs = [model(**dict(zip(columns, row, strict=True))) for row in rows]
        model.objects.bulk_create(objs, ignore_conflicts=True, batch_size=1000)
        return []
    table = connection.ops.quote_name(model._meta.db_table)
    temp = connection.ops.quote_name(f"_ingest_{model._meta.db_table}")
    cols = ", ".join(connection.ops.quote_name(c) for c in columns)
    json_cols = {i for i, c in enumerate(columns) if c in JSON_COLUMNS}
    with connection.cursor() as cursor:
        cursor.execute(
            f"CREATE TEMP TABLE IF NOT EXISTS {temp} ON COMMIT DROP AS SELECT {cols} FROM {table} WITH NO DATA"  # noqa: S608 - quoted model metadata
        )
        raw = cursor.cursor
        with raw.copy(f"COPY {temp} ({cols}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row([json.dumps(v) if i in json_cols else v for i, v in enumerate(row)])
        back = ", ".join(connection.ops.quote_name(c) for c in returning)
        cursor.execute(
            f"INSERT INTO {table} ({cols}) SELECT {cols} FROM {temp} ON CONFLICT DO NOTHING"  # noqa: S608
            + (f" RETURNING {back}" if back else "")
        )
        inserted = list(cursor.fetchall()) if back else []
        cursor.execute(f"TRUNCATE {temp}")
    return inserted


@transaction.atomic
def _ingest_batch(
    *,
    repo: GitRepository,
    batch: list[CommitRecord],
    mapper: PathMapper,
    branch: str,
    first_seq: int,
    mirror: GitMirror | None = None,
    envs: dict[int, Environment] | None = None,
) -> tuple[int, int]:
    rows = [
        (
            repo.pk,
            r.sha,
            first_seq + i,
            list(r.parents),
            r.author_name[:200],
            r.author_email[:200],
            r.authored_at,
            r.committer_name[:200],
            r.committed_at,
            r.message,
            r.is_merge,
            portal_ref_of(r),
        )
        for i, r in enumerate(batch)
    ]
    inserted = _insert_rows(Commit, COMMIT_COLUMNS, rows, returning=("sha", "id", "seq"))
    stored = {sha: (pk, seq) for sha, pk, seq in inserted}
    known = [r.sha for r in batch if r.sha not in stored]  # stored before (or not PostgreSQL)
    if known:
        stored.update(
            (sha, (pk, seq))
            for sha, pk, seq in Commit.objects.filter(repository=repo, sha__in=known).values_list(
                "sha", "id", "seq"
            )
        )
    mapped: list[tuple[str, str, int | None, list[str]]] = []
    names: set[str] = set()
    for record in batch:
        paths = [c.path for c in record.changes] + [c.old_path for c in record.changes if c.old_path]
        for (app, env_id), app_paths in mapper.map(paths, branch).items():
            mapped.append((record.sha, app, env_id, app_paths))
            names.add(app)
    if not mapped:
        return len(stored), 0
    apps = dict(Application.objects.filter(name__in=names).values_list("name", "id"))
    missing = sorted(names - set(apps))
    if missing:
        # Apps are discovered from the repository layout; the poller fills in their project.
        Application.objects.bulk_create(
            [Application(name=n[:200], project="", repository=repo) for n in missing], ignore_conflicts=True
        )
        apps = dict(Application.objects.filter(name__in=names).values_list("name", "id"))
    carried = (
        _carried(mirror, envs, batch, [(sha, apps[a], e, p) for sha, a, e, p in mapped if a in apps])
        if mirror is not None and envs
        else {}
    )
    touches = [
        (stored[sha][0], apps[app], env_id, stored[sha][1], paths[:50], carried.get((sha, apps[app], env_id)))
        for sha, app, env_id, paths in mapped
        if sha in stored and app in apps
    ]
    _insert_rows(CommitTouch, TOUCH_COLUMNS, touches)
    return len(stored), len(touches)


def _carried(
    mirror: GitMirror,
    envs: dict[int, Environment],
    batch: list[CommitRecord],
    touches: list[tuple[str, int, int | None, list[str]]],
) -> dict[tuple[str, int, int | None], bool]:
    """Tell, per overlay touch, whether the commit changed what a promotion copies (inventory.carried).

    A touch that changed none of the carried files carries nothing without a read; the others
    compare the carried value at the commit and at its first parent, all files of the batch read
    with one `files_at` (two `git cat-file --batch` runs).
    """
    parents = {r.sha: (r.parents[0] if r.parents else None) for r in batch}
    by_id = {a.pk: a for a in Application.objects.filter(pk__in={t[1] for t in touches if t[2] is not None})}
    out: dict[tuple[str, int, int | None], bool] = {}
    to_read: list[tuple[str, Application, Environment, list[str]]] = []
    for sha, app_id, env_id, paths in touches:
        env, app = envs.get(env_id or 0), by_id.get(app_id)
        if env is None or app is None:
            continue
        files = carried_files(app, env)
        if not set(files) & set(paths):
            out[(sha, app_id, env_id)] = False
        elif parents.get(sha) is None:
            out[(sha, app_id, env_id)] = True
        else:
            to_read.append((sha, app, env, files))
    if not to_read:
        return out
    wanted = {(rev, f) for sha, _, _, files in to_read for rev in (sha, parents[sha] or "") for f in files}
    try:
        found = mirror.files_at(wanted)
    except GitError:
        found = {}

    def reader(rev: str) -> Callable[[str], str | None]:
        def read(path: str) -> str | None:
            blob = found.get((rev, path))
            return blob[1].decode("utf-8", "replace") if blob else None

        return read

    for sha, app, env, _files in to_read:
        parent = parents[sha] or ""
        out[(sha, app.pk, env.pk)] = carried_value(app, env, reader(sha)) != carried_value(
            app, env, reader(parent)
        )
    return out


def repositories_ingest_for(
    *, instance: ArgoInstance, full: dict[str, RemoteApp], wait: float = 20.0
) -> None:
    """Ingest Git first when a new history entry deploys a commit not ingested yet.

    Telling a portal pull request from an out-of-band change needs the deployed commit in the
    ingested history. The forge webhook usually brings it in before Argo CD syncs; when it has not
    (webhook lost, or the watcher is faster), fetch now rather than call a portal change out of band.
    Only entries not yet stored are looked at, so a revision that never shows up costs one fetch.
    """
    if not full:
        return
    stored = set(
        Deployment.objects.filter(argo_app__instance=instance, argo_app__name__in=list(full)).values_list(
            "argo_app__name", "history_id"
        )
    )
    wanted: dict[str, set[str]] = {}
    for name, remote in full.items():
        for entry in remote.history:
            if (name, entry.id) in stored:
                continue
            pairs = list(zip(entry.revisions, [s.repo_url for s in remote.sources], strict=False))
            if entry.revision:
                pairs.append(
                    (entry.revision, entry.repo_url or (remote.source.repo_url if remote.source else ""))
                )
            for revision, url in pairs:
                if url and SHA.fullmatch(revision or ""):
                    wanted.setdefault(url.removesuffix(".git"), set()).add(revision)
    if not wanted:
        return
    repos = {r.url.removesuffix(".git"): r for r in GitRepository.objects.all()}
    for url, shas in wanted.items():
        repo = repos.get(url)
        if repo is None or Commit.objects.filter(repository=repo, sha__in=shas).count() == len(shas):
            continue
        if repository_ingest(repository_id=repo.pk).skipped:
            _wait_for_ingest(repository_id=repo.pk, timeout=wait)


def _wait_for_ingest(*, repository_id: int, timeout: float) -> None:
    """Wait (bounded) for an ingest another worker is running to finish."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        started, finished = GitRepository.objects.filter(pk=repository_id).values_list(
            "last_ingest_started_at", "last_ingest_finished_at"
        )[0]
        if started is None or (finished is not None and finished >= started):
            return
        time.sleep(0.2)
