"""Exports of the ledger: CSV, JSON Lines, PDF change report and the signed bundle.

Every export first writes an ``audit.exported`` event (committed before a byte is streamed), then
fixes its sequence range at the chain head it just extended, and reads events by keyset batches,
so a million events export with flat memory.
"""

from __future__ import annotations

import csv
import hashlib
import json
import re
import zipfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import IO, Any
from xml.sax.saxutils import escape

from django.conf import settings
from django.contrib.auth.base_user import AbstractBaseUser
from django.contrib.auth.models import AnonymousUser
from django.db import connection, transaction

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
    audit_export_rows,
    change_records_for_export,
    change_records_newest_first,
)
from .services import (
    EVENT_RECORD_FIELDS,
    audit_checkpoint_current,
    audit_event_record,
    checkpoint_as_record,
    event_as_record,
)
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
    """The CSV of events, one model at a time (the definition the fast path below must match)."""
    writer = csv.writer(_Echo())
    yield writer.writerow(EVENT_COLUMNS)
    for event in events:
        record = event_as_record(event)
        yield writer.writerow([_cell(record[name]) for name in EVENT_COLUMNS])


def stream_events_jsonl(events: Iterable[AuditEvent]) -> Iterator[str]:
    for event in events:
        yield event_jsonl_line(event)


_JSON_FIELDS = ("shas", "before", "after")


def _csv_json(value: Any) -> Any:
    """The CSV cell of a JSON column's value (as _cell, dict and list in canonical form)."""
    if value is None:
        return ""
    if isinstance(value, dict | list):
        return _CANONICAL.encode(value)  # starts with { or [: never a formula
    return _cell(value)


_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
_JSONL = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), default=str)


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


# PostgreSQL builds the plain cells of each line itself (ISO times, formula neutralising, CSV
# quoting, JSON string escaping: all as Python does them above); Python re-encodes only the three
# JSON columns, whose canonical form (sorted keys, Python's number format) the database cannot give.
_T = '"audit_auditevent".'
_SQL_ISO = f"""to_char({_T}"created_at" AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')"""
_SQL_BOOL = f"""CASE WHEN {_T}"out_of_band" THEN 'true' ELSE 'false' END"""
_SQL_FORMULA = "('=', '+', '-', '@', E'\\t', E'\\r')"  # _FORMULA_PREFIXES
_SQL_NEEDS_QUOTES = "E'[,\"\\r\\n]'"
_SQL_SPECIAL = "E'^[-=+@\\t\\r]|[,\"\\r\\n]'"


def _sql_csv_cell(name: str) -> str:
    if name == "sequence":
        return f'{_T}"sequence"::text'
    if name == "actor_id":
        return f"coalesce({_T}\"actor_id\"::text, '')"
    if name == "created_at":
        return _SQL_ISO
    if name == "out_of_band":
        return _SQL_BOOL
    col = f'{_T}"{name}"'
    inert = f"(CASE WHEN left({col}, 1) IN {_SQL_FORMULA} THEN '''' || {col} ELSE {col} END)"
    quoted = f"'\"' || replace({inert}, '\"', '\"\"') || '\"'"
    special = f"(CASE WHEN {col} ~ {_SQL_NEEDS_QUOTES} THEN {quoted} ELSE {inert} END)"
    # Most cells are neither a formula nor in need of quotes: one test, then the cell as it is.
    return f"(CASE WHEN {col} ~ {_SQL_SPECIAL} THEN {special} ELSE {col} END)"


def _sql_jsonl_value(name: str) -> str:
    if name == "sequence":
        return f'{_T}"sequence"::text'
    if name == "actor_id":
        return f"coalesce({_T}\"actor_id\"::text, 'null')"
    if name == "created_at":
        return f"('\"' || {_SQL_ISO} || '\"')"
    if name == "out_of_band":
        return _SQL_BOOL
    return f'to_json({_T}"{name}")::text'


