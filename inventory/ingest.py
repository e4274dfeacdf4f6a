"""Ingest Git history: fetch the mirror, store new commits and which app/environment they touch."""

from __future__ import annotations

import json
import logging
import queue
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, DataError, IntegrityError, connection, connections, transaction
from django.db.models import Max
from django.utils import timezone

from integrations.argocd import ArgoApplication as RemoteApp
from integrations.gitrepo import (
    BlobsRead,
    CommitRecord,
    GitError,
    GitMirror,
    InvalidRef,
    LogEntry,
    raw_side,
    raw_sides,
    validate_repo_path,
)

from .appstate import SHA
from .carried import ImagesValuer, carried_files, carried_value
from .carried_worker import ImagesProcess
from .claims import INGEST_CLAIM, claim_release, row_claim
from .mirrors import mirror_exists, mirror_for
from .models import Application, ArgoInstance, Commit, CommitTouch, Deployment, Environment, GitRepository

logger = logging.getLogger(__name__)
_T = TypeVar("_T")
INGEST_BATCH = 2000
_MAPPER_CACHE = 200_000  # distinct paths remembered by a PathMapper
_CARRIED_CACHE = 200_000  # carried values remembered by blob ids in a first ingest
# A first ingest longer than this many batches values kustomize images in a process of its own
# (inventory.carried_worker); negative: never.
_CARRIED_PROCESS_AFTER = 1
_TRAILER = re.compile(r"^(Promotion-Id|Rollback-Id):[ \t]*(\S+)[ \t]*$", re.MULTILINE | re.IGNORECASE)
# What every trailer holds, found ten times faster than a trailer (the same case rules).
_TRAILER_HINT = re.compile(r"-id:", re.IGNORECASE)
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
    # (branch, path) -> (app, environment id) or None: a history touches the same few files over
    # and over, so each path is matched against the patterns once.
    _cache: dict[tuple[str, str], tuple[str, int | None] | None] = field(default_factory=dict, repr=False)

    @classmethod
    def for_repository(cls, repo: GitRepository, envs: Sequence[Environment]) -> PathMapper:
        matchers: list[tuple[re.Pattern[str], int | None, str | None]] = [
            (_pattern_regex(e.path_pattern, e.name), e.pk, e.branch) for e in envs
        ]
        matchers.append((_pattern_regex(repo.base_path_pattern or "apps/{app}", None), None, None))
        return cls(matchers)

    def map(self, paths: Iterable[str], branch: str) -> dict[tuple[str, int | None], list[str]]:
        out: dict[tuple[str, int | None], list[str]] = {}
        cache = self._cache
        for path in paths:
            key = (branch, path)
            try:
                found = cache[key]
            except KeyError:
                if len(cache) >= _MAPPER_CACHE:
                    cache.clear()
                found = cache[key] = self._match(path, branch)
            if found is not None:
                out.setdefault(found, []).append(path)
        return out

    def _match(self, path: str, branch: str) -> tuple[str, int | None] | None:
        for regex, env_id, env_branch in self.matchers:
            if env_branch is not None and env_branch != branch:
                continue
            match = regex.match(path)
            if match:
                return match.group("app"), env_id
        return None


def portal_ref_of(record: CommitRecord) -> str:
    """Return the Promotion-Id/Rollback-Id trailer or the merged promote/…/rollback/… branch."""
    return _portal_ref(record.message, record.is_merge)


def _portal_ref(message: str, is_merge: bool) -> str:
    trailer = _TRAILER.search(message) if _TRAILER_HINT.search(message) else None
    if trailer:
        return f"{trailer.group(1)}: {trailer.group(2)}"[:200]
    if is_merge:
        branch = _PORTAL_BRANCH.search(message)
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
        if next_seq == 1 and not known and connection.vendor == "postgresql":
            try:
                new_heads, result.commits, result.touches = _first_ingest(
                    repo=repo, mirror=mirror, mapper=mapper, branches=branches, envs={e.pk: e for e in envs}
                )
                branches = []  # all stored
            except (IntegrityError, DataError):
                # Another ingest stored commits of this repository meanwhile (its claim was taken
                # over, the worker was still running): the incremental path skips what it stored.
                # Or a field PostgreSQL refused (a date git printed that is no timestamp): the
                # incremental path parses it in Python and reports it as before.
                next_seq = (Commit.objects.filter(repository=repo).aggregate(m=Max("seq"))["m"] or 0) + 1
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


