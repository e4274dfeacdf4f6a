"""Audit pages (auditor role; admins too): events, change records, evidence, exports, the public key."""

from __future__ import annotations

import json
import os
import tempfile
from datetime import timedelta

from django.core.exceptions import ValidationError
from django.http import FileResponse, Http404, HttpResponse, StreamingHttpResponse
from django.shortcuts import render
from django.utils import timezone
from django.views.decorators.http import require_GET, require_POST

from accounts.permissions import ensure_role, require_role
from accounts.roles import Role
from core.http import AuthenticatedHttpRequest
from core.querytext import query_text

from .access import audit_scope
from .chain import event_hash
from .exports import (
    CHANGE_PAGE_FORMATS,
    CONTENT_TYPES,
    EXPORT_FORMATS,
    audit_export_begin,
    audit_export_to_file,
)
from .filters import AuditFilters
from .selectors import (
    audit_checkpoint_latest,
    audit_event_get,
    audit_event_list,
    audit_event_neighbours,
    change_record_environments,
    change_record_evidence,
    change_record_get,
    change_record_list,
)
from .services import event_as_record
from .signing import current_key_id, current_public_key_pem

VERIFY_COMMANDS = (
    "python manage.py audit_verify                 # the database chain and its signed checkpoints",
    "python manage.py audit_verify BUNDLE.zip --public-key audit-public-key.pem   # offline",
    "python -m audit.bundle BUNDLE.zip --public-key audit-public-key.pem          # without Django",
)


def _filters(request: AuthenticatedHttpRequest) -> tuple[AuditFilters, str]:
    try:
        return AuditFilters.from_mapping(request.GET), ""
    except ValidationError as exc:
        return AuditFilters(), "; ".join(exc.messages)


def _cursor(value: str | None) -> int | None:
    try:
        number = int(value or "")
    except ValueError:
        return None
    return number if number > 0 else None


def _production_environments() -> list[str]:
    """Return the environments that have change records (only production-like ones get records)."""
    return change_record_environments() or ["prod"]


def _key_context() -> dict:
    checkpoint = audit_checkpoint_latest()
    return {
        "key_id": current_key_id(),
        "public_key_pem": current_public_key_pem(),
        "verify_commands": VERIFY_COMMANDS,
        "checkpoint": checkpoint,
    }


@require_GET
@require_role(Role.AUDITOR)
def event_list(request: AuthenticatedHttpRequest) -> HttpResponse:
    filters, error = _filters(request)
    page = audit_event_list(
        filters=filters, scope=audit_scope(request.user), before=_cursor(request.GET.get("before"))
    )
    context = {
        "nav": "audit",
        "filters": filters,
        "filter_error": error,
        "page": page,
        "export_formats": EXPORT_FORMATS,
        "querystring": filters.querystring(),
        "next_querystring": filters.querystring(before=page.next_before) if page.next_before else "",
    }
    status = 400 if error else 200
    if request.htmx:
        return render(request, "audit/event_list.html#table", context, status=status)
    return render(request, "audit/event_list.html", {**context, **_key_context()}, status=status)


@require_GET
@require_role(Role.AUDITOR)
def event_detail(request: AuthenticatedHttpRequest, sequence: int) -> HttpResponse:
    event = audit_event_get(sequence=sequence, scope=audit_scope(request.user))
    if event is None:
        raise Http404("no such event")
    ensure_role(request.user, Role.AUDITOR, environment=event.environment or None, request=request)
    previous, following = audit_event_neighbours(event)
    record = event_as_record(event)
    context = {
        "nav": "audit",
        "event": event,
        "hash_ok": event_hash(record) == event.hash,
        "prev_link_ok": (previous.hash == event.prev_hash) if previous else event.sequence == 1,
        "previous": previous,
        "following": following,
        "before_json": json.dumps(event.before, indent=2, sort_keys=True, ensure_ascii=False)
        if event.before is not None
        else "",
        "after_json": json.dumps(event.after, indent=2, sort_keys=True, ensure_ascii=False)
        if event.after is not None
        else "",
    }
    return render(request, "audit/event_detail.html", context)


