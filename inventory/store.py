"""Store observed Argo CD apps in one transaction: clusters, environments, apps, their deployments."""

from __future__ import annotations

import dataclasses
import json
import logging
import posixpath
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.db.models import CharField, F, Func, JSONField, Model
from django.utils.dateparse import parse_datetime

from audit.services import audit_event_record
from core.bulkinsert import models_copy_insert
from core.gcscope import bulk_call
from integrations.argocd import (
    ApplicationListTexts,
    ArgoCDClient,
    ArgoCDNotFound,
    ArgoCDPermissionDenied,
    RawApplicationList,
    revision_neutral,
    revision_neutral_proven,
)
from integrations.argocd import ArgoApplication as RemoteApp

from .appstate import (
    NARROW_FIELDS,
    POLLER,
    ROW_FIELDS,
    Placement,
    ValuesSource,
    list_text_hash,
    narrow_change_only,
    narrow_values,
    placement_of,
    row_values,
    state_hash,
    values_source,
)
from .config import INFERRED_ORDER
from .deployments import deployments_record_many
from .ingest import application_carried_recompute, repositories_ingest_for
from .models import Application, ArgoApplication, ArgoInstance, Cluster, Environment, GitRepository
from .ownership import application_pin_resolve, ownership_conflict_of, ownership_conflict_record

logger = logging.getLogger(__name__)


@dataclass
class Observed:
    """What a list (or a burst of watch events) says about an instance's apps, sorted by cost.

    `hashes`: the state hash of every app seen. `to_read`: the apps to read in full (new, or whose
    history, operation or spec may have changed). `narrow`: the apps whose sync revision, sync
    status or health alone moved (a monorepo commit moves every app's sync revision): stored from
    the narrow state in one UPDATE. `relisted`: state unchanged, only the raw list item differs.
    `list_hashes`: the raw list item hashes (a list only; the watch's items differ from the list's).
    """

    hashes: dict[str, str] = field(default_factory=dict)
    to_read: list[str] = field(default_factory=list)  # read in full by apps_read_and_store, in chunks
    narrow: dict[str, RemoteApp] = field(default_factory=dict)
    relisted: dict[str, int] = field(default_factory=dict)  # name -> row id
    list_hashes: dict[str, str] = field(default_factory=dict)
    # Hashes of the proven neutral texts (integrations.argocd.listtexts.revision_neutral) of the decoded items.
    neutral_hashes: dict[str, str] = field(default_factory=dict)
    # Items that differ from the stored one only in their sync revision: name -> (revision, list hash).
    revision_only: dict[str, tuple[str, str]] = field(default_factory=dict)
    rows: dict[str, dict[str, Any]] = field(default_factory=dict)  # stored rows of the changed ones
    # Watched narrow states that came without a sync revision (the stored one was put back): an app
    # read in full is hashed with the revision its full read reports, which is what it then lists.
    revisionless: dict[str, RemoteApp] = field(default_factory=dict)

    def merge(self, other: Observed) -> None:
        """Add another batch of the same list."""
        self.hashes.update(other.hashes)
        self.to_read += other.to_read
        self.narrow.update(other.narrow)
        self.relisted.update(other.relisted)
        self.list_hashes.update(other.list_hashes)
        self.neutral_hashes.update(other.neutral_hashes)
        self.revision_only.update(other.revision_only)
        self.rows.update(other.rows)
        self.revisionless.update(other.revisionless)


_NARROW_ROW = ("id", "name", "state_hash", "hashed_revision", "deleted_at", "is_multi_source", *NARROW_FIELDS)


def existing_apps(
    instance: ArgoInstance, names: Iterable[str] | None = None, *, operation_text: bool = False
) -> dict[str, dict[str, Any]]:
    """Return the stored rows the poller compares with (name → id, hashes, deleted_at, operation).

    `operation_text`: the operation's times come as RFC 3339 UTC text (formatted by PostgreSQL),
    for `operation_moved`: thousands of datetimes cost more to load than the comparison they serve,
    and Argo CD's own text usually matches them as they are.
    """
    rows = ArgoApplication.objects.filter(instance=instance)
    if names is not None:
        rows = rows.filter(name__in=list(names))
    if not operation_text:
        return {r["name"]: dict(r) for r in rows.values(*_EXISTING_ROW)}
    if connection.vendor != "postgresql":
        return {
            r["name"]: {
                **r,
                "operation_started_at": _utc_text(r["operation_started_at"]),
                "operation_finished_at": _utc_text(r["operation_finished_at"]),
            }
            for r in rows.values(*_EXISTING_ROW)
        }
    template = f"to_char(%(expressions)s AT TIME ZONE 'UTC', '{_OPERATION_TIME}')"
    texts = rows.annotate(
        op_started=Func(F("operation_started_at"), template=template, output_field=CharField()),
        op_finished=Func(F("operation_finished_at"), template=template, output_field=CharField()),
    ).values(*_EXISTING_ROW[:-2], "op_started", "op_finished")
    out: dict[str, dict[str, Any]] = {}
    for r in texts:
        r["operation_started_at"], r["operation_finished_at"] = r.pop("op_started"), r.pop("op_finished")
        out[r["name"]] = r
    return out