def _batches(records: Iterator[_T], size: int) -> Iterator[list[_T]]:
    batch: list[_T] = []
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
        _carried_of_batch(mirror, envs, batch, [(sha, apps[a], e, p) for sha, a, e, p in mapped if a in apps])
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


# First ingest: a repository with nothing stored yet ---------------------------------------------

# What text COPY treats specially in a field (NUL cannot occur: git's -z output is split on it).
_COPY_ESCAPES = (("\\", "\\\\"), ("\n", "\\n"), ("\r", "\\r"), ("\t", "\\t"))
_COPY_SPECIAL = re.compile(r"[\\\n\r\t]")
_NULL = "\\N"
# A path that is its own JSON string and COPY text as is (else json.dumps and escape).
_PLAIN_PATHS = re.compile(r'[\x00-\x1f"\\]')


def _copy_text(value: str) -> str:
    if _COPY_SPECIAL.search(value):
        for char, escaped in _COPY_ESCAPES:
            value = value.replace(char, escaped)
    return value


def _paths_json(paths: list[str]) -> str:
    if _PLAIN_PATHS.search("".join(paths)):
        return _copy_text(json.dumps(paths))
    return '["' + '", "'.join(paths) + '"]'


def _first_ingest(
    *,
    repo: GitRepository,
    mirror: GitMirror,
    mapper: PathMapper,
    branches: Sequence[str],
    envs: dict[int, Environment],
) -> tuple[dict[str, str], int, int]:
    """Store the whole history of a repository that has no commits yet, COPYing into the tables.

    Nothing to skip, so no temporary table and no ON CONFLICT: COPY straight into the commit and
    touch tables. One transaction: a worker killed midway leaves nothing, and its retry starts over
    the same way. Another ingest storing the same commits meanwhile (a taken-over claim) makes the
    COPY fail on the unique constraint: IntegrityError, the caller goes the incremental way.

    Pipelined: this thread reads and formats `git log` while a writer thread sends the COPYs and
    PostgreSQL checks constraints and updates indexes (psycopg waits without the GIL), with the
    foreign keys checked per COPY rather than all at the commit, after everything else.
    Returns the ingested heads, commits and touches stored.
    """
    heads: dict[str, str] = {}
    apps: dict[str, Application] = {}
    looked_up: set[str] = set()
    carried_of = _RawCarried(mirror, envs)
    known: list[str] = []
    seq = 1
    commits = touches = 0
    with transaction.atomic():
        connection.ensure_connection()
        raw = connection.connection  # psycopg's, in this atomic block's transaction
        fks = _deferred_fks(raw, (Commit, CommitTouch))
        writer = _CopyWriter(connections[DEFAULT_DB_ALIAS], repo.pk)
        try:
            writer.execute(f"SET CONSTRAINTS {fks} IMMEDIATE" if fks else "")
            for branch in branches:
                head = mirror.branch_head(branch)
                if head is None:
                    continue
                if head in known:
                    heads[branch] = head
                    continue
                held: _Held | None = None  # a batch whose blobs are read while the next one is parsed
                for batch in _batches(
                    mirror.iter_log_entries(ref=f"refs/heads/{branch}", known_shas=known), INGEST_BATCH
                ):
                    rows, touch_rows, names = _format_batch(repo.pk, batch, seq, mapper, branch)
                    if names - looked_up:
                        writer.drain()  # the ORM below uses the connection the writer uses
                        apps.update(_apps_named(repo, names))
                        looked_up |= names
                    # As the incremental path: a name too long to store has no application.
                    touch_rows = [t for t in touch_rows if t[1] in apps]
                    job = carried_of.start(
                        batch, [(i, apps[a], e, p) for i, a, e, p in touch_rows if e is not None]
                    )
                    if held is not None:
                        touches += _submit(writer, carried_of, apps, held)
                    held = (seq, batch, rows, touch_rows, job)
                    seq += len(batch)
                    commits += len(batch)
                if held is not None:
                    touches += _submit(writer, carried_of, apps, held)
                heads[branch] = head
                known.append(head)
            writer.execute(f"SET CONSTRAINTS {fks} DEFERRED" if fks else "")
            writer.close()
        except BaseException:
            writer.abort()  # before the rollback on its connection; this error, not the writer's
            raise
        finally:
            carried_of.close()
    return heads, commits, touches


