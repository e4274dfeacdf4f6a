"""JSON API of the audit trail (auditor role): events and change records with keyset cursors."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError

from accounts.roles import Role
from api.http import ApiError, api_view
from core.http import AuthenticatedHttpRequest

from .access import audit_scope
from .exports import change_export_record, event_export_record
from .filters import AuditFilters
from .selectors import audit_event_list, change_record_list

MAX_LIMIT = 500


def _filters(request: AuthenticatedHttpRequest) -> AuditFilters:
    try:
        return AuditFilters.from_mapping(request.GET)
    except ValidationError as exc:
        raise ApiError(400, "; ".join(exc.messages)) from None


def _limit(request: AuthenticatedHttpRequest) -> int:
    try:
        limit = int(request.GET.get("limit", "100"))
    except ValueError:
        raise ApiError(400, "limit must be an integer") from None
    if not 1 <= limit <= MAX_LIMIT:
        raise ApiError(400, f"limit must be between 1 and {MAX_LIMIT}")
    return limit


@api_view(("GET",), role=Role.AUDITOR)
def events(request: AuthenticatedHttpRequest) -> dict[str, Any]:
    """List ledger events newest first; follow ``next`` (a sequence) with ``?before=``."""
    before_raw = request.GET.get("before", "")
    if before_raw and not before_raw.isdigit():
        raise ApiError(400, "before must be a sequence number")
    page = audit_event_list(
        filters=_filters(request),
        scope=audit_scope(request.user),
        before=int(before_raw) if before_raw else None,
        limit=_limit(request),
    )
    return {"events": [event_export_record(e) for e in page.rows], "next": page.next_before}


@api_view(("GET",), role=Role.AUDITOR)
def changes(request: AuthenticatedHttpRequest) -> dict[str, Any]:
    """List change records newest first; follow ``next`` with ``?cursor=``."""
    page = change_record_list(
        filters=_filters(request),
        scope=audit_scope(request.user),
        cursor=request.GET.get("cursor", "")[:80],
        limit=_limit(request),
    )
    rows = []
    for record in page.rows:
        row = change_export_record(record)
        row["occurred_at"] = record.occurred_at
        rows.append(row)
    return {"changes": rows, "next": page.next_cursor}