_OPERATION_TIME = 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'


def _utc_text(value: datetime | None) -> str | None:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ") if value is not None else None


_EXISTING_ROW = (
    "id", "name", "state_hash", "hashed_revision", "list_hash", "deleted_at", "revision",
    "operation_phase", "operation_started_at", "operation_finished_at",
)  # fmt: skip


Listed = tuple[str, str, str]  # list hash, state hash, neutral list hash


def listed_state(instance: ArgoInstance) -> dict[str, Listed | None]:
    """Return every stored app of the instance: name → (list hash, state hash, neutral hash), None when removed.

    What a poll compares its whole list with, in one query of plain tuples (10,000 apps: a few ms,
    where the rows as model dicts took 40): the full rows are read only for the items that changed.
    """
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT name, list_hash, state_hash, list_neutral_hash, deleted_at IS NULL"
            " FROM inventory_argoapplication"
            " WHERE instance_id = %s",
            [instance.pk],
        )
        # 10,000 rows of strings: no collection in the middle of building them (core.gcscope).
        return bulk_call(
            lambda: {
                name: (listed, state, neutral) if live else None
                for name, listed, state, neutral, live in cursor.fetchall()
            }
        )


@dataclass
class ListedCompare:
    """A list compared with the stored apps: what is unchanged, and the changed items decoded."""

    unchanged: dict[str, str]  # name -> stored state hash
    changed: list[tuple[int, dict[str, Any], str, str | None]]  # (index, item, text hash, name)
    neutral_hashes: dict[int, str]  # index -> neutral hash of a changed item whose neutral text is proven
    revision_only: dict[str, tuple[str, str]]  # name -> (sync revision, text hash): nothing else moved
    names: set[str]  # every app listed
    listed: int  # items in the list


def listed_compare(
    *,
    client: ArgoCDClient,
    listing: ApplicationListTexts,
    stored: Mapping[str, Listed | None],
    on_first_change: Callable[[bytes], None] | None = None,
) -> ListedCompare:
    """Hash each item's text; decode only the texts that are not some app's stored list item.

    `stored` is `listed_state(instance)`. An item whose text hashes to the list hash stored for
    an app is that app's item, unchanged since it was stored: nothing of it is decoded or built.
    An item whose text with its sync revision blanked hashes to the app's stored neutral hash
    differs from the stored item only in that revision (a monorepo commit moves every app's):
    its revision is read from the text, nothing else of it is decoded. The rest is decoded.

    `on_first_change` is called with the first text that is no app's stored item, as soon as the
    hashing reaches it (a list with no change never calls it).
    """
    by_hash = {row[0]: name for name, row in stored.items() if row is not None and row[0]}
    unchanged: dict[str, str] = {}
    pending: list[tuple[int, str]] = []
    for index, text in enumerate(listing.texts):
        digest = list_text_hash(text)
        name = by_hash.get(digest)
        # The row's name is where the text's own name was stored; a row renamed since (by hand)
        # would claim another app's text: the name must be in the text.
        if name is not None and b'"' + name.encode() + b'"' in text:
            unchanged[name] = stored[name][1]  # type: ignore[index]
        else:
            if on_first_change is not None and not pending:
                on_first_change(text)
            pending.append((index, digest))
    by_neutral = (
        {row[2]: name for name, row in stored.items() if row is not None and row[2]} if pending else {}
    )
    revision_only: dict[str, tuple[str, str]] = {}
    neutrals: dict[int, tuple[bytes, str]] = {}
    to_decode: list[tuple[int, str]] = []
    for index, digest in pending:
        text = listing.texts[index]
        cut = revision_neutral(text)
        if cut is not None:
            neutral, start, revision = cut
            neutral_hash = list_text_hash(b"%d:" % start + neutral)  # the same text at the same place
            name = by_neutral.get(neutral_hash)
            if name is not None and name not in revision_only and b'"' + name.encode() + b'"' in text:
                revision_only[name] = (revision, digest)
                unchanged[name] = stored[name][1]  # type: ignore[index]
                continue
            neutrals[index] = (neutral, neutral_hash)
        to_decode.append((index, digest))
    decoded = listing.decoded(index for index, _ in to_decode) if to_decode else {}
    if decoded is None:  # a text that is not one complete item: the answer could not be cut exactly
        return listed_compare(
            client=client,
            listing=client.list_texts_redecoded(listing),
            stored=stored,
            on_first_change=on_first_change,
        )
    changed = [
        (index, decoded[index], digest, RawApplicationList.name_of(decoded[index]))
        for index, digest in to_decode
    ]
    neutral_hashes = {
        index: neutral_hash
        for index, (neutral, neutral_hash) in neutrals.items()
        if revision_neutral_proven(decoded[index], neutral)
    }
    names = set(unchanged)
    names.update(name for *_, name in changed if name)
    return ListedCompare(
        unchanged=unchanged,
        changed=changed,
        names=names,
        listed=len(listing.texts),
        neutral_hashes=neutral_hashes,
        revision_only=revision_only,
    )


