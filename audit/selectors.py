"""Reads of the ledger and the change records: keyset pages, export iterators, evidence.

Every read takes a ``scope`` (audit/scope.py; None: everything) and filters by the rows'
project and environment columns; the pages build it from the user's grants (audit/access.py).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from django.db.models import Max, Min, Q, QuerySet

from .filters import AuditFilters
from .models import AuditCheckpoint, AuditEvent, ChangeRecord
from .scope import AuditScope, in_scope, scope_q

EXPORT_BATCH = 2000


def _app_q(app: str) -> Q:
    """Events of one app, including events of several apps (a release train: "a,b")."""
    return Q(app=app) | Q(app__contains=",", app__regex=rf"(^|,){re.escape(app)}(,|$)")


def event_in_scope(event: AuditEvent, scope: AuditScope | None) -> bool:
    """Tell whether a scoped auditor may see the event (by its project and environment columns)."""
    return in_scope(scope, project=event.project, environment=event.environment)


def _event_queryset(filters: AuditFilters, scope: AuditScope | None) -> QuerySet[AuditEvent]:
    qs = AuditEvent.objects.in_scope(scope)
    if filters.since is not None:
        qs = qs.filter(created_at__gte=filters.since)
    if filters.until is not None:
        qs = qs.filter(created_at__lt=filters.until)
    if filters.env:
        qs = qs.filter(environment=filters.env)
    if filters.app:
        qs = qs.filter(_app_q(filters.app))
    if filters.actor:
        qs = qs.filter(actor_name__iexact=filters.actor)
    if filters.action:
        action = filters.action.rstrip(".*")
        qs = qs.filter(Q(action=action) | Q(action__startswith=f"{action}."))
    if filters.text:
        qs = qs.filter(
            Q(message__icontains=filters.text)
            | Q(target_label__icontains=filters.text)
            | Q(target_id=filters.text)
            | Q(pr_url__icontains=filters.text)
            | Q(correlation_id=filters.text)
        )
    return qs


@dataclass
class EventPage:
    rows: list[AuditEvent]
    next_before: int | None  # cursor: show events with a smaller sequence
    newer_after: int | None  # cursor back: events with a larger sequence exist


def audit_event_list(
    *, filters: AuditFilters, scope: AuditScope | None, before: int | None = None, limit: int = 50
) -> EventPage:
    """Return one page of events, newest first, by keyset on the sequence (no OFFSET, two queries)."""
    qs = _event_queryset(filters, scope)
    page_qs = qs.filter(sequence__lt=before) if before else qs
    rows = list(page_qs.order_by("-sequence")[: limit + 1])
    next_before = rows[limit - 1].sequence if len(rows) > limit else None
    rows = rows[:limit]
    newer = before is not None and qs.filter(sequence__gte=before).exists()
    return EventPage(rows, next_before, before if newer else None)


def audit_event_get(*, sequence: int, scope: AuditScope | None) -> AuditEvent | None:
    event = AuditEvent.objects.filter(sequence=sequence).first()
    return event if event is not None and event_in_scope(event, scope) else None


def audit_event_neighbours(event: AuditEvent) -> tuple[AuditEvent | None, AuditEvent | None]:
    """Return the chain's previous and next events (for the detail page's links)."""
    prev = AuditEvent.objects.filter(sequence=event.sequence - 1).only("sequence", "hash").first()
    nxt = AuditEvent.objects.filter(sequence=event.sequence + 1).only("sequence", "prev_hash").first()
    return prev, nxt


@dataclass
class ExportPlan:
    """The events one export covers, fixed when it starts."""

    filters: AuditFilters
    scope: AuditScope | None
    low: int | None  # first sequence in range (None: empty)
    high: int | None  # last sequence in range
    contiguous: bool

    @property
    def empty(self) -> bool:
        return self.low is None or self.high is None or self.low > self.high


def audit_export_plan(
    *, filters: AuditFilters, scope: AuditScope | None, head: int | None = None
) -> ExportPlan:
    """Fix the sequence range of an export.

    A period becomes the sequence range of the events created in it, so an unfiltered period is a
    contiguous chain segment that verifies link by link; ``head`` caps it at the chain head when the
    export started (events appended while it streams are left for the next export).
    """
    period = AuditEvent.objects.all()
    if filters.since is not None:
        period = period.filter(created_at__gte=filters.since)
    if filters.until is not None:
        period = period.filter(created_at__lt=filters.until)
    if head is not None:
        period = period.filter(sequence__lte=head)
    bounds = period.aggregate(low=Min("sequence"), high=Max("sequence"))
    contiguous = not filters.narrows_events and scope is None
    return ExportPlan(filters, scope, bounds["low"], bounds["high"], contiguous)


def audit_export_events(plan: ExportPlan, *, batch: int = EXPORT_BATCH) -> Iterator[AuditEvent]:
    """Yield the plan's events in sequence order, by keyset batches (memory stays flat)."""
    if plan.empty:
        return
    period_free = replace(plan.filters, since=None, until=None)
    qs = _event_queryset(period_free, plan.scope).filter(sequence__gte=plan.low, sequence__lte=plan.high)
    last = plan.low - 1  # type: ignore[operator]
    while True:
        count = 0
        for event in qs.filter(sequence__gt=last).order_by("sequence")[:batch].iterator(chunk_size=batch):
            count += 1
            last = event.sequence
            yield event
        if count < batch:
            return


