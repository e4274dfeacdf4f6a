"""Exports of the ledger: CSV, JSON Lines, PDF change report and the signed bundle.

Every export first writes an ``audit.exported`` event (committed before a byte is streamed), then
fixes its sequence range at the chain head it just extended, and reads events by keyset batches,
so a million events export with flat memory.
"""

from __future__ import annotations

import csv
import hashlib
import json
import zipfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import IO, Any
from xml.sax.saxutils import escape

from django.conf import settings
from django.contrib.auth.base_user import AbstractBaseUser
from django.contrib.auth.models import AnonymousUser
from django.db import transaction

from .actions import AuditAction
from .bundle import BUNDLE_FORMAT, CHANGES_FILE, EVENTS_FILE, MANIFEST_FILE, SIGNATURE_FILE, sign
from .chain import HASHED_FIELDS, _normalise
from .filters import AuditFilters
from .models import AuditCheckpoint, AuditEvent, ChangeRecord
from .scope import AuditScope
from .selectors import (
    ExportPlan,
    audit_export_events,
    audit_export_plan,
    change_record_evidence,
    change_records_for_export,
    change_records_newest_first,
)
from .services import audit_checkpoint_current, audit_event_record, checkpoint_as_record, event_as_record
from .signing import current_key_id, current_public_key_pem, signing_key

EXPORT_FORMATS = ("csv", "jsonl", "pdf", "bundle", "changes")
# The Change records page offers these (its "CSV" is one row per change, not ledger events).
CHANGE_PAGE_FORMATS = ("changes", "pdf", "bundle")
# `project` is not hashed (a scope index derived from the target), so it follows the hash.
EVENT_COLUMNS: tuple[str, ...] = (*HASHED_FIELDS, "hash", "project")
CHANGE_COLUMNS: tuple[str, ...] = (
    "id", "kind", "source_type", "source_id", "app", "environment", "project", "clusters", "title",
    "requester_name", "approvers", "separation_of_duties_ok", "pr_number", "pr_url", "merged_by",
    "revision_before", "revision_after", "versions_before", "versions_after", "gates", "sync_result",
    "requested_at", "approved_at", "pr_opened_at", "merged_at", "deployed_at", "healthy_at",
    "lead_time_seconds", "outcome", "emergency", "justification", "approval_reason", "approved_head_sha",
)  # fmt: skip
CONTENT_TYPES = {
    "csv": "text/csv; charset=utf-8",
    "jsonl": "application/x-ndjson; charset=utf-8",
    "pdf": "application/pdf",
    "bundle": "application/zip",
    "changes": "text/csv; charset=utf-8",
}
EXTENSIONS = {"csv": "csv", "jsonl": "jsonl", "pdf": "pdf", "bundle": "zip", "changes": "csv"}
# The auditor's change-record CSV: one row per change, plain cells (no JSON), newest first.
CHANGE_RECORD_CSV_COLUMNS: tuple[str, ...] = (
    "id", "kind", "apps", "environment", "requested_by", "requested_at", "approved_by", "approved_at",
    "approved_head_sha", "pr_number", "pr_url", "merged_by", "merged_at", "from_sha", "to_sha",
    "version_before", "version_after", "deployed_at", "healthy_at", "outcome", "emergency", "incident",
    "correlation_id",
)  # fmt: skip

# A spreadsheet runs a cell starting with one of these as a formula (CSV injection, OWASP).
_FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")


def neutralise(value: str) -> str:
    """Make a text cell inert in Excel/LibreOffice/Sheets: a leading apostrophe before a formula."""
    return f"'{value}" if value.startswith(_FORMULA_PREFIXES) else value


def _cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return value
    if isinstance(value, timedelta):
        return int(value.total_seconds())
    if isinstance(value, dict | list):
        value = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    else:
        value = str(_normalise(value))
    return neutralise(value)


def event_export_record(event: AuditEvent) -> dict[str, Any]:
    """Return the event as exported: every field, times in the hashed ISO form."""
    return {name: _normalise(value) for name, value in event_as_record(event).items()}


def event_jsonl_line(event: AuditEvent) -> str:
    return (
        json.dumps(event_export_record(event), ensure_ascii=False, separators=(",", ":"), default=str) + "\n"
    )


def change_export_record(record: ChangeRecord) -> dict[str, Any]:
    row = {name: getattr(record, name, None) for name in CHANGE_COLUMNS if name != "lead_time_seconds"}
    row["id"] = record.pk
    row["lead_time_seconds"] = int(record.lead_time.total_seconds()) if record.lead_time is not None else None
    return {name: _normalise(row[name]) for name in CHANGE_COLUMNS}