def listed_apps_observe(
    *,
    client: ArgoCDClient,
    instance: ArgoInstance,
    compared: ListedCompare,
    stored: Mapping[str, Listed | None],
) -> Iterator[Observed]:
    """Parse the changed items of a list (`listed_compare`), then sort them by cost.

    Yields first the new apps and those whose operation moved (a sync: new history to record),
    then the rest: the app that was synced is stored before the fleet whose sync revision the
    same commit moved. The first batch also carries the unchanged apps' hashes.
    """
    changed = compared.changed
    if not changed:
        observed = Observed()
        observed.hashes = dict(compared.unchanged)
        observed.revision_only = dict(compared.revision_only)
        yield observed
        return
    names = [c[3] for c in changed if c[3] is not None and c[3] in stored]
    # A monorepo commit changes every item: the whole table rather than 10,000 names, and the
    # operation times as text, to find the few synced apps among them before the rest.
    existing = existing_apps(
        instance, names=None if len(names) * 2 > len(stored) else names, operation_text=True
    )
    moved = [operation_moved(c[1], _operation_of(existing.get(c[3] or ""))) for c in changed]
    urgent = [c for c, flag in zip(changed, moved, strict=True) if flag]
    rest = [c for c, flag in zip(changed, moved, strict=True) if not flag]
    for number, group in enumerate((urgent, rest)):
        if number and not group:
            continue
        remotes, list_hashes, neutral_hashes = [], {}, {}
        for index, item, digest, _ in group:
            remote = client.parse_list_item(item, index)
            list_hashes[remote.name] = digest
            neutral_hashes[remote.name] = compared.neutral_hashes.get(index, "")
            remotes.append(remote)
        observed = apps_observe(client=client, instance=instance, items=remotes, existing=existing)
        observed.list_hashes = list_hashes
        observed.neutral_hashes = neutral_hashes
        if not number:
            observed.hashes.update(compared.unchanged)
            observed.revision_only = dict(compared.revision_only)
        yield observed


def _operation_of(row: Mapping[str, Any] | None) -> tuple[str, Any, Any] | None:
    if row is None:
        return None
    return row["operation_phase"], row["operation_started_at"], row["operation_finished_at"]


def operation_moved(item: dict[str, Any], stored: tuple[str, Any, Any] | None) -> bool:
    """Tell from a raw (list or watch) app whether its operation differs from the stored one (or it is new).

    `stored` holds the phase and the start and finish times, as datetimes or as the RFC 3339 UTC
    text of `existing_apps(operation_text=True)`.
    """
    if stored is None:
        return True
    status = item.get("status")
    op = status.get("operationState") if isinstance(status, dict) else None
    op = op if isinstance(op, dict) else {}
    phase, started, finished = stored
    try:
        return (
            (op.get("phase") or "") != phase
            or not _same_time(op.get("startedAt"), started)
            or not _same_time(op.get("finishedAt"), finished)
        )
    except (TypeError, ValueError):
        return True  # unreadable here: the typed parse will say why


def _same_time(raw: Any, stored: datetime | str | None) -> bool:
    if isinstance(stored, str):
        if raw == stored or (
            isinstance(raw, str) and stored.endswith(".000000Z") and raw == stored[:-8] + "Z"
        ):
            return True  # Argo CD's usual seconds, as stored: no parsing
        stored = parse_datetime(stored)
    return _time(raw) == stored


def _time(value: Any) -> datetime | None:
    return parse_datetime(value) if value else None