def audit_export_copy_query(
    plan: ExportPlan, *, fields: tuple[str, ...], annotations: dict[str, Any]
) -> tuple[str, tuple[Any, ...]] | None:
    """The SQL (and parameters) of the plan's events as ``sequence``, ``fields`` then ``annotations``.

    One statement for the whole range, meant to be wrapped in ``COPY (...) TO STDOUT``: the database
    streams while the client writes (keyset batches wait for each other). None when the plan is empty.
    """
    if plan.empty:
        return None
    period_free = replace(plan.filters, since=None, until=None)
    qs = _event_queryset(period_free, plan.scope).filter(sequence__gte=plan.low, sequence__lte=plan.high)
    query = (
        qs.annotate(**annotations).order_by("sequence").values_list("sequence", *fields, *annotations).query
    )
    sql, params = query.sql_with_params()
    return sql, tuple(params)


def audit_chain_walk(*, batch: int = EXPORT_BATCH) -> Iterator[AuditEvent]:
    """Yield the whole ledger in sequence order, by keyset batches."""
    last = 0
    while True:
        count = 0
        for event in (
            AuditEvent.objects.filter(sequence__gt=last)
            .order_by("sequence")[:batch]
            .iterator(chunk_size=batch)
        ):
            count += 1
            last = event.sequence
            yield event
        if count < batch:
            return


# --- change records ----------------------------------------------------------------------------------


def _change_queryset(filters: AuditFilters, scope: AuditScope | None) -> QuerySet[ChangeRecord]:
    qs = ChangeRecord.objects.filter(scope_q(scope))
    if filters.since is not None:
        qs = qs.filter(occurred_at__gte=filters.since)
    if filters.until is not None:
        qs = qs.filter(occurred_at__lt=filters.until)
    if filters.env:
        qs = qs.filter(environment=filters.env)
    if filters.app:
        qs = qs.filter(app=filters.app)
    if filters.actor:
        qs = qs.filter(
            Q(requester_name__iexact=filters.actor)
            | Q(merged_by__iexact=filters.actor)
            | Q(approvers__contains=[filters.actor])
        )
    if filters.action:
        kind = filters.action.split(".")[0]
        if kind in ("promotion", "rollback", "out_of_band"):
            qs = qs.filter(kind=kind)
    if filters.text:
        qs = qs.filter(_change_text_q(filters.text))
    return qs


_PR_NUMBER = re.compile(r"^(?:pr\s*)?#?\s*(\d{1,9})$", re.IGNORECASE)