def _sql_segments(fields: tuple[str, ...], *, csv_: bool) -> list[str]:
    """Split a line at the JSON columns: one SQL text expression per run of plain columns."""
    segments: list[str] = []
    parts: list[str] = []
    for i, name in enumerate(fields):
        comma = "," if i else ""
        if name in _JSON_FIELDS:
            parts.append(f"'{comma}\"{name}\":'" if not csv_ else (f"'{comma}'" if comma else "''"))
            segments.append(" || ".join(parts))
            parts = []
        elif csv_:
            parts.append(f"'{comma}' || {_sql_csv_cell(name)}" if comma else _sql_csv_cell(name))
        else:
            parts.append(f"'{comma or '{'}\"{name}\":' || {_sql_jsonl_value(name)}")
    parts.append("''" if csv_ else "'}'")
    segments.append(" || ".join(parts))
    return segments


def _sql_row_columns(fields: tuple[str, ...], *, csv_: bool) -> dict[str, Any]:
    """The annotations of one line: text segments interleaved with the JSON columns as text."""
    from django.db.models import TextField
    from django.db.models.expressions import RawSQL

    segments = iter(_sql_segments(fields, csv_=csv_))
    columns: dict[str, Any] = {"x_seg0": RawSQL(next(segments), (), output_field=TextField())}  # noqa: S611 - fixed SQL
    for i, name in enumerate(n for n in fields if n in _JSON_FIELDS):
        columns[f"x_{name}"] = RawSQL(f'{_T}"{name}"::text', (), output_field=TextField())  # noqa: S611 - fixed SQL
        columns[f"x_seg{i + 1}"] = RawSQL(next(segments), (), output_field=TextField())  # noqa: S611 - fixed SQL
    return columns


def _csv_quote(text: str) -> str:
    if "," in text or '"' in text or "\r" in text or "\n" in text:
        return '"' + text.replace('"', '""') + '"'
    return text


def _prebuilt(encoder: json.JSONEncoder) -> Callable[[Any], str]:
    """``encoder.encode`` without rebuilding the C encoder at every call (same output)."""
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is None:  # pragma: no cover - CPython always has the C encoder
        return encoder.encode
    iterencode = make(
        None, encoder.default, json.encoder.encode_basestring, encoder.indent, encoder.key_separator,
        encoder.item_separator, encoder.sort_keys, encoder.skipkeys, encoder.allow_nan,
    )  # fmt: skip
    return lambda value: "".join(iterencode(value, 0))


_SCAN = json.JSONDecoder().scan_once  # type: ignore[attr-defined]
# A list of lowercase hex strings (SHAs) as PostgreSQL prints jsonb: only its spaces differ.
_HEX_LIST = re.compile(r'\[(?:"[0-9a-f]*"(?:, "[0-9a-f]*")*)?\]')


class _JsonCells:
    """Turn the JSON columns' database text into export cells, re-encoding only where needed.

    The database prints jsonb with spaces, its own key order and number format, so a value is
    parsed and encoded again, except a list of hex strings (its spaces dropped) and a text seen a
    moment ago (short payloads repeat: states, empty lists); the memory is bounded.
    """

    def __init__(self, fmt: str) -> None:
        self.csv = fmt == "csv"
        self.none = "" if self.csv else "null"
        self.encode = _prebuilt(_CANONICAL) if self.csv else _prebuilt(_JSONL)
        self.seen: dict[str, str] = {}

    def __call__(self, text: str | None) -> str:
        if text is None:
            return self.none
        cell = self.seen.get(text)
        if cell is not None:
            return cell
        if _HEX_LIST.fullmatch(text):
            cell = text.replace('", "', '","')
        else:
            value = _SCAN(text, 0)[0]
            cell = self.encode(value) if not self.csv or isinstance(value, dict | list) else str(_cell(value))
        if self.csv:
            cell = _csv_quote(cell)
        if len(text) <= 128:  # the short, repeated payloads; memory stays bounded
            if len(self.seen) >= 1024:
                self.seen.clear()
            self.seen[text] = cell
        return cell


