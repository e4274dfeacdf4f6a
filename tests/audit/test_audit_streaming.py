"""Exports and verification stream: memory stays flat however long the ledger is."""

from __future__ import annotations

import tracemalloc

import pytest
from django.http import StreamingHttpResponse
from django.urls import reverse
from django.utils import timezone

from accounts.roles import Role
from audit.chain import event_hash
from audit.models import GENESIS_HASH, AuditEvent
from audit.services import event_as_record
from audit.verify import audit_chain_verify
from tests.factories import user_with_role

pytestmark = pytest.mark.django_db

N = 20_000


def _bulk_chain(n: int) -> None:
    """Append n valid chained events fast (bulk insert of rows hashed like audit_event_record does)."""
    last = AuditEvent.objects.order_by("-sequence").values_list("sequence", "hash").first()
    sequence, prev = last if last else (0, GENESIS_HASH)
    now = timezone.now()
    rows = []
    for i in range(n):
        sequence += 1
        event = AuditEvent(
            sequence=sequence, created_at=now, actor_name="system:bench", actor_type="system",
            action="deployment.observed", app=f"app-{i % 50}", environment="prod",
            message=f"observed revision {i:040d}", after={"revision": f"{i:040d}", "images": ["registry/app:1.0"]},
            prev_hash=prev,
        )  # fmt: skip
        event.hash = event_hash(event_as_record(event))
        prev = event.hash
        rows.append(event)
        if len(rows) == 2000:
            AuditEvent.objects.bulk_create(rows)
            rows = []
    AuditEvent.objects.bulk_create(rows)


def _peak_mib(consume) -> tuple[float, object]:
    tracemalloc.start()
    try:
        result = consume()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return peak / 2**20, result


def test_a_20k_event_jsonl_export_streams_with_bounded_memory(client):
    _bulk_chain(N)
    client.force_login(user_with_role(Role.AUDITOR, "auditor"))
    response = client.post(reverse("audit:export", args=["jsonl"]))
    assert isinstance(response, StreamingHttpResponse)

    def consume() -> tuple[int, int]:
        lines = size = 0
        for chunk in response.streaming_content:
            lines += chunk.count(b"\n")  # chunks carry whole lines, many at a time
            size += len(chunk)
        return lines, size

    peak, (lines, size) = _peak_mib(consume)
    assert lines == AuditEvent.objects.count()
    # Holding the export in memory would need more than the whole file; streaming needs a batch.
    assert peak * 2**20 < size / 3, (peak, size)
    assert peak < 8, f"peak {peak:.1f} MiB"


def test_audit_verify_walks_20k_events_with_bounded_memory():
    _bulk_chain(N)
    peak, report = _peak_mib(lambda: audit_chain_verify(batch=1000))
    assert report.ok and report.count == N
    assert peak < 8, f"peak {peak:.1f} MiB"