def apps_observe(
    *,
    client: ArgoCDClient,
    instance: ArgoInstance,
    items: Iterable[RemoteApp],
    existing: Mapping[str, Mapping[str, Any]],
) -> Observed:
    """Hash the narrow (list or watch) state; read in full only the apps that need it.

    `existing` maps names to stored rows with `state_hash` and `deleted_at`. A changed app whose
    only differences are NARROW_FIELDS goes to `narrow`; the rest are read in full (the list's
    `fields` drop history and sync.revisions, API.md §5).
    """
    observed = Observed()
    candidates: list[RemoteApp] = []
    for item in items:
        digest = state_hash(item)
        observed.hashes[item.name] = digest
        row = existing.get(item.name)
        if row is not None and row["deleted_at"] is None:
            # A state hash left from before a revision-only list update is the state at another
            # revision: the same hash then says the revision moved back (narrow_change_only stores it).
            if row["state_hash"] == digest and not row.get("hashed_revision"):
                observed.relisted[item.name] = row["id"]
                continue
            candidates.append(item)
        else:
            observed.to_read.append(item.name)
    if candidates:
        stored = {
            r["name"]: r
            for r in ArgoApplication.objects.filter(
                instance=instance, name__in=[c.name for c in candidates]
            ).values(*_NARROW_ROW, "out_of_sync_since", "degraded_since")
        }
        for item in candidates:
            row = stored.get(item.name)
            if row is not None and narrow_change_only(item, row):
                observed.narrow[item.name] = item
                observed.rows[item.name] = row
            else:
                observed.to_read.append(item.name)
    return observed


def full_reads(client: ArgoCDClient, names: list[str]) -> dict[str, RemoteApp]:
    """GET these apps in full (a few at a time); apps deleted meanwhile are left out."""
    at_once = settings.ARGOCD_FULL_READS_AT_ONCE
    if at_once < 2 or len(names) < 2 * at_once:
        fetched = [_full_read(client, name) for name in names]
    else:
        with ThreadPoolExecutor(at_once, thread_name_prefix="argocd-get") as pool:
            fetched = list(pool.map(lambda name: _full_read(client, name), names))
    return {name: remote for name, remote in zip(names, fetched, strict=True) if remote is not None}


def apps_read_and_store(
    *,
    client: ArgoCDClient,
    instance: ArgoInstance,
    observed: Observed,
    cluster_rows: dict[str, Cluster],
    now: datetime,
    chunk: int = 500,
    fleet: int | None = None,
) -> dict[str, Any]:
    """Read the apps of `observed.to_read` in full and store them, `chunk` apps per transaction.

    `fleet`: how many apps the (unfiltered) list had, when called with one: a large share of them
    to read is read from one stream's initial burst (`_streamed_reads`), not a GET each.

    Each chunk is read, its commits ingested, then stored with its deployments under the instance
    lock, and committed: memory stays bounded by one chunk however large the fleet, and the watcher
    is never held up by a whole first poll. A chunk that fails leaves the earlier ones stored
    (their state hash says so: the next poll goes on from there).
    """
    stats: dict[str, Any] = {
        "changed": 0,
        "new": 0,
        "deployments": 0,
        "by_app": Counter(),
        "read": [],
        "timings": Counter(),  # ms spent reading, ingesting Git and storing
    }
    chunks = [observed.to_read[start : start + chunk] for start in range(0, len(observed.to_read), chunk)]
    if _stream_pays(len(observed.to_read), fleet):
        return _chunks_store(
            instance, observed, cluster_rows, now, _streamed_reads(client, observed.to_read, chunk), stats
        )
    at_once = settings.ARGOCD_FULL_READS_AT_ONCE
    if len(observed.to_read) < 2 * at_once:
        reads: Iterator[dict[str, RemoteApp]] = (full_reads(client, names) for names in chunks)
        return _chunks_store(instance, observed, cluster_rows, now, reads, stats)
    # Against a real Argo CD each GET mostly waits on the network and the API server.
    pool = ThreadPoolExecutor(at_once, thread_name_prefix="argocd-get")
    try:
        # The next chunk is read while this one is stored (the database works meanwhile).
        return _chunks_store(instance, observed, cluster_rows, now, _prefetched(pool, client, chunks), stats)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)  # a failed chunk does not wait for the next one's reads


def _stream_pays(to_read: int, fleet: int | None) -> bool:
    # The burst carries the whole fleet (up to the last name wanted): worth it for a first poll or
    # a re-list after an outage, not for a few hundred apps of a large fleet.
    return (
        settings.ARGOCD_STREAM_FULL_READS
        and fleet is not None
        and to_read > settings.ARGOCD_STREAM_FULL_READS_OVER
        and to_read * 4 >= fleet
    )