# A formatted batch waiting for its carried values: first seq, entries, COPY text, touches, blob read.
_Held = tuple[int, list[LogEntry], str, list[tuple[int, str, int | None, list[str]]], "_CarriedJob"]


def _submit(writer: _CopyWriter, carried_of: _RawCarried, apps: dict[str, Application], held: _Held) -> int:
    """Finish a held batch's carried values and hand its rows to the writer; return its touches."""
    seq, batch, rows, touch_rows, job = held
    carried = carried_of.finish(job)
    ids = {name: app.id for name, app in apps.items()}  # `.pk` is a property, 200,000 times
    tails = [
        (
            i,
            f"\t{ids[app]}\t{_NULL if env_id is None else env_id}\t{seq + i}"
            f"\t{_paths_json(paths[:50])}"
            f"\t{_copy_bool(carried.get((batch[i].sha, ids[app], env_id)))}\n",
        )
        for i, app, env_id, paths in touch_rows
    ]
    writer.submit(seq, len(batch), rows, tails)
    return len(tails)


def _format_batch(
    repo_id: int, batch: list[LogEntry], first_seq: int, mapper: PathMapper, branch: str
) -> tuple[str, list[tuple[int, str, int | None, list[str]]], set[str]]:
    """COPY text of a batch's commits, and its touches as (index in batch, app, environment, paths)."""
    fields: list[str] = []
    touches: list[tuple[int, str, int | None, list[str]]] = []
    names: set[str] = set()
    repo = str(repo_id)
    add = fields.extend
    for i, entry in enumerate(batch):
        sha, parents, an, ae, ad, cn, _ce, cd, message, paths, _raw = entry
        # %P: the parents' ids, one space between each
        is_merge = " " in parents
        message = message.rstrip("\n")
        add(
            (
                repo,
                sha,
                str(first_seq + i),
                '["' + parents.replace(" ", '", "') + '"]' if parents else "[]",
                an[:200],
                ae[:200],
                ad,
                cn[:200],
                cd,
                message,
                "t" if is_merge else "f",
                _portal_ref(message, is_merge),
            )
        )
        if paths:
            for (app, env_id), app_paths in mapper.map(paths, branch).items():
                touches.append((i, app, env_id, app_paths))
                names.add(app)
    # All fields joined by NUL (never in git's fields) and escaped at once, then cut back into rows.
    parts = _copy_text("\x00".join(fields)).split("\x00") if fields else []
    rows = "\n".join(map("\t".join, zip(*[iter(parts)] * len(COMMIT_COLUMNS), strict=True)))
    return rows + "\n", touches, names


def _apps_named(repo: GitRepository, names: set[str]) -> dict[str, Application]:
    apps = {a.name: a for a in Application.objects.filter(name__in=names)}
    missing = sorted(names - set(apps))
    if missing:
        # Apps are discovered from the repository layout; the poller fills in their project.
        Application.objects.bulk_create(
            [Application(name=n[:200], project="", repository=repo) for n in missing], ignore_conflicts=True
        )
        apps = {a.name: a for a in Application.objects.filter(name__in=names)}
    return apps


def _copy_bool(value: bool | None) -> str:
    return _NULL if value is None else ("t" if value else "f")


def _deferred_fks(raw: Any, models: Sequence[Any]) -> str:
    """The quoted names of the models' foreign keys that are checked at commit (Django's default)."""
    with raw.cursor() as cursor:
        cursor.execute(
            "SELECT conname FROM pg_constraint WHERE contype = 'f' AND condeferred"
            " AND conrelid = ANY(%s::regclass[]) ORDER BY conname",
            [[m._meta.db_table for m in models]],
        )
        return ", ".join(connection.ops.quote_name(name) for (name,) in cursor.fetchall())


_Job = tuple[int, int, str, list[tuple[int, str]]]  # first seq, commits, their COPY text, touch tails


def _columns(model: Any, fields: Sequence[str], quote: Any) -> str:
    return ", ".join(quote(model._meta.get_field(f).column) for f in fields)


