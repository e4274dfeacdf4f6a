"""Audit pages and API: an auditor answers who changed prod, who approved, which PR, when healthy."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from django.db import connection
from django.http import FileResponse, StreamingHttpResponse
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from accounts.roles import Role
from audit.bundle import verify_bundle
from audit.models import AuditEvent
from audit.services import audit_event_record, change_record_sync
from audit.signing import current_public_key_pem
from tests.factories import user_with_role

pytestmark = pytest.mark.django_db


@pytest.fixture
def auditor_client(client):
    client.force_login(user_with_role(Role.AUDITOR, "auditor"))
    return client


def _prod_promotion(source_id: int = 1, **extra):
    now = timezone.now()
    audit_event_record(action="promotion.requested", target_type="promotion", target_id=source_id,
                       app="payments-api", environment="prod", message="requested 1.4.3")  # fmt: skip
    audit_event_record(action="promotion.healthy", target_type="promotion", target_id=source_id,
                       app="payments-api", environment="prod", message="healthy")  # fmt: skip
    fields = {
        "requester_name": "alice", "project": "payments", "approvers": ["bob"], "pr_number": 17,
        "pr_url": "http://forge.example/acme/gitops/pull/17", "merged_by": "bob",
        "revision_before": "a" * 40, "revision_after": "b" * 40,
        "versions_before": {"prod-eu-west-1": "1.4.2"}, "versions_after": {"prod-eu-west-1": "1.4.3"},
        "gates": [{"name": "ci", "passed": True, "detail": "3 checks green"}],
        "sync_result": {"phase": "Succeeded"}, "requested_at": now - timedelta(days=2, minutes=30),
        "approved_at": now - timedelta(days=2, minutes=20), "merged_at": now - timedelta(days=2, minutes=10),
        "deployed_at": now - timedelta(days=2, minutes=5), "healthy_at": now - timedelta(days=2),
        "outcome": "succeeded", "title": "payments-api 1.4.3 to prod",
    } | extra  # fmt: skip
    return change_record_sync(kind="promotion", source_type="promotion", source_id=source_id,
                              app="payments-api", environment="prod", **fields)  # fmt: skip


def test_pages_need_the_auditor_role(client):
    url = reverse("audit:event_list")
    assert client.get(url).status_code == 302  # to the login page
    client.force_login(user_with_role(Role.VIEWER, "viewer"))
    for name in ("audit:event_list", "audit:change_list", "audit:public_key"):
        assert client.get(reverse(name)).status_code == 403
    assert client.post(reverse("audit:export", args=["csv"])).status_code == 403
    assert AuditEvent.objects.filter(action="auth.denied").count() == 4


def test_admins_see_the_audit_pages(client):
    client.force_login(user_with_role(Role.ADMIN, "admin"))
    assert client.get(reverse("audit:event_list")).status_code == 200


def test_event_list_filters_and_escapes(auditor_client):
    audit_event_record(
        action="promotion.merged", app="payments-api", environment="prod", message="<script>alert(1)</script>"
    )
    audit_event_record(action="drift.detected", app="search", environment="dev", message="drifted")
    response = auditor_client.get(reverse("audit:event_list"), {"env": "prod", "action": "promotion"})
    body = response.content.decode()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in body and "<script>alert(1)" not in body
    assert "drifted" not in body
    assert "audit-public-key" not in body or "Public key" in body
    assert "python manage.py audit_verify" in body
    partial = auditor_client.get(
        reverse("audit:event_list"),
        {"env": "prod", "since": "2026-03-31T14:00"},
        headers={"HX-Request": "true"},
    ).content.decode()
    # The export buttons are re-rendered with the table, so they keep the filters just applied.
    assert 'name="env" value="prod"' in partial and 'name="since" value="2026-03-31T14:00:00Z"' in partial
    bad = auditor_client.get(reverse("audit:event_list"), {"since": "yesterday-ish"}).content.decode()
    assert "not a date or date-time" in bad


def test_event_list_pages_by_keyset_with_a_constant_query_count(auditor_client):
    url = reverse("audit:event_list")
    for i in range(5):
        audit_event_record(action="deployment.observed", message=f"e{i}")
    auditor_client.get(url)  # warm caches (roles, content types)
    with CaptureQueriesContext(connection) as few:
        auditor_client.get(url)
    for i in range(75):
        audit_event_record(action="deployment.observed", message=f"more{i}")
    with CaptureQueriesContext(connection) as many:
        response = auditor_client.get(url)
    assert len(many) == len(few)
    assert all("OFFSET" not in q["sql"] for q in many.captured_queries)
    body = response.content.decode()
    head = AuditEvent.objects.order_by("-sequence").first().sequence
    cursor = head - 49  # the page shows the 50 newest; the next one starts below the 50th
    assert f"before={cursor}" in body
    second = auditor_client.get(url, {"before": cursor}, headers={"HX-Request": "true"})
    text = second.content.decode()
    assert "<h1>" not in text and 'id="audit-table"' in text  # the htmx partial
    assert "more24" in text and "more25" not in text and "e0" in text


def test_event_detail_shows_json_and_the_chain(auditor_client):
    first = audit_event_record(
        action="inventory.config_applied", before={"poll": 30}, after={"poll": "<b>60</b>"}
    )
    second = audit_event_record(action="inventory.config_applied")
    body = auditor_client.get(reverse("audit:event_detail", args=[second.sequence])).content.decode()
    assert (
        second.hash in body
        and first.hash in body
        and "matches" in body
        and f"links to #{first.sequence}" in body
    )
    body = auditor_client.get(reverse("audit:event_detail", args=[first.sequence])).content.decode()
    assert "&lt;b&gt;60&lt;/b&gt;" in body and "&quot;poll&quot;: 30" in body
    assert auditor_client.get(reverse("audit:event_detail", args=[999])).status_code == 404


def test_an_auditor_finds_who_promoted_what_to_prod_last_week(auditor_client):
    _prod_promotion()
    change_record_sync(kind="promotion", source_type="promotion", source_id=2, app="search", environment="stage",
                       requester_name="carol")  # fmt: skip
    last_week = (timezone.now() - timedelta(days=7)).strftime("%Y-%m-%d")
    response = auditor_client.get(reverse("audit:change_list"), {"env": "prod", "since": last_week})
    body = response.content.decode()
    assert "payments-api" in body and "carol" not in body
    for needle in ("alice", "bob", "#17", "http://forge.example/acme/gitops/pull/17", "4-eyes", "succeeded"):
        assert needle in body, needle
    healthy = (timezone.now() - timedelta(days=2)).strftime("%Y-%m-%d")
    assert healthy in body


def test_the_evidence_page_is_printable_and_links_the_ledger(auditor_client):
    record = _prod_promotion(approvers=["alice"])
    body = auditor_client.get(reverse("audit:change_detail", args=[record.pk])).content.decode()
    assert "css/audit.css" in body and "data-audit-print" in body
    assert "separation of duties broken" in body
    assert "promotion.requested" in body and "promotion.healthy" in body
    assert "3 checks green" in body and "1.4.2" in body and "1.4.3" in body
    assert "&quot;phase&quot;: &quot;Succeeded&quot;" in body


def test_csv_export_streams_after_its_event_is_committed(auditor_client):
    for i in range(30):
        audit_event_record(action="deployment.observed", environment="prod", message=f"m{i}")
    response = auditor_client.post(reverse("audit:export", args=["csv"]), {"env": "prod"})
    assert isinstance(response, StreamingHttpResponse)
    exported = AuditEvent.objects.get(action="audit.exported")  # before a byte was read
    assert exported.actor_name == "auditor" and exported.after["filters"] == {"env": "prod"}
    lines = b"".join(response.streaming_content).decode().splitlines()
    assert len(lines) == 31 and lines[0].startswith("sequence,created_at")
    assert response["X-Audit-Export-Event"] == str(exported.sequence)


def test_bundle_download_verifies(auditor_client, tmp_path):
    _prod_promotion()
    response = auditor_client.post(reverse("audit:export", args=["bundle"]))
    assert isinstance(response, FileResponse)
    assert response["Content-Disposition"].startswith('attachment; filename="audit-bundle-')
    path = tmp_path / "b.zip"
    path.write_bytes(b"".join(response.streaming_content))
    report = verify_bundle(str(path), public_key_pem_text=current_public_key_pem())
    assert report.ok, report.problems
    assert report.count == AuditEvent.objects.count()


def test_pdf_download(auditor_client):
    _prod_promotion()
    response = auditor_client.post(reverse("audit:export", args=["pdf"]), {"env": "prod"})
    assert b"".join(response.streaming_content).startswith(b"%PDF")


def test_exports_need_post_and_a_known_format(auditor_client):
    assert auditor_client.get(reverse("audit:export", args=["csv"])).status_code == 405
    assert auditor_client.post(reverse("audit:export", args=["xlsx"])).status_code == 404
    assert auditor_client.post(reverse("audit:export", args=["csv"]), {"since": "soon"}).status_code == 400
    assert not AuditEvent.objects.filter(action="audit.exported").exists()


def test_public_key_download(auditor_client):
    response = auditor_client.get(reverse("audit:public_key"))
    assert response.content.startswith(b"-----BEGIN PUBLIC KEY-----")


def test_api_lists_events_and_changes_with_cursors(auditor_client, client):
    for i in range(5):
        audit_event_record(action="promotion.merged", environment="prod", message=f"m{i}")
    _prod_promotion()
    prod = list(
        AuditEvent.objects.filter(environment="prod").order_by("-sequence").values_list("sequence", flat=True)
    )
    data = auditor_client.get("/api/v1/audit/events", {"limit": 3, "env": "prod"}).json()
    assert [e["sequence"] for e in data["events"]] == prod[:3]
    assert data["events"][0]["hash"] and data["next"] == prod[2]
    data = auditor_client.get(
        "/api/v1/audit/events", {"limit": 3, "before": data["next"], "env": "prod"}
    ).json()
    assert [e["sequence"] for e in data["events"]] == prod[3:6]
    changes = auditor_client.get("/api/v1/audit/changes", {"env": "prod"}).json()
    assert changes["changes"][0]["pr_number"] == 17 and changes["changes"][0]["approvers"] == ["bob"]
    assert changes["changes"][0]["separation_of_duties_ok"] is True
    assert auditor_client.get("/api/v1/audit/events", {"since": "nope"}).status_code == 400
    client.force_login(user_with_role(Role.VIEWER, "viewer"))
    assert client.get("/api/v1/audit/events").status_code == 403


def test_openapi_describes_the_audit_endpoints(client):
    schema = client.get("/api/schema").json()
    assert "/audit/events" in schema["paths"] and "/audit/changes" in schema["paths"]
    assert "ChangeRecord" in schema["components"]["schemas"]
    json.dumps(schema)


def test_a_project_scoped_auditor_sees_only_their_projects(client):
    from accounts.models import RoleGrant
    from tests.factories import ApplicationFactory, UserFactory

    ApplicationFactory(name="payments-api", project="payments")
    ApplicationFactory(name="search", project="search")
    user = UserFactory(username="scoped")
    RoleGrant.objects.create(user=user, role=Role.AUDITOR, project="payments")
    client.force_login(user)
    audit_event_record(
        action="promotion.merged",
        app="payments-api",
        project="payments",
        environment="prod",
        message="pay-event",
    )
    audit_event_record(
        action="promotion.merged", app="search", project="search", environment="prod", message="search-event"
    )
    mine = _prod_promotion()
    theirs = change_record_sync(
        kind="promotion", source_type="promotion", source_id=99, app="search", environment="prod"
    )
    body = client.get(reverse("audit:event_list")).content.decode()
    assert "pay-event" in body and "search-event" not in body
    assert client.get(reverse("audit:change_detail", args=[mine.pk])).status_code == 200
    assert client.get(reverse("audit:change_detail", args=[theirs.pk])).status_code == 404
    hidden = AuditEvent.objects.get(message="search-event")
    assert client.get(reverse("audit:event_detail", args=[hidden.sequence])).status_code == 404
    data = client.get("/api/v1/audit/events").json()
    assert {e["app"] for e in data["events"]} == {"payments-api"}
