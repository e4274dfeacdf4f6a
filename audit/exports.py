"""Exports of the ledger: CSV, JSON Lines, PDF change report and the signed bundle.

Every export first writes an ``audit.exported`` event (committed before a byte is streamed), then
fixes its sequence range at the chain head it just extended, and reads events by keyset batches
(CSV and JSON Lines on PostgreSQL: as a COPY stream, see EventLines), so a million events export
with flat memory.
"""

from __future__ import annotations

import csv
import hashlib
import json
import queue
import threading
import zipfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
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
    audit_export_copy_query,
    audit_export_events,
    audit_export_plan,
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
    "correlation_id", "sync_phase", "sync_message", "sync_revision", "sync_resources", "sync_started_at",
    "sync_finished_at",
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


def _sync_parts(result: Any) -> list[dict[str, Any]]:
    """The per-app sync results of a change's `sync_result` (one app, or several under `applications`)."""
    if not isinstance(result, dict) or not result:
        return []
    apps = result.get("applications")
    if isinstance(apps, dict):
        return [part for _name, part in sorted(apps.items()) if isinstance(part, dict)]
    return [result]


def _unique(values: Iterable[Any]) -> list[str]:
    return list(dict.fromkeys(str(v) for v in values if v))


def sync_result_cells(result: Any) -> dict[str, str]:
    """Argo CD's sync result of a change as plain cells: phase (the worst of its apps), message,
    synced revision, resource count (by sync status), first start and last finish."""
    parts = _sync_parts(result)
    if not parts:
        return dict.fromkeys(("phase", "message", "revision", "resources", "started_at", "finished_at"), "")
    counts: dict[str, int] = {}
    for part in parts:
        for key, value in (part.get("resources") or {}).items():
            if key != "total" and isinstance(value, int):
                counts[key] = counts.get(key, 0) + value
    total = sum(int((p.get("resources") or {}).get("total") or 0) for p in parts) or sum(counts.values())
    by_status = ", ".join(f"{key} {value}" for key, value in sorted(counts.items()))
    started = sorted(_unique(p.get("started_at") for p in parts))
    finished = sorted(_unique(p.get("finished_at") for p in parts))

    def iso(value: str) -> str:
        try:
            return str(_normalise(datetime.fromisoformat(value)))
        except ValueError:
            return value

    return {
        "phase": str(result.get("phase") or ""),
        "message": "; ".join(_unique(p.get("message") for p in parts)),
        "revision": ", ".join(
            _unique(r for p in parts for r in [p.get("revision"), *(p.get("revisions") or [])])
        ),
        "resources": f"{total} ({by_status})" if by_status else str(total),
        "started_at": iso(started[0]) if started else "",
        "finished_at": iso(finished[-1]) if finished else "",
    }


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
        **{f"sync_{key}": value for key, value in sync_result_cells(record.sync_result).items()},
    }


def stream_change_records_csv(records: Iterable[ChangeRecord]) -> Iterator[str]:
    writer = csv.writer(_Echo())
    yield writer.writerow(CHANGE_RECORD_CSV_COLUMNS)
    for record in records:
        row = change_record_csv_row(record)
        yield writer.writerow([_cell(row[name]) for name in CHANGE_RECORD_CSV_COLUMNS])


# PostgreSQL builds the plain cells of each line itself (ISO times, formula neutralising, CSV
# quoting, JSON string escaping: all as Python does them above). Columns are read from the row
# ``e`` (see _copy_statement).
_T = "e."
_SQL_ISO = f"""to_char({_T}"created_at" AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')"""
_SQL_BOOL = f"""CASE WHEN {_T}"out_of_band" THEN 'true' ELSE 'false' END"""
_SQL_FORMULA = "('=', '+', '-', '@', E'\\t', E'\\r')"  # _FORMULA_PREFIXES
_SQL_NEEDS_QUOTES = "E'[,\"\\r\\n]'"
_SQL_SPECIAL = "E'^[-=+@\\t\\r]|[,\"\\r\\n]'"
# Cells that are not text (the others are NOT NULL text columns).
_NOT_TEXT = frozenset({"sequence", "actor_id", "created_at", "out_of_band", "shas", "before", "after"})
# Whether any text cell of the row needs more than its text, in one test over the cells joined: a
# CSV cell starts after ^ or \x01 (a \x01 inside a cell can only make the test say yes for nothing);
# JSON escapes '"', '\' and U+0001-U+001F (text has no NUL), as escape_json and Python's encoder do.
_SQL_CSV_SPECIAL = "E'(^|\\x01)[-=+@\\t\\r]|[,\"\\r\\n]'"
_SQL_JSON_SPECIAL = "E'[\\x01-\\x1f\"\\\\\\\\]'"