def _streamed_reads(client: ArgoCDClient, names: list[str], chunk: int) -> Iterator[dict[str, RemoteApp]]:
    """Read many apps in full from one watch stream's initial burst, the rest (if any) by GET.

    A GET per app costs its request and response handling on both sides (a first poll of 10,000
    apps: 10,000 of them); the burst streams them all in one answer, stored a chunk at a time as it
    arrives. An app it did not deliver (deleted meanwhile, a cut stream, an error) is read by GET.
    """
    for part in client.initial_applications(
        names, chunk=chunk, budget_seconds=settings.ARGOCD_STREAM_FULL_READS_SECONDS
    ):
        if part.apps:
            yield part.apps
        if part.failure:
            logger.warning("%s: %d apps left to read one by one", part.failure, len(part.missing))
        for start in range(0, len(part.missing), chunk):
            yield full_reads(client, list(part.missing[start : start + chunk]))


def _prefetched(
    pool: ThreadPoolExecutor, client: ArgoCDClient, chunks: list[list[str]]
) -> Iterator[dict[str, RemoteApp]]:
    def submit(names: list[str]) -> list[tuple[str, Future[RemoteApp | None]]]:
        return [(name, pool.submit(_full_read, client, name)) for name in names]

    pending = submit(chunks[0]) if chunks else []
    for number in range(len(chunks)):
        current, pending = pending, (submit(chunks[number + 1]) if number + 1 < len(chunks) else [])
        done = {name: future.result() for name, future in current}
        yield {name: remote for name, remote in done.items() if remote is not None}


def _chunks_store(
    instance: ArgoInstance,
    observed: Observed,
    cluster_rows: dict[str, Cluster],
    now: datetime,
    reads: Iterable[dict[str, RemoteApp]],
    stats: dict[str, Any],
) -> dict[str, Any]:
    waited = time.monotonic()
    for full in reads:
        stats["timings"]["read"] += int((time.monotonic() - waited) * 1000)
        for name, remote in full.items():
            narrow = observed.revisionless.get(name)
            if narrow is not None:
                observed.hashes[name] = state_hash(
                    dataclasses.replace(narrow, sync_revision=remote.sync_revision)
                )
        started = time.monotonic()
        repositories_ingest_for(instance=instance, full=full)
        ingested = time.monotonic()
        with transaction.atomic():
            instance_lock(instance.pk)
            done = apps_store(
                instance=instance,
                full=full,
                hashes=observed.hashes,
                cluster_rows=cluster_rows,
                now=now,
                list_hashes=observed.list_hashes,
                neutral_hashes=observed.neutral_hashes,
            )
        logger.debug(
            "stored %s app(s) read in full: git ingest %.0f ms, store %.0f ms",
            len(full),
            (ingested - started) * 1000,
            (time.monotonic() - ingested) * 1000,
        )
        for key in ("changed", "new", "deployments", "by_app"):
            stats[key] += done[key]
        stats["read"] += list(full)
        stats["timings"]["ingest"] += int((ingested - started) * 1000)
        stats["timings"]["store"] += int((time.monotonic() - ingested) * 1000)
        waited = time.monotonic()
    return stats


def _full_read(client: ArgoCDClient, name: str) -> RemoteApp | None:
    try:
        return client.get_application(name)
    except (ArgoCDNotFound, ArgoCDPermissionDenied):
        return None  # deleted between list and get (Argo CD hides missing apps behind 403)


def apps_store_narrow(*, observed: Observed, now: datetime) -> int:
    """Store the narrow-only changes (and the relisted apps' raw hashes) in one UPDATE each."""
    updates = [
        {
            "id": observed.rows[name]["id"],
            **narrow_values(remote, observed.rows[name], now),
            "state_hash": observed.hashes[name],
            "hashed_revision": "",
            "list_hash": observed.list_hashes.get(name, ""),
            "list_neutral_hash": observed.neutral_hashes.get(name, ""),
            "last_changed_at": now,
        }
        for name, remote in observed.narrow.items()
    ]
    rows_update(ArgoApplication, updates)
    rows_update(
        ArgoApplication,
        [
            {
                "id": pk,
                "list_hash": observed.list_hashes[name],
                "list_neutral_hash": observed.neutral_hashes.get(name, ""),
            }
            for name, pk in observed.relisted.items()
            if name in observed.list_hashes
        ],
    )
    return len(updates)