def _change_text_q(text: str) -> Q:
    """Match free text against what an auditor searches by: title, incident, correlation id,
    "PR #12" / "#12" / "12" (the PR number), a SHA prefix (before or after), the justification."""
    sha = text.lower()
    q = (
        Q(title__icontains=text)
        | Q(pr_url__icontains=text)
        | Q(justification__icontains=text)
        | Q(incident__icontains=text)
        | Q(correlation_id__iexact=text)
        | Q(app__iexact=text)
    )
    if re.fullmatch(r"[0-9a-f]{4,64}", sha):
        q |= Q(revision_after__startswith=sha) | Q(revision_before__startswith=sha)
    number = _PR_NUMBER.match(text.strip())
    if number:
        q |= Q(pr_number=int(number.group(1)))
    return q


@dataclass
class ChangePage:
    rows: list[ChangeRecord]
    next_cursor: str | None


def _parse_change_cursor(cursor: str) -> tuple[datetime, int] | None:
    when, _, pk = (cursor or "").rpartition("_")
    try:
        return datetime.fromisoformat(when), int(pk)
    except ValueError:
        return None


def change_record_list(
    *, filters: AuditFilters, scope: AuditScope | None, cursor: str = "", limit: int = 50
) -> ChangePage:
    """Return one page of change records, newest first, by keyset on (occurred_at, id)."""
    qs = _change_queryset(filters, scope).order_by("-occurred_at", "-id")
    key = _parse_change_cursor(cursor)
    if key is not None:
        qs = qs.filter(Q(occurred_at__lt=key[0]) | Q(occurred_at=key[0], id__lt=key[1]))
    rows = list(qs[: limit + 1])
    next_cursor = None
    if len(rows) > limit:
        last = rows[limit - 1]
        next_cursor = f"{last.occurred_at.isoformat()}_{last.pk}"
    return ChangePage(rows[:limit], next_cursor)


def change_records_for_export(
    *, filters: AuditFilters, scope: AuditScope | None, batch: int = 500
) -> Iterator[ChangeRecord]:
    """Yield change records oldest first, by keyset on id."""
    qs = _change_queryset(filters, scope)
    last = 0
    while True:
        chunk = list(qs.filter(id__gt=last).order_by("id")[:batch])
        yield from chunk
        if len(chunk) < batch:
            return
        last = chunk[-1].pk


def change_records_newest_first(
    *, filters: AuditFilters, scope: AuditScope | None, batch: int = 500
) -> Iterator[ChangeRecord]:
    """Yield change records newest first (as the page and the reports show them), by keyset."""
    qs = _change_queryset(filters, scope).order_by("-occurred_at", "-id")
    key: tuple[datetime, int] | None = None
    while True:
        page = (
            qs if key is None else qs.filter(Q(occurred_at__lt=key[0]) | Q(occurred_at=key[0], id__lt=key[1]))
        )
        chunk = list(page[:batch])
        yield from chunk
        if len(chunk) < batch:
            return
        key = (chunk[-1].occurred_at, chunk[-1].pk)


def change_record_environments() -> list[str]:
    """Return the environments that have change records, by name."""
    return list(ChangeRecord.objects.order_by("environment").values_list("environment", flat=True).distinct())


def change_record_get(*, pk: int, scope: AuditScope | None) -> ChangeRecord | None:
    return ChangeRecord.objects.filter(scope_q(scope), pk=pk).first()


def change_record_evidence(record: ChangeRecord, *, limit: int = 500) -> list[AuditEvent]:
    """Return the ledger events of the record's source object, oldest first."""
    # A per-part record (`<id>:<part>`, e.g. one app of a release train) shows the events of `<id>`.
    ids = {record.source_id, record.evidence_target_id}
    return list(
        AuditEvent.objects.filter(target_type=record.source_type, target_id__in=ids).order_by("sequence")[
            :limit
        ]
    )


def audit_checkpoint_latest() -> AuditCheckpoint | None:
    return AuditCheckpoint.objects.order_by("-head_sequence", "-id").first()