class _CopyWriter:
    """A thread that runs the COPYs of `_first_ingest` in order, on its connection.

    The caller does not use the connection while the writer may (`drain` first). The first error
    stops the writer; it is raised in the caller at its next `submit`, `drain` or `close`.
    """

    _COMMITS = "COPY {table} ({columns}) FROM STDIN"
    _IDS = "SELECT seq, id FROM {table} WHERE repository_id = %s AND seq >= %s AND seq < %s"

    def __init__(self, wrapper: Any, repo_id: int) -> None:
        self._wrapper = wrapper  # Django's connection of the calling thread
        self._raw = wrapper.connection
        self._repo_id = repo_id
        quote = wrapper.ops.quote_name
        commit_table, touch_table = quote(Commit._meta.db_table), quote(CommitTouch._meta.db_table)
        self._copy_commits = self._COMMITS.format(
            table=commit_table, columns=_columns(Commit, COMMIT_COLUMNS, quote)
        )
        self._copy_touches = self._COMMITS.format(
            table=touch_table, columns=_columns(CommitTouch, TOUCH_COLUMNS, quote)
        )
        self._ids = self._IDS.format(table=commit_table)
        self._jobs: queue.Queue[_Job | str | None] = queue.Queue(maxsize=4)
        self._error: BaseException | None = None
        self._aborted = False
        self._thread = threading.Thread(target=self._run, name="ingest-copy", daemon=True)
        self._thread.start()

    def submit(self, first_seq: int, count: int, rows: str, tails: list[tuple[int, str]]) -> None:
        self._check()
        self._jobs.put((first_seq, count, rows, tails))

    def execute(self, sql: str) -> None:
        if sql:
            self._check()
            self._jobs.put(sql)

    def drain(self) -> None:
        self._jobs.join()
        self._check()

    def close(self) -> None:
        if self._thread.is_alive():
            self._jobs.put(None)
            self._thread.join()
        self._check()

    def abort(self) -> None:
        """Skip the jobs not started, wait for the one running and forget its error."""
        self._aborted = True
        if self._thread.is_alive():
            self._jobs.put(None)
            self._thread.join()
        self._error = None

    def _check(self) -> None:
        if self._error is not None:
            error, self._error = self._error, None
            with self._wrapper.wrap_database_errors:  # psycopg's errors as Django's (IntegrityError)
                raise error

    def _run(self) -> None:
        while True:
            job = self._jobs.get()
            try:
                if job is None:
                    return
                if self._error is None and not self._aborted:
                    self._do(job)
            except BaseException as exc:
                self._error = exc
            finally:
                self._jobs.task_done()

    def _do(self, job: _Job | str) -> None:
        with self._raw.cursor() as cursor:
            if isinstance(job, str):
                cursor.execute(job)
                return
            first_seq, count, rows, tails = job
            with cursor.copy(self._copy_commits) as copy:
                copy.write(rows.encode())
            if not tails:
                return
            # The ids the table gave the commits, by seq (its unique index); no RETURNING on COPY.
            cursor.execute(self._ids, [self._repo_id, first_seq, first_seq + count])
            ids = {seq - first_seq: pk for seq, pk in cursor.fetchall()}
            with cursor.copy(self._copy_touches) as copy:
                copy.write("".join([f"{ids[i]}{tail}" for i, tail in tails]).encode())


def _carried_of_batch(
    mirror: GitMirror,
    envs: dict[int, Environment],
    batch: list[CommitRecord],
    touches: list[tuple[str, int, int | None, list[str]]],
) -> dict[tuple[str, int, int | None], bool]:
    parents = {r.sha: (r.parents[0] if r.parents else None) for r in batch}
    by_id = {a.pk: a for a in Application.objects.filter(pk__in={t[1] for t in touches if t[2] is not None})}
    return _carried(mirror, envs, parents, touches, by_id)


def _carried(
    mirror: GitMirror,
    envs: dict[int, Environment],
    parents: dict[str, str | None],
    touches: list[tuple[str, int, int | None, list[str]]],
    by_id: dict[int, Application],
) -> dict[tuple[str, int, int | None], bool]:
    """Tell, per overlay touch, whether the commit changed what a promotion copies (inventory.carried).

    A touch that changed none of the carried files carries nothing without a read; the others
    compare the carried value at the commit and at its first parent, all files of the batch read
    with one `files_at` (two `git cat-file --batch` runs).
    """
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