def apps_store_revisions(*, instance: ArgoInstance, revisions: Mapping[str, tuple[str, str]]) -> int:
    """Store the revision-only list changes (`ListedCompare.revision_only`): one UPDATE for the fleet.

    Only the sync revision and the list hash move. The state hash stays the one computed with the
    revision before (kept in `hashed_revision`), which `narrow_change_only` puts back.
    """
    if not revisions:
        return 0
    names = list(revisions)
    if connection.vendor != "postgresql":
        for name in names:
            row = ArgoApplication.objects.filter(instance=instance, name=name, deleted_at__isnull=True)
            row.filter(hashed_revision="").update(hashed_revision=F("revision"))
            row.update(revision=revisions[name][0], list_hash=revisions[name][1])
        return len(names)
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE inventory_argoapplication AS t SET revision = v.revision, list_hash = v.list_hash,"
            " hashed_revision = CASE WHEN t.hashed_revision = '' THEN t.revision ELSE t.hashed_revision END"
            " FROM unnest(%s::text[], %s::text[], %s::text[]) AS v(name, revision, list_hash)"
            " WHERE t.instance_id = %s AND t.name = v.name AND t.deleted_at IS NULL",
            [names, [revisions[n][0] for n in names], [revisions[n][1] for n in names], instance.pk],
        )
        return cursor.rowcount


_SQL_TYPES = {
    "id": "bigint",
    "out_of_sync_since": "timestamptz",
    "degraded_since": "timestamptz",
    "last_changed_at": "timestamptz",
}


def rows_update(model: type[Model], updates: list[dict[str, Any]]) -> None:
    """Set different values on many rows by id: one `UPDATE … FROM unnest(…)` on PostgreSQL.

    Every dict has the same keys, `id` among them; the other keys are text, timestamp (see
    _SQL_TYPES) or JSON columns. Django's bulk_update builds a CASE per column and row, quadratic at fleet size.
    """
    if not updates:
        return
    columns = list(updates[0])
    if connection.vendor != "postgresql":
        for values in updates:
            model._default_manager.filter(pk=values["id"]).update(
                **{c: values[c] for c in columns if c != "id"}
            )
        return
    table = connection.ops.quote_name(model._meta.db_table)
    json_columns = {c for c in columns if isinstance(model._meta.get_field(c), JSONField)}
    sets = ", ".join(f"{connection.ops.quote_name(c)} = v.{c}" for c in columns if c != "id")
    arrays = ", ".join(
        f"%s::{'jsonb' if c in json_columns else _SQL_TYPES.get(c, 'text')}[]" for c in columns
    )
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {table} AS t SET {sets} FROM unnest({arrays}) AS v({', '.join(columns)}) WHERE t.id = v.id",  # noqa: S608 - column names are ours
            [
                [json.dumps(values[c]) if c in json_columns else values[c] for values in updates]
                for c in columns
            ],
        )


def instance_lock(instance_id: int) -> None:
    """Serialise the poller's and the watcher's writes for one instance (inside a transaction)."""
    list(ArgoInstance.objects.select_for_update().filter(pk=instance_id).values_list("pk", flat=True))


def clusters_upsert(*, instance: ArgoInstance, clusters: Iterable[Any]) -> dict[str, Cluster]:
    rows = {c.server: c for c in Cluster.objects.filter(instance=instance).select_related("environment")}
    label = instance.cluster_env_label or "env"
    envs: dict[str, Environment] | None = None  # read only when a cluster's environment may be new
    with transaction.atomic():
        for remote in clusters:
            row = rows.get(remote.server)
            env_name = remote.labels.get(label, "")
            stored_env = row.environment if row is not None else None
            if row is not None and (stored_env.name if stored_env is not None else "") == env_name:
                env: Environment | None = stored_env  # unchanged (no environment is named "")
            else:
                envs = envs if envs is not None else {e.name: e for e in Environment.objects.all()}
                env = envs.get(env_name)
            values = {
                "name": (remote.name or remote.server)[:200],
                "labels": dict(remote.labels),
                "environment": env,
                "connection_status": (remote.connection_status or "")[:32],
            }
            if row is None:
                rows[remote.server] = Cluster.objects.create(
                    instance=instance, server=remote.server, **values
                )
            elif any(getattr(row, k) != v for k, v in values.items()):
                for k, v in values.items():
                    setattr(row, k, v)
                row.save(update_fields=list(values))
    return rows


