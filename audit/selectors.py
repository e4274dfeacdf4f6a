"""Reads of the ledger and the change records: keyset pages, export iterators, evidence."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import datetime
from fnmatch import fnmatchcase
from typing import Any

from django.db.models import Max, Min, Q, QuerySet

from accounts.permissions import project_filter
from accounts.roles import Role

from .filters import AuditFilters
from .models import AuditCheckpoint, AuditEvent, ChangeRecord

EXPORT_BATCH = 2000


def audit_scope_apps(user: Any) -> list[str] | None:
    """Return the app names a project-scoped auditor may see, or None for everything."""
    patterns = project_filter(user, Role.AUDITOR)
    if patterns is None:
        return None
    from inventory.models import Application

    return [
        name
        for name, project in Application.objects.values_list("name", "project")
        if any(fnmatchcase(project, p) for p in patterns)
    ]


def _scope_q(scope_apps: list[str]) -> Q:
    """Events of the scoped apps, including events of several apps (a release train: "a,b")."""
    q = Q(app__in=scope_apps)
    if scope_apps:
        names = "|".join(re.escape(name) for name in sorted(set(scope_apps)))
        q |= Q(app__contains=",", app__regex=rf"(^|,)({names})(,|$)")
    return q


def event_in_scope(event: AuditEvent, scope_apps: list[str] | None) -> bool:
    """Tell whether a project-scoped auditor may see the event (any of its apps is in scope)."""
    if scope_apps is None:
        return True
    return any(name in scope_apps for name in event.app.split(","))


def _event_queryset(filters: AuditFilters, scope_apps: list[str] | None) -> QuerySet[AuditEvent]:
    qs = AuditEvent.objects.all()
    if filters.since is not None:
        qs = qs.filter(created_at__gte=filters.since)
    if filters.until is not None:
        qs = qs.filter(created_at__lt=filters.until)
    if filters.env:
        qs = qs.filter(environment=filters.env)
    if filters.app:
        qs = qs.filter(_scope_q([filters.app]))
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
    if scope_apps is not None:
        qs = qs.filter(_scope_q(scope_apps))
    return qs


@dataclass
class EventPage:
    rows: list[AuditEvent]
    next_before: int | None  # cursor: show events with a smaller sequence
    newer_after: int | None  # cursor back: events with a larger sequence exist


def audit_event_list(
    *, filters: AuditFilters, scope_apps: list[str] | None, before: int | None = None, limit: int = 50
) -> EventPage:
    """Return one page of events, newest first, by keyset on the sequence (no OFFSET, two queries)."""
    qs = _event_queryset(filters, scope_apps)
    page_qs = qs.filter(sequence__lt=before) if before else qs
    rows = list(page_qs.order_by("-sequence")[: limit + 1])
    next_before = rows[limit - 1].sequence if len(rows) > limit else None
    rows = rows[:limit]
    newer = before is not None and qs.filter(sequence__gte=before).exists()
    return EventPage(rows, next_before, before if newer else None)


def audit_event_get(*, sequence: int, scope_apps: list[str] | None) -> AuditEvent | None:
    event = AuditEvent.objects.filter(sequence=sequence).first()
    return event if event is not None and event_in_scope(event, scope_apps) else None


def audit_event_neighbours(event: AuditEvent) -> tuple[AuditEvent | None, AuditEvent | None]:
    """Return the chain's previous and next events (for the detail page's links)."""
    prev = AuditEvent.objects.filter(sequence=event.sequence - 1).only("sequence", "hash").first()
    nxt = AuditEvent.objects.filter(sequence=event.sequence + 1).only("sequence", "prev_hash").first()
    return prev, nxt


@dataclass
class ExportPlan:
    """The events one export covers, fixed when it starts."""

    filters: AuditFilters
    scope_apps: list[str] | None
    low: int | None  # first sequence in range (None: empty)
    high: int | None  # last sequence in range
    contiguous: bool

    @property
    def empty(self) -> bool:
        return self.low is None or self.high is None or self.low > self.high


def audit_export_plan(
    *, filters: AuditFilters, scope_apps: list[str] | None, head: int | None = None
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
    contiguous = not filters.narrows_events and scope_apps is None
    return ExportPlan(filters, scope_apps, bounds["low"], bounds["high"], contiguous)


def audit_export_events(plan: ExportPlan, *, batch: int = EXPORT_BATCH) -> Iterator[AuditEvent]:
    """Yield the plan's events in sequence order, by keyset batches (memory stays flat)."""
    if plan.empty:
        return
    period_free = replace(plan.filters, since=None, until=None)
    qs = _event_queryset(period_free, plan.scope_apps).filter(sequence__gte=plan.low, sequence__lte=plan.high)
    last = plan.low - 1  # type: ignore[operator]
    while True:
        count = 0
        for event in qs.filter(sequence__gt=last).order_by("sequence")[:batch].iterator(chunk_size=batch):
            count += 1
            last = event.sequence
            yield event
        if count < batch:
            return


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


def _change_queryset(filters: AuditFilters, scope_apps: list[str] | None) -> QuerySet[ChangeRecord]:
    qs = ChangeRecord.objects.all()
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
        qs = qs.filter(
            Q(title__icontains=filters.text)
            | Q(pr_url__icontains=filters.text)
            | Q(justification__icontains=filters.text)
            | Q(revision_after__startswith=filters.text.lower())
        )
    if scope_apps is not None:
        qs = qs.filter(app__in=scope_apps)
    return qs


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
    *, filters: AuditFilters, scope_apps: list[str] | None, cursor: str = "", limit: int = 50
) -> ChangePage:
    """Return one page of change records, newest first, by keyset on (occurred_at, id)."""
    qs = _change_queryset(filters, scope_apps).order_by("-occurred_at", "-id")
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
    *, filters: AuditFilters, scope_apps: list[str] | None, batch: int = 500
) -> Iterator[ChangeRecord]:
    """Yield change records oldest first, by keyset on id."""
    qs = _change_queryset(filters, scope_apps)
    last = 0
    while True:
        chunk = list(qs.filter(id__gt=last).order_by("id")[:batch])
        yield from chunk
        if len(chunk) < batch:
            return
        last = chunk[-1].pk


def change_record_get(*, pk: int, scope_apps: list[str] | None) -> ChangeRecord | None:
    qs = ChangeRecord.objects.filter(pk=pk)
    if scope_apps is not None:
        qs = qs.filter(app__in=scope_apps)
    return qs.first()


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
