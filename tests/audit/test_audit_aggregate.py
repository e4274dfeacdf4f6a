"""Unauthenticated failures are counted, not chained one row per request (audit.aggregate)."""

from __future__ import annotations

import json
import time

import pytest
from django.urls import reverse

from audit.aggregate import MANY_SOURCES, audit_aggregates_flush, audit_event_record_aggregated
from audit.models import AuditEvent
from audit.verify import audit_chain_verify
from sandbox.forge import signature
from tests.factories import GitRepositoryFactory, user_with_role

pytestmark = pytest.mark.django_db

LATER = 120  # seconds: the minute being counted has closed


def _counted(action: str) -> int:
    return sum(event.after["count"] for event in AuditEvent.objects.filter(action=action))


def test_a_hundred_badly_signed_webhook_deliveries_leave_two_ledger_rows_with_their_count(client):
    GitRepositoryFactory(webhook_secret="the-real-secret")
    body = json.dumps({"action": "opened", "number": 1}).encode()
    for _ in range(100):
        response = client.post(
            "/webhooks/forge/gitops/",
            body,
            content_type="application/json",
            HTTP_X_GITHUB_EVENT="pull_request",
            HTTP_X_HUB_SIGNATURE_256=signature("a-guessed-secret", body),
        )
        assert response.status_code == 403
    # One row per minute the flood spans (two if it crossed a minute boundary).
    windows = AuditEvent.objects.filter(action="webhook.rejected").count()
    assert windows <= 2
    assert audit_aggregates_flush(now=time.time() + LATER) == windows
    assert audit_aggregates_flush(now=time.time() + LATER) == 0  # a window is summarised once
    rows = AuditEvent.objects.filter(action="webhook.rejected").order_by("sequence")
    assert rows.count() == 2 * windows
    assert _counted("webhook.rejected") == 100
    summary = rows.filter(after__count__gt=1).first()
    assert (
        summary.after["source"] == "127.0.0.1" and "more webhook.rejected from 127.0.0.1" in summary.message
    )
    assert audit_chain_verify().ok


def test_deliveries_to_made_up_repositories_are_aggregated_across_names(client):
    for n in range(30):
        assert (
            client.post(f"/webhooks/forge/nope-{n}/", b"{}", content_type="application/json").status_code
            == 404
        )
    assert AuditEvent.objects.filter(action="webhook.rejected").count() <= 2
    audit_aggregates_flush(now=time.time() + LATER)
    assert AuditEvent.objects.filter(action="webhook.rejected").count() <= 4
    assert _counted("webhook.rejected") == 30


def test_failed_sign_ins_are_aggregated_per_source_and_minute(client):
    user_with_role("viewer", username="alice")
    for n in range(10):
        client.post(reverse("login"), {"username": f"guess-{n}", "password": "wrong"})
    assert AuditEvent.objects.filter(action="auth.login_failed").count() <= 2
    audit_aggregates_flush(now=time.time() + LATER)
    assert AuditEvent.objects.filter(action="auth.login_failed").count() <= 4
    assert _counted("auth.login_failed") == 10


def test_many_sources_in_one_minute_share_one_row(settings):
    settings.AUDIT_AGGREGATE_MAX_SOURCES = 3
    now = time.time()
    for n in range(10):
        for _ in range(2):
            audit_event_record_aggregated(
                action="webhook.rejected",
                source=f"10.0.0.{n}",
                now=now,
                message="missing or invalid signature",
            )
    first_rows = AuditEvent.objects.filter(action="webhook.rejected")
    assert sorted(row.after["source"] for row in first_rows) == [
        MANY_SOURCES,
        "10.0.0.0",
        "10.0.0.1",
        "10.0.0.2",
    ]
    audit_aggregates_flush(now=now + LATER)
    assert AuditEvent.objects.filter(action="webhook.rejected").count() == 8  # 4 first rows, 4 summaries
    assert _counted("webhook.rejected") == 20


def test_a_new_minute_records_the_source_again():
    # The start of a minute: offsets 0 and 1 share it, 61 and 62 share the next one.
    now = time.time() // 60 * 60
    for offset in (0, 1, 61, 62):
        audit_event_record_aggregated(action="auth.login_failed", source="192.0.2.7", now=now + offset)
    assert AuditEvent.objects.filter(action="auth.login_failed").count() == 2