class _Echo:
    """A file-like object whose write() returns what it is given (csv.writer → a generator)."""

    def write(self, value: str) -> str:
        return value


def stream_events_csv(events: Iterable[AuditEvent]) -> Iterator[str]:
    writer = csv.writer(_Echo())
    yield writer.writerow(EVENT_COLUMNS)
    for event in events:
        record = event_as_record(event)
        yield writer.writerow([_cell(record[name]) for name in EVENT_COLUMNS])


def stream_events_jsonl(events: Iterable[AuditEvent]) -> Iterator[str]:
    for event in events:
        yield event_jsonl_line(event)


def stream_changes_csv(records: Iterable[ChangeRecord]) -> Iterator[str]:
    writer = csv.writer(_Echo())
    yield writer.writerow(CHANGE_COLUMNS)
    for record in records:
        row = change_export_record(record)
        yield writer.writerow([_cell(row[name]) for name in CHANGE_COLUMNS])


def _versions_text(versions: Any) -> str:
    if isinstance(versions, dict):
        return "; ".join(f"{k}={v}" for k, v in sorted(versions.items()))
    return "" if versions is None else str(versions)


def change_record_csv_row(record: ChangeRecord) -> dict[str, Any]:
    """Return one change record as the auditor's CSV row (plain text cells, times in ISO UTC)."""
    return {
        "id": record.pk,
        "kind": record.get_kind_display(),
        "apps": record.app,
        "environment": record.environment,
        "requested_by": record.requester_name,
        "requested_at": _normalise(record.requested_at),
        "approved_by": "; ".join(record.approvers),
        "approved_at": _normalise(record.approved_at),
        "approved_head_sha": record.approved_head_sha,
        "pr_number": record.pr_number,
        "pr_url": record.pr_url,
        "merged_by": record.merged_by,
        "merged_at": _normalise(record.merged_at),
        "from_sha": record.revision_before,
        "to_sha": record.revision_after,
        "version_before": _versions_text(record.versions_before),
        "version_after": _versions_text(record.versions_after),
        "deployed_at": _normalise(record.deployed_at),
        "healthy_at": _normalise(record.healthy_at),
        "outcome": record.get_outcome_display(),
        "emergency": record.emergency,
        "incident": record.incident,
        "correlation_id": record.correlation_id,
    }


def stream_change_records_csv(records: Iterable[ChangeRecord]) -> Iterator[str]:
    writer = csv.writer(_Echo())
    yield writer.writerow(CHANGE_RECORD_CSV_COLUMNS)
    for record in records:
        row = change_record_csv_row(record)
        yield writer.writerow([_cell(row[name]) for name in CHANGE_RECORD_CSV_COLUMNS])


# --- starting an export -------------------------------------------------------------------------------


@dataclass
class ExportJob:
    fmt: str
    plan: ExportPlan
    event: AuditEvent
    checkpoint: AuditCheckpoint | None = None

    @property
    def filename(self) -> str:
        stamp = self.event.created_at.strftime("%Y%m%dT%H%M%SZ")
        return f"audit-{self.fmt}-{stamp}.{EXTENSIONS[self.fmt]}"

    def events(self) -> Iterator[AuditEvent]:
        return audit_export_events(self.plan)

    def stream(self) -> Iterator[str]:
        """Stream a text format (csv, jsonl, changes)."""
        if self.fmt == "changes":
            return stream_change_records_csv(
                change_records_newest_first(filters=self.plan.filters, scope=self.plan.scope)
            )
        return stream_events_csv(self.events()) if self.fmt == "csv" else stream_events_jsonl(self.events())


def audit_export_begin(
    *,
    fmt: str,
    filters: AuditFilters,
    scope: AuditScope | None,
    actor: AbstractBaseUser | AnonymousUser | None = None,
    system_name: str | None = None,
) -> ExportJob:
    """Record the ``audit.exported`` event (committed), then fix what the export covers."""
    if fmt not in EXPORT_FORMATS:
        raise ValueError(f"unknown export format {fmt!r}; one of {', '.join(EXPORT_FORMATS)}")
    with transaction.atomic():
        event = audit_event_record(
            action=AuditAction.AUDIT_EXPORTED,
            actor=actor,
            system_name=system_name,
            target_type="audit_export",
            target_id=fmt,
            target_label=f"{fmt} export",
            after={"format": fmt, "filters": filters.as_dict(), "scoped": scope is not None},
            message=f"exported the audit trail as {fmt}"
            + (f" ({filters.querystring()})" if filters.as_dict() else ""),
        )
    plan = audit_export_plan(filters=filters, scope=scope, head=event.sequence)
    checkpoint = audit_checkpoint_current() if fmt == "bundle" else None
    return ExportJob(fmt, plan, event, checkpoint)