def application_carried_recompute(*, application: Application) -> int:
    """Evaluate `CommitTouch.carried` of an app's overlay touches again (its strategy changed).

    What a promotion copies depends on the app's strategy (inventory.carried): touches evaluated
    under another strategy would count the wrong commits as waiting. Without a mirror the touches
    become unevaluated (null: counted). Returns the number of touches whose value changed.
    """
    repo = application.repository
    rows = list(
        CommitTouch.objects.filter(application=application, environment__isnull=False).values_list(
            "pk", "commit__sha", "commit__parents", "environment_id", "paths", "carried"
        )
    )
    if not rows:
        return 0
    envs = {e.pk: e for e in Environment.objects.filter(pk__in={r[3] for r in rows})}
    values: dict[tuple[str, int, int | None], bool] = {}
    if repo is not None and mirror_exists(repo):
        parents = {sha: (ps[0] if ps else None) for _, sha, ps, _, _, _ in rows}
        touches: list[tuple[str, int, int | None, list[str]]] = [
            (sha, application.pk, env_id, paths) for _, sha, _, env_id, paths, _ in rows
        ]
        values = _carried(mirror_for(repo), envs, parents, touches, {application.pk: application})
    changed = []
    for pk, sha, _, env_id, _, before in rows:
        after = values.get((sha, application.pk, env_id))
        if after != before:
            changed.append(CommitTouch(pk=pk, carried=after))
    CommitTouch.objects.bulk_update(changed, ["carried"], batch_size=1000)
    return len(changed)


_UNCHANGED = ""  # a carried file the commit did not change: the same text on both sides


def _images_process(mirror: GitMirror) -> ImagesProcess | None:
    """Start the kustomize-images values process (None: it could not start; values taken here)."""
    try:
        return ImagesProcess(mirror.blob_reader(), _CARRIED_CACHE, cwd=str(settings.BASE_DIR))
    except (OSError, EOFError):
        logger.warning("ingest: the carried-values process did not start; values taken in the ingest")
        return None


@dataclass
class _CarriedJob:
    """One batch between `_RawCarried.start` and `finish`."""

    out: dict[tuple[str, int, int | None], bool] = field(default_factory=dict)
    # kustomize-images touches: (sha, app, environment), the blob before and after
    images: list[tuple[tuple[str, int, int | None], str | None, str | None]] = field(default_factory=list)
    # other rules: sha, app, environment, the carried files' blobs before and after
    pending: list[tuple[str, Application, Environment, tuple[str | None, ...], tuple[str | None, ...]]] = (
        field(default_factory=list)
    )
    fallback: list[tuple[str, int, int | None, list[str]]] = field(default_factory=list)
    parents: dict[str, str | None] = field(default_factory=dict)
    by_id: dict[int, Application] = field(default_factory=dict)
    read: BlobsRead | None = None
    by_process: bool = False  # its images were handed to the values process