def _sql_csv_cell(name: str, *, plain: bool) -> str:
    if name == "sequence":
        return f'{_T}"sequence"::text'
    if name == "actor_id":
        return f"coalesce({_T}\"actor_id\"::text, '')"
    if name == "created_at":
        return _SQL_ISO
    if name == "out_of_band":
        return _SQL_BOOL
    col = f'{_T}"{name}"'
    if plain:
        return col
    inert = f"(CASE WHEN left({col}, 1) IN {_SQL_FORMULA} THEN '''' || {col} ELSE {col} END)"
    quoted = f"'\"' || replace({inert}, '\"', '\"\"') || '\"'"
    special = f"(CASE WHEN {col} ~ {_SQL_NEEDS_QUOTES} THEN {quoted} ELSE {inert} END)"
    return f"(CASE WHEN {col} ~ {_SQL_SPECIAL} THEN {special} ELSE {col} END)"


def _sql_jsonl_value(name: str, *, plain: bool) -> str:
    if name == "sequence":
        return f'{_T}"sequence"::text'
    if name == "actor_id":
        return f"coalesce({_T}\"actor_id\"::text, 'null')"
    if name == "created_at":
        return f"('\"' || {_SQL_ISO} || '\"')"
    if name == "out_of_band":
        return _SQL_BOOL
    if plain:
        return f"""('"' || {_T}"{name}" || '"')"""
    return f'to_json({_T}"{name}")::text'


def _sql_segments(fields: tuple[str, ...], *, csv_: bool, plain: bool) -> list[str]:
    """Split a line at the JSON columns: one SQL text expression per run of plain columns.

    ``plain``: no text cell of the row needs quoting, neutralising or escaping (_sql_special).
    """
    segments: list[str] = []
    parts: list[str] = []
    for i, name in enumerate(fields):
        comma = "," if i else ""
        if name in _JSON_FIELDS:
            parts.append(f"'{comma}\"{name}\":'" if not csv_ else (f"'{comma}'" if comma else "''"))
            segments.append(" || ".join(parts))
            parts = []
        elif csv_:
            cell = _sql_csv_cell(name, plain=plain)
            parts.append(f"'{comma}' || {cell}" if comma else cell)
        else:
            parts.append(f"'{comma or '{'}\"{name}\":' || {_sql_jsonl_value(name, plain=plain)}")
    parts.append("''" if csv_ else "'}'")
    segments.append(" || ".join(parts))
    return segments


def _sql_special(fields: tuple[str, ...], *, csv_: bool) -> str:
    """True when some text cell of the row is not written as it is."""
    cols = ", ".join(f'{_T}"{n}"' for n in fields if n not in _NOT_TEXT)
    if csv_:
        return f"concat_ws(E'\\x01', {cols}) ~ {_SQL_CSV_SPECIAL}"
    return f"concat({cols}) ~ {_SQL_JSON_SPECIAL}"


def _sql_row_columns() -> dict[str, Any]:
    """The annotations of the export query: the JSON columns as jsonb text."""
    from django.db.models import TextField
    from django.db.models.expressions import RawSQL

    return {
        f"x_{name}": RawSQL(f'"audit_auditevent"."{name}"::text', (), output_field=TextField())  # noqa: S611 - fixed SQL
        for name in _JSON_FIELDS
    }


# When the database's jsonb text is, spaces apart, the export's JSON, PostgreSQL writes the cell.
# json_strip_nulls re-prints a json text without the spaces jsonb puts after ',' and ':' (keys in
# the order given, strings escaped by escape_json: '"', '\', U+0000-U+001F as \b \f \n \r \t or
# \u00xx, nothing else: what Python's encoder does with ensure_ascii=False). It would drop an
# object's null members, hence no ': null' in the text. jsonb prints numbers in plain notation and
# a fraction always has a '.': with no '.' outside strings every number is an integer, which Python
# prints with the same digits (a fraction: Python's shortest repr, 2.5e-07 for 0.00000025). CSV also
# needs sorted keys; jsonb orders keys by length first, so only a value with at most one key in
# all (at most one '": ') is known to agree. Anything else is re-encoded by Python (_JsonCells).
_SQL_NO_FRACTION = r"""'^([^".]|"([^"\\]|\\.)*")*$'"""
_SQL_TWO_KEYS = """'": .*": '"""