def _environments_for(instance: ArgoInstance, names: set[str]) -> dict[str, Environment]:
    envs = {e.name: e for e in Environment.objects.all()}
    missing = sorted(n for n in names if n and n not in envs)
    if missing and instance.mapping.get("infer_environments", not envs):
        for name in missing:
            order = INFERRED_ORDER.index(name) * 10 if name in INFERRED_ORDER else 1000 + len(envs)
            envs[name] = Environment.objects.create(
                name=name[:64], order=order, production_like=name in ("prod", "production")
            )
        audit_event_record(
            action="inventory.environments_inferred",
            target_type="environment",
            target_id=",".join(missing),
            target_label=", ".join(missing),
            after={"environments": missing},
            message=f"environments inferred from Argo CD labels: {', '.join(missing)}",
            system_name=POLLER,
        )
    return envs


def _applications_for(
    placements: dict[str, Placement], projects: dict[str, str], mapping: dict[str, Any]
) -> dict[str, Application]:
    """Return the portal apps the placements name, created (and pinned) when new."""
    names = {p.app for p in placements.values()}
    apps = {a.name: a for a in Application.objects.filter(name__in=names)}
    default_repo = None
    repo_name = mapping.get("default_repository")
    if repo_name:
        default_repo = GitRepository.objects.filter(name=repo_name).first()
    if default_repo is None:
        default_repo = GitRepository.objects.order_by("pk").first()
    rules = mapping.get("ownership") or []
    create = []
    for placement in placements.values():
        if placement.app not in apps:
            app = Application(name=placement.app[:200], project="", repository=default_repo)
            application_pin_resolve(app=app, rules=rules)  # a glob pins a new name before anyone claims it
            apps[placement.app] = app
            create.append(app)
    if create:
        Application.objects.bulk_create(create, ignore_conflicts=True)
        apps.update({a.name: a for a in Application.objects.filter(name__in=[a.name for a in create])})
    # An app nobody pinned is pinned by the first Argo CD app seen (apps first seen in Git too).
    fix = {}
    for argo_name, placement in placements.items():
        app = apps[placement.app]
        if application_pin_resolve(app=app, rules=rules, first_project=projects.get(argo_name, "")):
            fix[app.pk] = app
    if fix:
        # At a first poll that is every app Git made (the ingest creates them unpinned).
        rows_update(
            Application,
            [
                {
                    "id": a.pk,
                    "project": a.project,
                    "argocd_projects": a.argocd_projects,
                    "argocd_instances": a.argocd_instances,
                    "pin_source": a.pin_source,
                }
                for a in fix.values()
            ],
        )
    return apps


def _strategies_discover(
    *,
    found: Mapping[Application | None, ValuesSource | None],
    envs: Mapping[str | None, Environment | None],
    placements: Mapping[str, Placement],
    configured: set[str],
) -> None:
    """Promote an app Argo CD renders from Helm values in the GitOps repository by `helm-values`.

    An app the configuration lists keeps its configured strategy; an app left at the default
    (`kustomize-images` without options) whose Argo CD app is a multi-source Helm app reading a values
    file under the environment's directory (`path_pattern`) copies that file's `image.tag`. The
    commits already ingested are judged again by the new rule (`CommitTouch.carried`).
    """
    env_dirs: dict[str, list[str]] = {}
    for placement in placements.values():
        env = envs.get(placement.env)
        if env is not None:
            env_dirs.setdefault(placement.app, []).append(env.app_path(placement.app).strip("/"))
    for app, values in found.items():
        if app is None or values is None or app.name in configured:
            continue
        if app.strategy not in ("", "kustomize-images") or app.strategy_options:
            continue
        directory = values.directory.strip("/")
        if directory not in env_dirs.get(app.name, []):
            continue  # the values file is not where the portal's environments put the app
        options = {"file": posixpath.basename(values.files[0]), "paths": ["image.tag"]}
        before = {"strategy": app.strategy, "strategy_options": app.strategy_options}
        Application.objects.filter(pk=app.pk).update(strategy="helm-values", strategy_options=options)
        app.strategy, app.strategy_options = "helm-values", options
        recomputed = application_carried_recompute(application=app)
        audit_event_record(
            action="inventory.strategy_discovered",
            target_type="application",
            target_id=app.pk,
            target_label=app.name,
            app=app.name,
            project=app.project,
            before=before,
            after={"strategy": "helm-values", "strategy_options": options, "values_file": values.files[0]},
            message=(
                f"{app.name}: Argo CD renders it from Helm values in {values.files[0]}; "
                f"promotions copy {', '.join(options['paths'])} ({recomputed} commit touch(es) judged again)"
            ),
            system_name=POLLER,
        )