class _RawCarried:
    """`_carried` for the first ingest, from the blob ids `git log --raw` printed with the paths.

    The same decision as `_carried` (the carried value at the commit and at its first parent,
    `inventory.carried.carried_value`), without reading trees: a file's text on each side is the
    blob the raw line names, or None where `files_at` would give None (absent, a symlink or
    submodule, an unsafe path, too large). A carried file the commit did not change has the same
    text on both sides; every strategy compares the carried files position by position (or reads
    only its one file, which then changed), so it is read as one constant on both sides. Values are
    cached by the blob ids (the new blob of a commit is the old one of the next change), and the
    blobs not cached are read each once, by one `git cat-file --batch` process for the whole ingest.

    The kustomize-images rule (one file, its value a function of the text alone) has its own
    cache by blob id, of comparable values instead of digests (`inventory.carried.images_value`):
    the same blob on both sides (a mode change) carries nothing without a read, and a text whose
    lines around its `images:` block are those of a text read before is valued from the block
    alone (`images_value_in_frame`).
    """

    def __init__(self, mirror: GitMirror, envs: dict[int, Environment]) -> None:
        self._mirror = mirror
        self._envs = envs
        # (app, environment) -> its carried files, and the one file when it is a kustomize-images app.
        self._specs: dict[tuple[int, int], tuple[list[str], str | None, bool]] = {}
        self._safe: dict[str, bool] = {}
        self._values: dict[tuple[int, int, tuple[str | None, ...]], str] = {}
        self._images = ImagesValuer(_CARRIED_CACHE)  # kustomize-images values by blob id
        # From the batch `_CARRIED_PROCESS_AFTER` on, the kustomize-images values are taken in a
        # process of their own (a small history never starts one); None: here, or it failed.
        self._process: ImagesProcess | None = None
        self._batches = 0
        # A batch's blobs are read by git while this thread parses the next batch (`start`, then
        # `finish`); `_reading` is what the batch before asked for, `_started` its read.
        self._reading: set[str] = set()
        self._started: list[BlobsRead] = []

    def start(
        self, batch: list[LogEntry], touches: list[tuple[int, Application, int | None, list[str]]]
    ) -> _CarriedJob:
        """Sort a batch's touches and start reading the blobs they need (`finish` decides)."""
        job = _CarriedJob()
        out, images, pending = job.out, job.images, job.pending
        envs, specs = self._envs, self._specs
        for i, app, env_id, paths in touches:
            entry = batch[i]
            env = envs.get(env_id or 0)
            if env is None:
                continue
            spec = specs.get((app.id, env.id)) or self._spec(app, env)
            key = (entry.sha, app.id, env.id)
            single = spec[1]
            if single is not None:
                raw = entry.raw
                line = raw.get(single) if raw is not None else None
                if single not in paths:
                    out[key] = False
                elif not entry.parents:
                    out[key] = True
                elif line is None:
                    job.parents[entry.sha] = entry.parents.split()[0]
                    job.fallback.append((entry.sha, app.id, env.id, paths))
                    job.by_id[app.id] = app
                elif not spec[2]:
                    out[key] = False  # an unsafe path reads as missing on both sides (`files_at`)
                else:
                    old, new = raw_sides(line)
                    if old == new:
                        out[key] = False  # the same text, or none, on both sides
                    else:
                        images.append((key, old, new))
                continue
            files = spec[0]
            changed = set(files).intersection(paths)
            if not changed:
                out[key] = False
            elif not entry.parents:
                out[key] = True
            elif entry.raw is None or not changed.issubset(entry.raw):
                job.parents[entry.sha] = entry.parents.split()[0]
                job.fallback.append((entry.sha, app.id, env.id, paths))
                job.by_id[app.id] = app
            else:
                raw = entry.raw
                old_side = tuple(self._side(raw, f, False) if f in changed else _UNCHANGED for f in files)
                new_side = tuple(self._side(raw, f, True) if f in changed else _UNCHANGED for f in files)
                pending.append((entry.sha, app, env, old_side, new_side))
        if len(self._values) + 2 * len(pending) > _CARRIED_CACHE:
            self._values.clear()
        self._batches += 1
        if self._batches == _CARRIED_PROCESS_AFTER + 1 and _CARRIED_PROCESS_AFTER >= 0:
            self._process = _images_process(self._mirror)
        if self._process is not None and images:
            try:
                self._process.submit([(old, new) for _, old, new in images])
                job.by_process = True
            except EOFError:
                self._process_failed()
        if not job.by_process:
            self._images.make_room(len(images))
        # Each blob is read once: not the ones valued already, nor those the batch before reads.
        wanted = self._needed(job, {}) - self._reading
        self._reading = wanted
        job.read = self._read(wanted)
        return job

    def finish(self, job: _CarriedJob) -> dict[tuple[str, int, int | None], bool]:
        """Per touch of the batch `start` was given: whether the commit changed what is carried."""
        out = job.out
        texts = self._texts(job.read)
        if texts is not None:
            # Blobs neither valued nor read (a cache cleared meanwhile, a read that failed before).
            missing = self._needed(job, texts)
            if missing:
                more = self._texts(self._read(missing))
                texts = None if more is None else {**texts, **more}
        if texts is None:  # as `_carried` when `files_at` fails: nothing reads, nothing carried
            out.update((key, False) for key, _, _ in job.images)
            out.update(((sha, app.id, env.id), False) for sha, app, env, _, _ in job.pending)
        else:
            if not job.by_process:
                pairs = [(old, new) for _, old, new in job.images]
                out.update(
                    zip([key for key, _, _ in job.images], self._images.changed(pairs, texts), strict=True)
                )
            for sha, app, env, old_side, new_side in job.pending:
                before = self._value(app, env, old_side, texts)
                out[(sha, app.id, env.id)] = before != self._value(app, env, new_side, texts)
        if job.by_process:
            out.update(self._answer(job))
        if job.fallback:
            out.update(_carried(self._mirror, self._envs, job.parents, job.fallback, job.by_id))
        return out

    def _answer(self, job: _CarriedJob) -> dict[tuple[str, int, int | None], bool]:
        """The kustomize-images values the process took for the job (or here, if it is gone)."""
        keys = [key for key, _, _ in job.images]
        try:
            if self._process is None:  # it ended after this job was handed to it
                raise EOFError
            answer = self._process.answer()
        except EOFError:
            self._process_failed()
            pairs = [(old, new) for _, old, new in job.images]
            self._images.make_room(len(pairs))
            texts = self._texts(self._read(self._images.needed(pairs)))
            if texts is None:
                return dict.fromkeys(keys, False)
            return dict(zip(keys, self._images.changed(pairs, texts), strict=True))
        if answer is None:  # git could not read the blobs: as when `files_at` fails, nothing carried
            return dict.fromkeys(keys, False)
        return {key: bool(bit) for key, bit in zip(keys, answer, strict=True)}

    def _process_failed(self) -> None:
        if self._process is not None:
            logger.warning("ingest: the carried-values process ended; values taken in the ingest")
            self._process.close()
            self._process = None

    def close(self) -> None:
        """End the reads not finished (an ingest that stopped midway) and the values process."""
        for read in self._started:
            read.abandon()
        self._started.clear()
        if self._process is not None:
            self._process.close()
            self._process = None

    def _needed(self, job: _CarriedJob, texts: dict[str, str | None]) -> set[str]:
        """The blobs the job's values need that are neither valued already nor in `texts`."""
        wanted = (
            set()
            if job.by_process
            else self._images.needed([(old, new) for _, old, new in job.images], texts)
        )
        wanted.update(
            blob
            for _, app, env, old_side, new_side in job.pending
            for side in (old_side, new_side)
            if (app.id, env.id, side) not in self._values
            for blob in side
            if blob and blob not in texts
        )
        return wanted

    def _read(self, blobs: set[str]) -> BlobsRead | None:
        """Start reading blobs (None: git failed to start; `_texts` reads that as a failed read)."""
        try:
            read = self._mirror.blobs_start(blobs)
        except GitError:
            return None
        self._started.append(read)
        return read

    def _texts(self, read: BlobsRead | None) -> dict[str, str | None] | None:
        """The texts of a read's blobs (None: not readable as `files_at` would), or None when git failed."""
        if read is None:
            return None
        if read in self._started:
            self._started.remove(read)
        try:
            return {
                oid: (None if data is None else data.decode("utf-8", "replace"))
                for oid, data in read().items()
            }
        except GitError:
            return None

    def _spec(self, app: Application, env: Environment) -> tuple[list[str], str | None, bool]:
        """The carried files, the one file of a kustomize-images app (else None), and whether it is safe."""
        files = carried_files(app, env)
        single = (
            files[0]
            if len(files) == 1 and (app.strategy or "kustomize-images") == "kustomize-images"
            else None
        )
        safe = single is not None and self._is_safe(single)
        spec = self._specs[(app.pk, env.pk)] = (files, single, safe)
        return spec

    def _is_safe(self, path: str) -> bool:
        if path not in self._safe:
            try:
                validate_repo_path(path)
                self._safe[path] = True
            except InvalidRef:
                self._safe[path] = False  # `files_at` reads an unsafe path as missing
        return self._safe[path]

    def _side(self, raw: dict[str, str], path: str, after: bool) -> str | None:
        return raw_side(raw[path], after) if self._is_safe(path) else None

    def _value(
        self,
        app: Application,
        env: Environment,
        side: tuple[str | None, ...],
        texts: dict[str, str | None],
    ) -> str:
        key = (app.pk, env.pk, side)
        value = self._values.get(key)
        if value is not None:
            return value
        text_of = dict(zip(self._specs[(app.pk, env.pk)][0], side, strict=True))

        def read(path: str) -> str | None:
            blob = text_of.get(path)
            return _UNCHANGED if blob == _UNCHANGED else (texts.get(blob) if blob else None)

        value = self._values[key] = carried_value(app, env, read)
        return value


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
    for repo, shas in _repositories_missing(wanted):
        ahead = _AHEAD.get(repo.pk)
        if ahead is not None:  # started by `repositories_prefetch` in this process: wait for it
            ahead.wait(wait)
            if not _missing(repo, shas):
                continue
        if repository_ingest(repository_id=repo.pk).skipped:
            _wait_for_ingest(repository_id=repo.pk, timeout=wait)