def _sql_canonical(text: str, *, csv_: bool) -> str:
    """The export cell of a JSON column computed by PostgreSQL, or NULL where Python must do it."""
    same = f"strpos({text}, ': null') = 0 AND (strpos({text}, '.') = 0 OR {text} ~ {_SQL_NO_FRACTION})"
    compact = f"json_strip_nulls({text}::json)::text"
    if not csv_:
        return f"CASE WHEN {text} IS NULL THEN 'null' WHEN {same} THEN {compact} END"
    # A compact value has a '"' or ',' exactly when the jsonb text does (same strings, separators).
    quoted = f"""'"' || replace({compact}, '"', '""') || '"'"""
    cell = (
        f"""CASE WHEN strpos({text}, '"') = 0 AND strpos({text}, ',') = 0 THEN {compact} ELSE {quoted} END"""
    )
    return (
        f"CASE WHEN {text} IS NULL OR {text} = 'null' THEN '' "
        f"WHEN left({text}, 1) IN ('[', '{{') AND {text} !~ {_SQL_TWO_KEYS} AND {same} THEN {cell} END"
    )


_PGCOPY = b"PGCOPY\n\xff\r\n\x00"
# Each tuple: the whole line; or, when one JSON cell needs Python, the text before it, its jsonb
# text and the text after it; or, when more do, the 7 parts of the line and the 3 jsonb texts.
_COPY_FIELDS = 14


def _copy_statement(sql: str, fields: tuple[str, ...], *, csv_: bool) -> str:
    """COPY the export query's rows as whole lines; a line needing Python comes in parts.

    ``sql`` selects ``sequence``, the other plain fields and the JSON columns' text (x_shas, …) in
    sequence order. Each level is fenced (OFFSET 0) so what the next one uses twice is computed once:
    the JSON cells and the escaping test, then the line's text segments, then the tuple.
    """
    canon = ", ".join(f"{_sql_canonical(f'e.x_{n}', csv_=csv_)} AS c{i}" for i, n in enumerate(_JSON_FIELDS))
    cells = f"SELECT e.*, {_sql_special(fields, csv_=csv_)} AS special, {canon} FROM ({sql}) AS e"  # noqa: S608 - fixed SQL
    segments = ", ".join(
        f"CASE WHEN e.special THEN {slow} ELSE {fast} END AS x_p{i}"
        for i, (slow, fast) in enumerate(
            zip(
                _sql_segments(fields, csv_=csv_, plain=False),
                _sql_segments(fields, csv_=csv_, plain=True),
                strict=True,
            )
        )
    )
    lines = (
        "SELECT e.sequence, e.c0, e.c1, e.c2, "  # noqa: S608 - fixed SQL
        + ", ".join(f"e.x_{n}" for n in _JSON_FIELDS)
        + ", (e.c0 IS NULL)::int + (e.c1 IS NULL)::int + (e.c2 IS NULL)::int AS missing"
        + f", {segments} FROM ({cells} ORDER BY e.sequence OFFSET 0) AS e"
    )
    end = "E'\\r\\n'" if csv_ else "E'\\n'"
    parts = ("m.x_p0", "m.c0", "m.x_p1", "m.c1", "m.x_p2", "m.c2", "m.x_p3")
    whole = " || ".join(parts)
    missing = "m.missing"  # how many JSON cells Python must encode
    # The first cell missing at index 1, 3 or 5 of parts: the line is parts[:i], that cell, parts[i+1:].
    head = " ".join(f"WHEN {parts[i]} IS NULL THEN {' || '.join(parts[:i])}" for i in (1, 3))
    tail = " ".join(f"WHEN {parts[i]} IS NULL THEN {' || '.join(parts[i + 1 :])}" for i in (1, 3))
    text = " ".join(f"WHEN m.c{i} IS NULL THEN m.x_{n}" for i, n in enumerate(_JSON_FIELDS[:2]))
    one = (
        f"CASE WHEN {missing} = 1 THEN CASE {head} ELSE {' || '.join(parts[:5])} END END, "
        f"CASE WHEN {missing} = 1 THEN CASE {text} ELSE m.x_{_JSON_FIELDS[2]} END END, "
        f"CASE WHEN {missing} = 1 THEN (CASE {tail} ELSE {parts[6]} END) || {end} END"
    )
    many = ", ".join(f"CASE WHEN {missing} > 1 THEN {p} END" for p in parts)
    raw = ", ".join(
        f"CASE WHEN {missing} > 1 AND m.c{i} IS NULL THEN m.x_{n} END" for i, n in enumerate(_JSON_FIELDS)
    )
    inner = f"{lines} ORDER BY e.sequence OFFSET 0"
    # (Only a whole line is concatenated whole: || would build most of a fallback line before its NULL.)
    line = f"CASE WHEN {missing} = 0 THEN {whole} || {end} END"
    select = f"SELECT {line}, {one}, {many}, {raw} FROM ({inner}) AS m"  # noqa: S608 - fixed SQL
    return f"COPY ({select}) TO STDOUT (FORMAT binary)"