def stream_event_lines(rows: Callable[..., Iterator[tuple[Any, ...]]], fmt: str) -> Iterator[str]:
    """The CSV or JSON Lines export, its plain cells built by PostgreSQL; byte for byte the Python one.

    ``rows`` is :meth:`ExportJob.rows`.
    """
    fields = EVENT_COLUMNS if fmt == "csv" else EVENT_RECORD_FIELDS
    columns = _sql_row_columns(fields, csv_=fmt == "csv")
    encode, end = _JsonCells(fmt), ("\r\n" if fmt == "csv" else "\n")
    if fmt == "csv":
        yield ",".join(EVENT_COLUMNS) + "\r\n"
    for r in rows(
        tuple(columns), annotations=columns
    ):  # sequence; plain, JSON, plain, JSON, plain, JSON, plain
        yield f"{r[1]}{encode(r[2])}{r[3]}{encode(r[4])}{r[5]}{encode(r[6])}{r[7]}{end}"


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

    def rows(
        self, columns: tuple[str, ...], *, annotations: dict[str, Any] | None = None
    ) -> Iterator[tuple[Any, ...]]:
        """The events as value rows (sequence, then ``columns``): the fast path of the exports."""
        return audit_export_rows(self.plan, columns=columns, annotations=annotations)

    def stream(self) -> Iterator[str]:
        """Stream a text format (csv, jsonl, changes)."""
        if self.fmt == "changes":
            return stream_change_records_csv(
                change_records_newest_first(filters=self.plan.filters, scope=self.plan.scope)
            )
        if connection.vendor == "postgresql":
            return stream_event_lines(self.rows, self.fmt)
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


def _fit(text: Any, chars: int, lines: int = 1) -> str:
    """Cut text into at most ``lines`` lines of ``chars`` characters (a plain table cell, no Paragraph)."""
    text = " ".join(str("" if text is None else text).split())
    out: list[str] = []
    while text and len(out) < lines:
        if len(text) <= chars:
            out.append(text)
            text = ""
            break
        cut = text.rfind(" ", 0, chars + 1)
        cut = cut if cut > chars // 2 else chars
        out.append(text[:cut].rstrip())
        text = text[cut:].lstrip()
    if text and out:
        out[-1] = out[-1][: max(chars - 1, 1)].rstrip() + "…"
    return "\n".join(out) or "—"


# The records table: (header, width in mm, characters per line at 6.5 pt) for each column.
_RECORD_COLUMNS: tuple[tuple[str, float, int], ...] = (
    ("Change", 44, 34),
    ("App → environment", 30, 23),
    ("Outcome", 17, 12),
    ("Requested by", 28, 21),
    ("Approved by", 28, 21),
    ("Pull request", 16, 11),
    ("Merged", 28, 21),
    ("Deployed / healthy", 28, 21),
    ("Lead time", 14, 9),
    ("Version", 34, 26),
)
_RECORDS_PER_TABLE = 40  # small tables flow across pages cheaply (one huge table re-splits per page)


def _record_row(record: ChangeRecord) -> list[str]:
    """One change as a row of plain strings: who asked, who approved, which PR, when it was healthy."""
    widths = [c[2] for c in _RECORD_COLUMNS]
    approved = ", ".join(record.approvers)
    sod = {True: "", False: " (SELF-APPROVED)", None: ""}[record.separation_of_duties_ok]
    return [
        _fit(f"#{record.pk} {record.title or record.get_kind_display()}", widths[0], 3),
        _fit(f"{record.app} → {record.environment}", widths[1], 3),
        _fit(record.get_outcome_display() + (" EMERGENCY" if record.emergency else ""), widths[2], 2),
        _fit(record.requester_name or "—", widths[3]) + "\n" + _when(record.requested_at),
        (
            _fit(approved + sod, widths[4])
            + "\n"
            + _when(record.approved_at)
            + (f"\non {record.approved_head_sha[:12]}" if record.approved_head_sha else "")
        )
        if approved
        else "no approval",
        (f"PR #{record.pr_number}" if record.pr_number else "no PR")
        + ("\nmerged" if record.merged_at else ""),
        (_fit(f"by {record.merged_by or '—'}", widths[6]) + "\n" + _when(record.merged_at))
        if record.merged_at
        else "not merged",
        f"{_when(record.deployed_at)}\n{_when(record.healthy_at)}",
        record.lead_time_display if record.lead_time is not None else "—",
        _fit(f"{record.version_before_display or '—'} → {record.version_after_display or '—'}", widths[9], 2)
        + "\n"
        + _fit(f"{(record.revision_before or '—')[:10]} → {(record.revision_after or '—')[:10]}", widths[9]),
    ]