@require_GET
@require_role(Role.AUDITOR)
def change_list(request: AuthenticatedHttpRequest) -> HttpResponse:
    filters, error = _filters(request)
    page = change_record_list(
        filters=filters, scope=audit_scope(request.user), cursor=query_text(request.GET, "cursor", limit=80)
    )
    last_week = (timezone.now() - timedelta(days=7)).strftime("%Y-%m-%d")
    context = {
        "nav": "audit",
        "filters": filters,
        "filter_error": error,
        "page": page,
        "export_formats": CHANGE_PAGE_FORMATS,
        "querystring": filters.querystring(),
        "next_querystring": filters.querystring(cursor=page.next_cursor) if page.next_cursor else "",
        "quick_links": [
            (f"{env}, last 7 days", AuditFilters.from_mapping({"env": env, "since": last_week}).querystring())
            for env in _production_environments()
        ],
    }
    status = 400 if error else 200
    if request.htmx:
        return render(request, "audit/change_list.html#table", context, status=status)
    return render(request, "audit/change_list.html", context, status=status)


@require_GET
@require_role(Role.AUDITOR)
def change_detail(request: AuthenticatedHttpRequest, pk: int) -> HttpResponse:
    record = change_record_get(pk=pk, scope=audit_scope(request.user))
    if record is None:
        raise Http404("no such change record")
    ensure_role(
        request.user,
        Role.AUDITOR,
        project=record.project or None,
        environment=record.environment,
        request=request,
    )
    steps = [
        ("Requested", record.requested_at, record.requester_name),
        ("Approved", record.approved_at, ", ".join(record.approvers)),
        ("Pull request opened", record.pr_opened_at, f"#{record.pr_number}" if record.pr_number else ""),
        ("Merged", record.merged_at, record.merged_by),
        ("Deployed (synced)", record.deployed_at, ""),
        ("Healthy", record.healthy_at, ""),
    ]
    context = {
        "nav": "audit",
        "record": record,
        "steps": steps,
        "evidence": change_record_evidence(record),
        "sync_result_json": json.dumps(record.sync_result, indent=2, sort_keys=True, default=str)
        if record.sync_result is not None
        else "",
        "versions_before": sorted(record.versions_before.items())
        if isinstance(record.versions_before, dict)
        else [],
        "versions_after": sorted(record.versions_after.items())
        if isinstance(record.versions_after, dict)
        else [],
        "key_id": current_key_id(),
        "generated_at": timezone.now(),
    }
    return render(request, "audit/change_detail.html", context)


@require_POST
@require_role(Role.AUDITOR)
def export(request: AuthenticatedHttpRequest, fmt: str) -> HttpResponse | StreamingHttpResponse:
    """Download an export; the `audit.exported` event is committed before the first byte."""
    if fmt not in EXPORT_FORMATS:
        raise Http404("unknown export format")
    try:
        filters = AuditFilters.from_mapping(request.POST)
    except ValidationError as exc:
        return HttpResponse("; ".join(exc.messages), status=400, content_type="text/plain")
    job = audit_export_begin(fmt=fmt, filters=filters, scope=audit_scope(request.user), actor=request.user)
    if fmt in ("csv", "jsonl", "changes"):
        response = StreamingHttpResponse(job.stream(), content_type=CONTENT_TYPES[fmt])
    else:
        # Built to a temporary file (zip and PDF need seeking), streamed from disk, removed when closed.
        handle = tempfile.NamedTemporaryFile(prefix="audit-export-", suffix=f".{fmt}", delete=False)  # noqa: SIM115
        handle.close()
        try:
            audit_export_to_file(job, handle.name, created_by=request.user.get_username())
            stream_file = open(handle.name, "rb")  # noqa: SIM115 - FileResponse closes it
        finally:
            os.unlink(handle.name)  # the open descriptor keeps the data readable until closed
        response = FileResponse(stream_file, content_type=CONTENT_TYPES[fmt])
    response["Content-Disposition"] = f'attachment; filename="{job.filename}"'
    response["X-Audit-Export-Event"] = str(job.event.sequence)
    response["Cache-Control"] = "no-store"
    return response


@require_GET
@require_role(Role.AUDITOR)
def public_key(request: AuthenticatedHttpRequest) -> HttpResponse:
    response = HttpResponse(current_public_key_pem(), content_type="application/x-pem-file")
    response["Content-Disposition"] = f'attachment; filename="audit-public-key-{current_key_id()}.pem"'
    return response