def _copy_fields(row: memoryview | bytes) -> list[bytes | None]:
    """Split one binary COPY tuple (a field count, then each field's length and bytes; -1 is NULL)."""
    fields: list[bytes | None] = []
    pos = 2
    for _ in range(int.from_bytes(row[:2], "big")):
        size = int.from_bytes(row[pos : pos + 4], "big", signed=True)
        pos += 4
        if size < 0:
            fields.append(None)
        else:
            fields.append(bytes(row[pos : pos + size]))
            pos += size
    if pos != len(row):
        raise RuntimeError("COPY: expected one tuple per message")
    return fields


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


class _JsonCells:
    """Turn a JSON column's database text into its export cell, as the per-event definition does.

    Only the values PostgreSQL could not prove it prints identically come here (fractions, nulls
    in objects, keys whose order differs: see _sql_canonical). Short texts repeat (the same
    payload for many events), so their cells are remembered; the memory is bounded.
    """

    def __init__(self, fmt: str) -> None:
        self.csv = fmt == "csv"
        self.encode = _prebuilt(_CANONICAL) if self.csv else _prebuilt(_JSONL)
        self.seen: dict[bytes, bytes] = {}

    def __call__(self, raw: bytes) -> bytes:
        cell = self.seen.get(raw)
        if cell is not None:
            return cell
        value = _SCAN(raw.decode("utf-8"), 0)[0]
        if not self.csv:
            text = self.encode(value)
        elif isinstance(value, dict | list):
            text = _csv_quote(self.encode(value))
        else:
            text = _csv_quote(str(_cell(value)))
        cell = text.encode("utf-8")
        if len(raw) <= 512:
            if len(self.seen) >= 4096:
                self.seen.clear()
            self.seen[raw] = cell
        return cell