def write_pdf(job: ExportJob, path: str, *, created_by: str) -> int:
    """Write the change report; return the record count.

    A summary first (period, counts by outcome and environment, exceptions), then every change
    newest first, one row of plain strings each (who asked, who approved, which PR, merged by whom,
    when deployed and healthy, lead time, versions and revisions), in tables that fit the page. The
    per-record ledger evidence is in the signed bundle (``--format bundle``) and on each record's page.
    """
    from reportlab.lib import colors
    from reportlab.lib.pagesizes import A4, landscape
    from reportlab.lib.styles import getSampleStyleSheet
    from reportlab.lib.units import mm
    from reportlab.platypus import PageBreak, SimpleDocTemplate, Spacer, Table, TableStyle

    styles = getSampleStyleSheet()
    body, h1, h2 = styles["BodyText"], styles["Title"], styles["Heading2"]
    width = landscape(A4)[0] - 30 * mm  # 267 mm between the margins
    style = TableStyle(
        [
            ("GRID", (0, 0), (-1, -1), 0.25, colors.grey),
            ("VALIGN", (0, 0), (-1, -1), "TOP"),
            ("FONTSIZE", (0, 0), (-1, -1), 6.5),
            ("LEADING", (0, 0), (-1, -1), 7.5),
            ("TOPPADDING", (0, 0), (-1, -1), 1.5),
            ("BOTTOMPADDING", (0, 0), (-1, -1), 1.5),
            ("FONTNAME", (0, 0), (-1, 0), "Helvetica-Bold"),
            ("BACKGROUND", (0, 0), (-1, 0), colors.whitesmoke),
        ]
    )

    def table(rows: list[list[str]], widths_mm: list[float]) -> Any:
        scale = min(1.0, width / (sum(widths_mm) * mm))  # never wider than the page
        built = Table(rows, colWidths=[w * mm * scale for w in widths_mm], repeatRows=1, hAlign="LEFT")
        built.setStyle(style)
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
            f"Ledger signing key id: {current_key_id()}. Verify the ledger: python manage.py audit_verify. "
            "Each change's ledger events (with their hashes) are in the signed bundle of the same period "
            "(audit_export --format bundle) and on the change's evidence page.",
            body,
        ),
        Spacer(1, 4 * mm),
        _p("Summary", h2),
        _p(f"{summary.count} change(s) in the period.", body),
    ]
    if records:
        story += [
            table([["Outcome", "Changes"], *([k, str(v)] for k, v in summary.by_outcome.items())], [80, 30]),
            Spacer(1, 3 * mm),
            table(
                [["Environment", "Changes"], *([_fit(k, 60), str(v)] for k, v in summary.by_environment.items())],
                [80, 30],
            ),
            Spacer(1, 3 * mm),
            _p("Exceptions", h2),
            table([["Change", "Why"], *([_fit(k, 80, 2), _fit(v, 115, 3)] for k, v in summary.exceptions)], [110, 157])
            if summary.exceptions
            else _p("None: no emergency change, no self-approval, no failed or rolled-back change.", body),
            Spacer(1, 6 * mm),
            PageBreak(),  # the summary comes first; the records follow
            _p("Changes, newest first", h2),
        ]  # fmt: skip
    header = [c[0] for c in _RECORD_COLUMNS]
    widths = [c[1] for c in _RECORD_COLUMNS]
    for start in range(0, len(records), _RECORDS_PER_TABLE):
        chunk = records[start : start + _RECORDS_PER_TABLE]
        story.append(table([header, *(_record_row(r) for r in chunk)], widths))
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
