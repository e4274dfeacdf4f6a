"""The CSV and JSON Lines exports are built from value rows (and on PostgreSQL, cell text built by the
database): byte for byte what the per-event definition (stream_events_csv / event_jsonl_line) writes."""

from __future__ import annotations

import pytest
from django.core.management import call_command

from audit.exports import EventLines, stream_events_csv, stream_events_jsonl
from audit.filters import AuditFilters
from audit.models import AuditEvent
from audit.selectors import audit_export_plan
from audit.services import audit_event_record
from audit.verify import audit_chain_verify
from tests.factories import user_with_role

pytestmark = pytest.mark.django_db

AWKWARD_TEXT = [
    "plain",
    "",
    'has "quotes", and a comma',
    "line one\nline two\r\nline three",
    "=SUM(A1)",
    "+1",
    "-1",
    "@x",
    "\tlead tab",
    "\rlead cr",
    "ünïcödé — ✓ \u2028 \x07 bell",
    "back\\slash",
    "mid=dle, -x",
    "'already quoted",
]
AWKWARD_JSON = [
    None,
    {},
    [],
    {
        "b": 1,
        "a": 2,
        "aa": [1.5, 1.0, 10**20, 2.5e-07],
        "é": "ü",
        "Z": None,
        "nested": {"y": True, "x": False},
    },
    ["c" * 40, "d" * 40],
    ["MixedCase", "with space"],
    "just a string",
    "=formula string",
    12,
    1.25,
    True,
    {"price": "1.50", "text": 'quote " and, comma\nnewline'},
]
# Values where PostgreSQL's jsonb text and the export's JSON could differ: each must either be
# printed identically by the database or be handed to Python (audit/exports.py _sql_canonical).
HARD_JSON = [
    {"k": 2.5e-07},  # numeric prints 0.00000025
    {"k": 1e16, "big": 10**20, "neg": -(10**19)},  # plain digits either way
    [0.1, 1.0, -0.0, 1e-05, 123456789.125],
    {"only": {"nested": "x"}},  # two keys in all: jsonb's order (by length) may not be sorted
    {"app": "a", "after": "1.4.3", "before": "1.4.2"},  # jsonb: app, after, before; sorted: after, app
    {"items": [{"app": "app-1", "after": "1.4.3", "before": "1.4.2"}], "state": "pr_open"},
    {"a": None},  # json_strip_nulls would drop it
    [None, {"b": [None]}],
    {"s": 'text with : null and 1.5 and ": " inside'},
    {"ü": "single key, non-ASCII"},
    {"é": 1, "zz": 2, "z": 3},  # é is two bytes: jsonb orders by byte length
    {"": ""},
    ["=cmd", "+x", "-y", "@z"],
    {"w": 'back\\slash " quote \n nl \x01 ctl \u2028 sep 😀'},
    "=formula",
    "-3",
    -3,
    1e16,
    2.5e-07,
    False,
    [["a" * 40, "b" * 40], []],
    {"state": "approved"},
    ["0123456789abcdef" * 2, "fedcba9876543210" * 2],
]


def _awkward_ledger() -> None:
    user = user_with_role("release_manager", username="=mallory")
    for i, text in enumerate(AWKWARD_TEXT):
        payload = AWKWARD_JSON[i % len(AWKWARD_JSON)]
        audit_event_record(
            action="inventory.config_applied",
            actor=user if i % 3 == 0 else None,
            system_name=None if i % 3 == 0 else text or "task",
            target_type=text[:60],
            target_id=text,
            target_label=text,
            app=text,
            environment=text[:60],
            project=text,
            cluster=text,
            shas=["a" * 40] if i % 2 else [],
            pr_url=text,
            correlation_id=text[:60] or "c",
            out_of_band=bool(i % 2),
            before=payload,
            after=AWKWARD_JSON[(i + 3) % len(AWKWARD_JSON)],
            message=text,
        )
    for payload in AWKWARD_JSON:
        audit_event_record(action="drift.detected", shas=payload if isinstance(payload, list) else [],
                           before=payload, after={"wrapped": payload}, message="json")  # fmt: skip
    for i, payload in enumerate(HARD_JSON):
        # One, two or three JSON cells of a line that the database cannot print, and none.
        audit_event_record(action="drift.detected", shas=payload if isinstance(payload, list) else [],
                           before=payload, after=HARD_JSON[(i + 5) % len(HARD_JSON)], message="hard")  # fmt: skip
        audit_event_record(action="drift.detected", before={"state": "ok"}, after=payload, message="one")  # fmt: skip
        audit_event_record(action="drift.detected", shas=[i, 1.5], before=payload, after=None, message="=two")  # fmt: skip


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_the_fast_export_writes_exactly_the_per_event_bytes(tmp_path, fmt):
    _awkward_ledger()
    out = tmp_path / f"events.{fmt}"
    call_command("audit_export", "--format", fmt, "--out", str(out))
    events = list(AuditEvent.objects.order_by("sequence"))
    expected = "".join(stream_events_csv(events) if fmt == "csv" else stream_events_jsonl(events))
    with open(out, encoding="utf-8", newline="") as fh:
        assert fh.read() == expected
    assert audit_chain_verify().ok


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_an_export_in_pieces_over_two_connections_has_every_row_once_in_order(tmp_path, monkeypatch, fmt):
    # Committed rows (no test transaction), so the export reads alternate pieces on two connections.
    monkeypatch.setattr(EventLines, "PIECE", 7)
    _awkward_ledger()
    for i in range(30):
        audit_event_record(action="promotion.requested", message=f"event {i}", before={"i": i, "f": i / 4})
    out = tmp_path / f"events.{fmt}"
    call_command("audit_export", "--format", fmt, "--out", str(out))
    events = list(AuditEvent.objects.order_by("sequence"))
    assert len(events) > 4 * 7
    expected = "".join(stream_events_csv(events) if fmt == "csv" else stream_events_jsonl(events))
    with open(out, encoding="utf-8", newline="") as fh:
        assert fh.read() == expected


def test_the_database_prints_the_common_payloads_itself():
    # The bench's and the portal's usual payloads take no Python re-encoding (the fast path's point).
    audit_event_record(action="drift.detected", shas=["a" * 40, "b" * 40], before={"state": "approved"},
                       after={"items": [{"app": "x", "before": "1.4.2", "after": "1.4.3"}], "state": "pr_open"})  # fmt: skip
    plan = audit_export_plan(filters=AuditFilters(), scope=None)
    jsonl = EventLines(plan, "jsonl")
    jsonl.cells = _Refuse()  # type: ignore[assignment]
    assert b"".join(jsonl).count(b"\n") == 1
    csv_ = EventLines(plan, "csv")
    calls = _Count(csv_.cells)
    csv_.cells = calls  # type: ignore[assignment]
    b"".join(csv_)
    assert calls.n == 1  # only `after`: nested keys whose jsonb order is not sorted


class _Refuse:
    def __call__(self, raw: bytes) -> bytes:
        raise AssertionError(f"Python re-encoded {raw!r}")


class _Count:
    def __init__(self, inner) -> None:
        self.inner, self.n = inner, 0

    def __call__(self, raw: bytes) -> bytes:
        self.n += 1
        return self.inner(raw)