def apps_mark_removed(
    *, instance: ArgoInstance, names: list[str], now: datetime, system: str = POLLER
) -> int:
    """Soft-delete Argo CD apps no longer reported (history stays) and record it."""
    gone = list(
        ArgoApplication.objects.filter(
            instance=instance, name__in=names, deleted_at__isnull=True
        ).values_list("name", flat=True)
    )
    if not gone:
        return 0
    ArgoApplication.objects.filter(instance=instance, name__in=gone).update(deleted_at=now)
    audit_event_record(
        action="argocd.applications_removed",
        target_type="argo_instance",
        target_id=instance.pk,
        target_label=instance.name,
        after={"applications": sorted(gone)[:200]},
        message=f"{len(gone)} application(s) no longer reported by {instance.name}",
        system_name=system,
    )
    return len(gone)


def apps_store(
    *,
    instance: ArgoInstance,
    full: dict[str, RemoteApp],
    hashes: dict[str, str],
    cluster_rows: dict[str, Cluster],
    now: datetime,
    list_hashes: Mapping[str, str] | None = None,
    neutral_hashes: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Upsert the rows of fully read apps and record their new history entries (in a transaction)."""
    mapping = instance.mapping or {}
    placements = {name: placement_of(remote, mapping, cluster_rows) for name, remote in full.items()}
    envs = _environments_for(instance, {p.env for p in placements.values() if p.env})
    apps = _applications_for(placements, {n: r.project for n, r in full.items()}, mapping)
    clusters_by_name = {c.name: c for c in cluster_rows.values()}
    repo_urls = set(GitRepository.objects.values_list("url", flat=True))
    repo_urls |= {u.removesuffix(".git") for u in repo_urls}

    rows = {r.name: r for r in ArgoApplication.objects.filter(instance=instance, name__in=list(full))}
    new_rows, changed_rows = [], []
    conflicted: list[tuple[str, Application]] = []
    for name, remote in full.items():
        placement = placements[name]
        values = row_values(remote, placement, repo_urls, now)
        app = apps[placement.app]
        conflict = ownership_conflict_of(app=app, project=remote.project, instance=instance.name)
        values["application"] = None if conflict else app
        values["claimed_app"] = placement.app[:200]
        values["ownership_conflict"] = conflict
        values["environment"] = envs.get(placement.env or "")
        values["cluster"] = clusters_by_name.get(placement.cluster or "")
        values["state_hash"] = hashes[name]
        values["list_hash"] = (list_hashes or {}).get(name, "")
        values["list_neutral_hash"] = (neutral_hashes or {}).get(name, "")
        values["hashed_revision"] = ""
        row = rows.get(name)
        if conflict and (row is None or row.ownership_conflict != conflict):
            conflicted.append((name, app))
        if row is None:
            row = ArgoApplication(
                instance=instance, name=name, first_seen_at=now, last_changed_at=now, **values
            )
            row.out_of_sync_since = now if values["sync_status"] == "OutOfSync" else None
            row.degraded_since = now if values["health_status"] == "Degraded" else None
            new_rows.append(row)
            rows[name] = row
            continue
        if row.sync_status != "OutOfSync" and values["sync_status"] == "OutOfSync":
            row.out_of_sync_since = now
        elif values["sync_status"] != "OutOfSync":
            row.out_of_sync_since = None
        if row.health_status != "Degraded" and values["health_status"] == "Degraded":
            row.degraded_since = now
        elif values["health_status"] != "Degraded":
            row.degraded_since = None
        for key, value in values.items():
            setattr(row, key, value)
        row.last_changed_at = now
        changed_rows.append(row)
    if new_rows:
        models_copy_insert(new_rows)
    if changed_rows:
        ArgoApplication.objects.bulk_update(changed_rows, ROW_FIELDS, batch_size=500)
    for name, app in conflicted:
        ownership_conflict_record(row=rows[name], app=app)
    _strategies_discover(
        found={
            rows[name].application: values_source(remote.sources, repo_urls)
            for name, remote in full.items()
            if remote.is_multi_source and rows[name].application is not None
        },
        envs={p.env: envs.get(p.env or "") for p in placements.values()},
        placements=placements,
        configured=set(mapping.get("configured_apps") or ()),
    )

    # A conflicting Argo CD app's history is no deployment of the app it names.
    recorded = deployments_record_many(
        items=[
            (rows[name], remote.history, remote)
            for name, remote in full.items()
            if remote.history and not rows[name].ownership_conflict
        ],
        written=True,
    )
    return {
        "changed": len(changed_rows),
        "new": len(new_rows),
        "deployments": len(recorded),
        "by_app": Counter(row.argo_app.name for row in recorded),
    }