# --- the signed bundle ----------------------------------------------------------------------------------


class _HashingWriter:
    """Write text to a zip member while hashing and counting the bytes."""

    def __init__(self, fh: IO[bytes]) -> None:
        self.fh = fh
        self.digest = hashlib.sha256()
        self.size = 0

    def write(self, text: str) -> None:
        data = text.encode("utf-8")
        self.digest.update(data)
        self.size += len(data)
        self.fh.write(data)


def write_bundle(job: ExportJob, out: IO[bytes], *, created_by: str) -> dict[str, Any]:
    """Write the signed zip (events.jsonl, change-records.csv, manifest.json, manifest.sig)."""
    first: dict[str, Any] | None = None
    last: dict[str, Any] | None = None
    count = 0
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        with zf.open(EVENTS_FILE, "w", force_zip64=True) as fh:
            events_writer = _HashingWriter(fh)
            for event in job.events():
                events_writer.write(event_jsonl_line(event))
                count += 1
                edge = {"sequence": event.sequence, "hash": event.hash, "prev_hash": event.prev_hash}
                first = first or edge
                last = edge
        change_count = 0
        with zf.open(CHANGES_FILE, "w", force_zip64=True) as fh:
            changes_writer = _HashingWriter(fh)
            for chunk in stream_changes_csv(
                change_records_for_export(filters=job.plan.filters, scope=job.plan.scope)
            ):
                changes_writer.write(chunk)
                change_count += 1
        manifest = {
            "format": BUNDLE_FORMAT,
            "created_at": _normalise(job.event.created_at),
            "created_by": created_by,
            "portal": settings.PORTAL_BASE_URL,
            "export_event_sequence": job.event.sequence,
            "filters": job.plan.filters.as_dict(),
            "scope": [{"project": g.project, "environment": g.environment} for g in job.plan.scope or ()],
            "contiguous": job.plan.contiguous,
            "count": count,
            "first": first,
            "last": last,
            "change_records": max(change_count - 1, 0),
            "files": {
                EVENTS_FILE: {"sha256": events_writer.digest.hexdigest(), "bytes": events_writer.size},
                CHANGES_FILE: {"sha256": changes_writer.digest.hexdigest(), "bytes": changes_writer.size},
            },
            "checkpoint": checkpoint_as_record(job.checkpoint) if job.checkpoint else None,
            "hash_algorithm": "sha256 over canonical JSON of the hashed fields (audit/chain.py)",
            "signature_algorithm": "Ed25519 over the bytes of manifest.json, base64 in manifest.sig",
            "public_key_id": current_key_id(),
            "public_key": current_public_key_pem(),
            "verify_with": "python manage.py audit_verify BUNDLE  (or: python -m audit.bundle BUNDLE --public-key KEY.pem)",
        }
        manifest_bytes = json.dumps(manifest, indent=2, sort_keys=True, ensure_ascii=False).encode("utf-8")
        zf.writestr(MANIFEST_FILE, manifest_bytes)
        zf.writestr(SIGNATURE_FILE, sign(signing_key(), manifest_bytes) + "\n")
    return manifest


# --- the PDF change report --------------------------------------------------------------------------------


def _p(text: Any, style: Any) -> Any:
    # reportlab is imported lazily (here and in write_pdf): it is heavy, and only PDF exports need it.
    from reportlab.platypus import Paragraph

    return Paragraph(escape("" if text is None else str(text)), style)


def _when(value: Any) -> str:
    return value.strftime("%Y-%m-%d %H:%M UTC") if value else "—"


def _plain(value: Any) -> str:
    """Render a JSON value as text a reader understands: ``k: v; …``, never a raw ``{}``."""
    if value in (None, "", {}, []):
        return "—"
    if isinstance(value, dict):
        return "; ".join(f"{k}: {_plain(v)}" for k, v in sorted(value.items()))
    if isinstance(value, list):
        return ", ".join(_plain(v) for v in value)
    return str(value)