def repositories_refresh(urls: Iterable[str]) -> list[IngestResult]:
    """Fetch and ingest now each known repository among these URLs (with or without .git) that moved.

    The poller runs it while Argo CD answers the list request. One `git ls-remote` per repository
    tells whether a branch it ingests moved (nothing is written when none did); when one did,
    the ingest runs, and a new sync revision in the list is then usually ingested already, so the
    synced app's deployment is judged and stored without waiting on Git. A repository another
    worker is ingesting (claimed) is skipped: the store path waits for it.
    """
    wanted = {url.removesuffix(".git") for url in urls if url}
    if not wanted:
        return []
    results = []
    for repo in GitRepository.objects.order_by("name"):
        if repo.url.removesuffix(".git") not in wanted:
            continue
        heads = dict(repo.ingested_heads or {})
        if heads and mirror_exists(repo):
            try:
                remote = mirror_for(repo).remote_heads()
            except GitError as exc:
                results.append(IngestResult(repository=repo.name, error=str(exc)[:1000]))
                continue
            if all(remote.get(branch, sha) == sha for branch, sha in heads.items()):
                continue  # nothing new on the branches it ingests (a branch gone: the ingest's job)
        results.append(repository_ingest(repository_id=repo.pk))
    return results


# Ingests started ahead by `repositories_prefetch` in this process, by repository id: set when done.
_AHEAD: dict[int, threading.Event] = {}
_AHEAD_LOCK = threading.Lock()