class EventLines:
    """The CSV or JSON Lines export as bytes, built by PostgreSQL; byte for byte the per-event one.

    ``COPY (SELECT …) TO STDOUT``: the database builds and streams whole lines while this process
    writes them (no round trip per batch, no text decoding); the rare line with a JSON value the
    database cannot print canonically comes in parts and Python encodes that value. The database
    side is the heavier one, so a long export outside a transaction runs as two COPYs at once (one
    connection each, alternate pieces of the sequence range, written in order; at most a few pieces
    in memory). ``count`` is the number of lines yielded so far (the CSV header included).
    """

    CHUNK = 1 << 20
    PIECE = 4000  # sequences per piece of a two-connection export (~4 MB of JSON Lines)
    WORKERS = 2

    def __init__(self, plan: ExportPlan, fmt: str) -> None:
        self.plan = plan
        self.fmt = fmt
        self.count = 0
        self.csv = fmt == "csv"
        self.fields = EVENT_COLUMNS if self.csv else EVENT_RECORD_FIELDS
        self.cells = _JsonCells(fmt)

    def __iter__(self) -> Iterator[bytes]:
        if self.csv:
            self.count += 1
            yield (",".join(EVENT_COLUMNS) + "\r\n").encode()
        plan, low, high = self.plan, self.plan.low, self.plan.high
        if low is None or high is None or low > high:
            return
        # In a transaction (tests, a caller's atomic block) other connections would not see its rows.
        if high - low + 1 < 2 * self.PIECE or connection.in_atomic_block:
            yield from self._chunks(self._lines(plan))
            return
        pieces = [
            replace(plan, low=start, high=min(start + self.PIECE - 1, high))
            for start in range(low, high + 1, self.PIECE)
        ]
        yield from self._parallel(pieces)

    def _chunks(self, lines: Iterator[bytes | memoryview]) -> Iterator[bytes]:
        chunk: list[bytes | memoryview] = []
        size = 0
        for line in lines:
            chunk.append(line)
            size += len(line)
            if size >= self.CHUNK:
                self.count += len(chunk)
                yield b"".join(chunk)
                chunk, size = [], 0
        if chunk:
            self.count += len(chunk)
            yield b"".join(chunk)

    def _parallel(self, pieces: list[ExportPlan]) -> Iterator[bytes]:
        stop = threading.Event()
        results: list[queue.Queue[tuple[bytes, int] | BaseException]] = [
            queue.Queue(maxsize=1) for _ in range(self.WORKERS)
        ]

        def put(k: int, item: tuple[bytes, int] | BaseException) -> bool:
            while not stop.is_set():
                try:
                    results[k].put(item, timeout=0.1)
                    return True
                except queue.Full:
                    continue
            return False

        def work(k: int) -> None:
            try:
                for piece in pieces[k :: self.WORKERS]:
                    lines = list(self._lines(piece))
                    if not put(k, (b"".join(lines), len(lines))):
                        return
            except BaseException as exc:  # handed to the consumer, raised there
                put(k, exc)
            finally:
                connection.close()  # this thread's own connection

        threads = [threading.Thread(target=work, args=(k,), daemon=True) for k in range(self.WORKERS)]
        for thread in threads:
            thread.start()
        try:
            for i in range(len(pieces)):
                item = results[i % self.WORKERS].get()
                if isinstance(item, BaseException):
                    raise item
                data, count = item
                if data:
                    self.count += count
                    yield data
        finally:
            stop.set()
            for thread in threads:
                thread.join()

    def _lines(self, plan: ExportPlan) -> Iterator[bytes | memoryview]:
        """The lines of one COPY over ``plan`` (on this thread's connection)."""
        plain = tuple(n for n in self.fields if n != "sequence" and n not in _JSON_FIELDS)
        query = audit_export_copy_query(plan, fields=plain, annotations=_sql_row_columns())
        if query is None:
            return
        cells = self.cells
        end = b"\r\n" if self.csv else b"\n"
        whole = 6 + 4 * (_COPY_FIELDS - 1)  # a whole line: the field count, its length, then NULLs
        with (
            connection.cursor() as cursor,
            cursor.cursor.copy(_copy_statement(query[0], self.fields, csv_=self.csv), query[1]) as copy,
        ):
            for row in copy:
                if row[:11] == _PGCOPY:  # the header arrives with the first tuple
                    row = row[19 + int.from_bytes(row[15:19], "big") :]
                if len(row) == 2:  # the trailer (-1)
                    continue
                length = int.from_bytes(row[2:6], "big", signed=True)
                if length >= 0 and len(row) == length + whole:
                    yield row[6 : 6 + length]
                elif length < 0 and (head := int.from_bytes(row[6:10], "big", signed=True)) >= 0:
                    at = 10 + head
                    size_raw = int.from_bytes(row[at : at + 4], "big")
                    raw = bytes(row[at + 4 : at + 4 + size_raw])
                    at += 4 + size_raw
                    size_tail = int.from_bytes(row[at : at + 4], "big")
                    if len(row) != at + 4 + size_tail + 4 * (_COPY_FIELDS - 4):
                        raise RuntimeError("COPY: expected one tuple per message")
                    yield b"".join((row[10 : 10 + head], cells(raw), row[at + 4 : at + 4 + size_tail]))
                else:
                    f = _copy_fields(row)
                    if any(f[:4]) or len(f) != _COPY_FIELDS:
                        raise RuntimeError("COPY: unexpected export tuple")
                    p0, c0, p1, c1, p2, c2, p3, *texts = f[4:]
                    jc = [
                        c if c is not None else cells(t or b"null")
                        for c, t in zip((c0, c1, c2), texts, strict=True)
                    ]
                    yield b"".join((p0 or b"", jc[0], p1 or b"", jc[1], p2 or b"", jc[2], p3 or b"", end))


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

    def stream(self) -> Iterator[str] | Iterator[bytes]:
        """Stream a text format (csv, jsonl, changes)."""
        if self.fmt == "changes":
            return stream_change_records_csv(
                change_records_newest_first(filters=self.plan.filters, scope=self.plan.scope)
            )
        if connection.vendor == "postgresql":
            return iter(EventLines(self.plan, self.fmt))
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


def _sync_line(result: Any, width: int) -> str:
    """The PDF's line about Argo CD's sync result ("" when none was recorded)."""
    cells = sync_result_cells(result)
    if not cells["phase"]:
        return ""
    count = cells["resources"].split(" ", 1)[0]
    return "\n" + _fit(f"sync {cells['phase']}", width) + "\n" + _fit(f"{count} resources", width)


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
        f"{_when(record.deployed_at)}\n{_when(record.healthy_at)}"
        + _sync_line(record.sync_result, widths[7]),
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
    if job.fmt != "changes" and connection.vendor == "postgresql":
        lines = EventLines(job.plan, job.fmt)
        with open(out_path, "wb") as fh:
            for data in lines:
                fh.write(data)
        return {"lines": lines.count}
    count = 0
    with open(out_path, "w", encoding="utf-8", newline="") as fh:
        for chunk in job.stream():
            fh.write(chunk if isinstance(chunk, str) else chunk.decode("utf-8"))
            count += 1
    return {"lines": count}