def _pr_text(record: ChangeRecord) -> str:
    return f"PR #{record.pr_number} {record.pr_url}".strip() if record.pr_number else "no pull request"


_SOD = {True: "yes (requester is not an approver)", False: "NO: the requester approved", None: "no approval"}


@dataclass
class ReportSummary:
    """The report's first page: how many changes, how they ended, where, and the exceptions."""

    count: int
    by_outcome: dict[str, int]
    by_environment: dict[str, int]
    exceptions: list[tuple[str, str]]  # (record title, why it is an exception)


def change_report_summary(records: list[ChangeRecord]) -> ReportSummary:
    """Count the records by outcome and environment; list emergencies, self-approvals and failures."""
    by_outcome: dict[str, int] = {}
    by_env: dict[str, int] = {}
    exceptions: list[tuple[str, str]] = []
    for record in records:
        outcome = record.get_outcome_display()
        by_outcome[outcome] = by_outcome.get(outcome, 0) + 1
        by_env[record.environment] = by_env.get(record.environment, 0) + 1
        label = f"#{record.pk} {record.title or record.app}"
        if record.emergency:
            exceptions.append((label, f"emergency: {record.justification or 'no justification'}"))
        if record.separation_of_duties_ok is False:
            exceptions.append((label, "the requester approved their own change"))
        if record.outcome in ("failed", "rolled_back"):
            exceptions.append((label, outcome))
    return ReportSummary(
        len(records), dict(sorted(by_outcome.items())), dict(sorted(by_env.items())), exceptions
    )