def repositories_prefetch(wanted: Mapping[str, Iterable[str]]) -> list[int]:
    """Start ingesting in the background each repository (by URL) missing one of these commits.

    The watcher calls it as soon as an event names a sync revision the portal has not ingested (an
    operation Running or just finished), and holds the synced apps until it lands
    (`ingest_ahead_running`); `repositories_ingest_for` waits for it rather than fetching again.
    Returns the repositories started (one ingest per repository at a time in this process; the
    row claim keeps other workers out).
    """
    started: list[int] = []
    for repo, _ in _repositories_missing({url: set(shas) for url, shas in wanted.items()}):
        with _AHEAD_LOCK:
            if repo.pk in _AHEAD:
                continue
            done = _AHEAD[repo.pk] = threading.Event()
        threading.Thread(
            target=_ingest_ahead, args=(repo.pk, done), name=f"git-ingest-ahead-{repo.pk}", daemon=True
        ).start()
        started.append(repo.pk)
    return started


def ingest_ahead_running() -> bool:
    """Whether an ingest started by `repositories_prefetch` in this process is still running."""
    return bool(_AHEAD)


def _ingest_ahead(repository_id: int, done: threading.Event) -> None:
    try:
        result = repository_ingest(repository_id=repository_id)
        if result.error:
            logger.warning("ingest ahead of a sync: %s: %s", result.repository, result.error)
    except Exception:  # the store path ingests again (and reports) if this one failed
        logger.exception("ingest ahead of a sync failed (repository %s)", repository_id)
    finally:
        connection.close()
        with _AHEAD_LOCK:
            _AHEAD.pop(repository_id, None)
        done.set()


def _repositories_missing(wanted: Mapping[str, set[str]]) -> list[tuple[GitRepository, set[str]]]:
    """The known repositories (by URL without .git) that lack one of their wanted commits."""
    if not wanted:
        return []
    repos = {r.url.removesuffix(".git"): r for r in GitRepository.objects.all()}
    out = []
    for url, shas in wanted.items():
        repo = repos.get(url.removesuffix(".git"))
        if repo is not None and _missing(repo, shas):
            out.append((repo, shas))
    return out


def _missing(repo: GitRepository, shas: set[str]) -> bool:
    return Commit.objects.filter(repository=repo, sha__in=shas).count() != len(shas)


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
