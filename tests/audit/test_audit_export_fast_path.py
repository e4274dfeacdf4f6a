"""The CSV and JSON Lines exports are built from value rows (and on PostgreSQL, cell text built by the
database): byte for byte what the per-event definition (stream_events_csv / event_jsonl_line) writes."""

from __future__ import annotations

import pytest
from django.core.management import call_command

from audit.exports import stream_events_csv, stream_events_jsonl
from audit.models import AuditEvent
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


def test_an_export_of_many_batches_has_every_row_once(tmp_path, monkeypatch):
    monkeypatch.setattr("audit.selectors.EXPORT_BATCH", 7)
    for i in range(30):
        audit_event_record(action="promotion.requested", message=f"event {i}", before={"i": i})
    out = tmp_path / "events.jsonl"
    call_command("audit_export", "--format", "jsonl", "--out", str(out))
    events = list(AuditEvent.objects.order_by("sequence"))
    assert out.read_text(encoding="utf-8") == "".join(stream_events_jsonl(events))