def write_pdf(job: ExportJob, path: str, *, created_by: str) -> int:
    """Write the change report (summary first, then the records newest first); return the record count."""
    from reportlab.lib import colors
    from reportlab.lib.pagesizes import A4, landscape
    from reportlab.lib.styles import ParagraphStyle, getSampleStyleSheet
    from reportlab.lib.units import mm
    from reportlab.platypus import KeepTogether, PageBreak, SimpleDocTemplate, Spacer, Table, TableStyle

    styles = getSampleStyleSheet()
    body, h1, h2 = styles["BodyText"], styles["Title"], styles["Heading2"]
    cell = ParagraphStyle("cell", parent=body, fontSize=8, leading=10)
    # Hashes and URLs may break anywhere, but only where a line is full (no digit split needlessly).
    mono = ParagraphStyle("mono", parent=cell, fontName="Courier", fontSize=7.5, leading=9.5, wordWrap="CJK")
    head = ParagraphStyle("head", parent=cell, fontName="Helvetica-Bold")
    width = landscape(A4)[0] - 30 * mm  # 267 mm between the margins

    def grid(header: bool = False) -> TableStyle:
        rules = [
            ("GRID", (0, 0), (-1, -1), 0.25, colors.grey),
            ("VALIGN", (0, 0), (-1, -1), "TOP"),
        ]
        rules.append(("BACKGROUND", (0, 0), (-1, 0) if header else (0, -1), colors.whitesmoke))
        return TableStyle(rules)

    def table(rows: list[list[Any]], widths_mm: list[float], *, header: bool = False) -> Any:
        scale = min(1.0, width / (sum(widths_mm) * mm))  # never wider than the page
        built = Table(
            rows, colWidths=[w * mm * scale for w in widths_mm], repeatRows=1 if header else 0, hAlign="LEFT"
        )
        built.setStyle(grid(header))
        return built

    filters = job.plan.filters
    records = list(change_records_newest_first(filters=filters, scope=job.plan.scope))
    summary = change_report_summary(records)
    period_start = filters.since or (min((r.occurred_at for r in records), default=None))
    period_end = filters.until or job.event.created_at
    story: list[Any] = [
        _p("Change report", h1),
        _p(f"Period: {_when(period_start)} to {_when(period_end)}", body),
        _p(f"Filters: {filters.querystring() or 'none'}", body),
        _p(
            f"Generated {_when(job.event.created_at)} by {created_by}; export event #{job.event.sequence}.",
            body,
        ),
        _p(
            f"Ledger signing key id: {current_key_id()}. Verify the ledger: python manage.py audit_verify",
            body,
        ),
        Spacer(1, 4 * mm),
        _p("Summary", h2),
        _p(f"{summary.count} change(s) in the period.", body),
    ]

    def pairs(headers: tuple[str, str], items: Iterable[tuple[Any, Any]], widths_mm: list[float]) -> Any:
        rows = [[_p(h, head) for h in headers]] + [[_p(k, cell), _p(v, cell)] for k, v in items]
        return table(rows, widths_mm, header=True)

    if records:
        story += [
            pairs(("Outcome", "Changes"), summary.by_outcome.items(), [80, 30]),
            Spacer(1, 3 * mm),
            pairs(("Environment", "Changes"), summary.by_environment.items(), [80, 30]),
            Spacer(1, 3 * mm),
            _p("Exceptions", h2),
            pairs(("Change", "Why"), summary.exceptions, [110, 157])
            if summary.exceptions
            else _p("None: no emergency change, no self-approval, no failed or rolled-back change.", body),
            Spacer(1, 6 * mm),
            PageBreak(),  # the summary is page 1; the records follow
            _p("Changes, newest first", h2),
        ]
    for record in records:
        rows = [
            ("Change", f"#{record.pk} {record.get_kind_display()} · {record.source_type} {record.source_id}"),
            ("App → environment", f"{record.app} → {record.environment}" + (f" ({', '.join(record.clusters)})" if record.clusters else "")),
            ("Outcome", record.get_outcome_display() + (" · EMERGENCY" if record.emergency else "")),
            ("Requested by", f"{record.requester_name or '—'} at {_when(record.requested_at)}"),
            ("Approved by", f"{', '.join(record.approvers) or '—'} at {_when(record.approved_at)}"
             + (f" on commit {record.approved_head_sha}" if record.approved_head_sha else "")
             + (f": {record.approval_reason}" if record.approval_reason else "")),
            ("Separation of duties", _SOD[record.separation_of_duties_ok]),
            ("Pull request", _pr_text(record)),
            ("Merged", f"{_when(record.merged_at)} by {record.merged_by or '—'}" if record.merged_at else "not merged"),
            ("Version", f"{record.version_before_display or '—'} → {record.version_after_display or '—'}"),
            ("Revision", f"{record.revision_before or '—'} → {record.revision_after or '—'}"),
            ("Gates", "; ".join(f"{g['name']}: {'passed' if g.get('passed') else 'FAILED'} {g.get('detail') or ''}".strip() for g in record.gates) or "—"),
            ("Sync result", _plain(record.sync_result)),
            ("Deployed / healthy", f"{_when(record.deployed_at)} / {_when(record.healthy_at)}"),
            ("Lead time", record.lead_time_display if record.lead_time is not None else "—"),
            ("Incident / correlation id", f"{record.incident or '—'} / {record.correlation_id or '—'}"),
        ]  # fmt: skip
        if record.justification:
            rows.append(("Justification", record.justification))
        details = table(
            [[_p(k, head), _p(v, mono if k in ("Revision", "Pull request") else cell)] for k, v in rows],
            [55, 212],
        )
        evidence = change_record_evidence(record, limit=200)
        event_rows = [[_p(h, head) for h in ("#", "Time", "Actor", "Action", "Hash")]] + [
            [_p(e.sequence, cell), _p(_when(e.created_at), cell), _p(e.actor_name, cell), _p(e.action, cell), _p(e.hash[:32], mono)]
            for e in evidence
        ]  # fmt: skip
        story += [
            KeepTogether([_p(record.title or f"{record.app} → {record.environment}", h2), details]),
            Spacer(1, 2 * mm),
            _p(f"Ledger events ({len(evidence)})", body),
            table(event_rows, [18, 40, 50, 70, 89], header=True),
            Spacer(1, 8 * mm),
        ]
    if not records:
        story.append(_p("No change records match.", body))
    SimpleDocTemplate(
        path,
        pagesize=landscape(A4),
        leftMargin=15 * mm,
        rightMargin=15 * mm,
        topMargin=15 * mm,
        bottomMargin=15 * mm,
        title="Change report",
        author="GitOps Portal",
    ).build(story)
    return len(records)


def audit_export_to_file(job: ExportJob, out_path: str, *, created_by: str) -> dict[str, Any]:
    """Write any format to a file (the command line, and bundle/PDF downloads)."""
    if job.fmt == "pdf":
        return {"change_records": write_pdf(job, out_path, created_by=created_by)}
    if job.fmt == "bundle":
        with open(out_path, "wb") as fh:
            return write_bundle(job, fh, created_by=created_by)
    stream = job.stream()
    lines = 0
    with open(out_path, "w", encoding="utf-8", newline="") as fh:
        for chunk in stream:
            fh.write(chunk)
            lines += 1
    return {"lines": lines}
