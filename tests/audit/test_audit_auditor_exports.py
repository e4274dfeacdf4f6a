"""Exports an auditor keeps: the change-record CSV, a PDF that opens with a summary, search, merged by."""

from __future__ import annotations

import csv
import io
import shutil
import subprocess
from datetime import timedelta
from pathlib import Path

import pytest
from django.core.management import call_command
from django.urls import reverse
from django.utils import timezone

from accounts.roles import Role
from audit.exports import audit_export_begin, audit_export_to_file
from audit.filters import AuditFilters
from audit.models import AuditEvent
from audit.services import audit_event_record, change_record_sync
from tests.factories import user_with_role

pytestmark = pytest.mark.django_db

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"


@pytest.fixture
def auditor_client(client):
    client.force_login(user_with_role(Role.AUDITOR, "auditor"))
    return client


# Argo CD's operationState as change records carry it (inventory.appstate.sync_result_of), two clusters.
SYNC_RESULT = {
    "phase": "Succeeded",
    "applications": {
        "payments-api-prod-eu-west-1": {
            "phase": "Succeeded", "message": "successfully synced (all tasks run)", "revision": "c0ffee" + "0" * 34,
            "revisions": [], "resources": {"total": 4, "Synced": 4},
            "started_at": "2026-12-01T10:00:00+00:00", "finished_at": "2026-12-01T10:00:20+00:00",
        },
        "payments-api-prod-us-east-1": {
            "phase": "Succeeded", "message": "successfully synced (all tasks run)", "revision": "c0ffee" + "0" * 34,
            "revisions": [], "resources": {"total": 4, "Synced": 4},
            "started_at": "2026-12-01T10:00:05+00:00", "finished_at": "2026-12-01T10:00:31+00:00",
        },
    },
}  # fmt: skip


def _record(source_id: int, *, days_ago: int, merged: bool = True, **extra):
    when = timezone.now() - timedelta(days=days_ago)
    audit_event_record(action="promotion.requested", target_type="promotion", target_id=source_id,
                       app="payments-api", environment="prod", message="requested",
                       correlation_id=f"corr{source_id:04d}")  # fmt: skip
    if merged:
        audit_event_record(action="promotion.merged", target_type="promotion", target_id=source_id,
                           app="payments-api", environment="prod", after={"merged_by": "portal-bot"},
                           message="PR merged by portal-bot")  # fmt: skip
    fields = {
        "requester_name": "alice", "project": "payments", "approvers": ["bob"], "pr_number": 100 + source_id,
        "pr_url": f"http://forge.example/acme/gitops/pull/{100 + source_id}",
        "revision_before": f"{source_id:x}" * 40, "revision_after": f"c0ffee{source_id:02d}" + "0" * 32,
        "versions_before": {"payments-api": "1.4.2"}, "versions_after": {"payments-api": "1.4.3"},
        "requested_at": when, "approved_at": when + timedelta(minutes=5),
        "merged_at": when + timedelta(minutes=10) if merged else None,
        "deployed_at": when + timedelta(minutes=12), "healthy_at": when + timedelta(minutes=15),
        "outcome": "succeeded", "title": f"payments-api 1.4.3 to prod (#{source_id})",
        "correlation_id": f"corr{source_id:04d}",
        "sync_result": SYNC_RESULT,
    } | extra  # fmt: skip
    return change_record_sync(kind="promotion", source_type="promotion", source_id=source_id,
                              app="payments-api", environment="prod", **fields)  # fmt: skip


def test_merged_by_comes_from_the_records_own_evidence():
    record = _record(1, days_ago=1)
    assert record.merged_by == "portal-bot"


def test_change_records_page_csv_is_one_plain_row_per_change_newest_first(auditor_client):
    _record(1, days_ago=3)
    _record(2, days_ago=1, incident="INC-4242", emergency=True, justification="pager")
    page = auditor_client.get(reverse("audit:change_list")).content.decode()
    assert reverse("audit:export", args=["changes"]) in page
    response = auditor_client.post(reverse("audit:export", args=["changes"]), {"env": "prod"})
    assert response["Content-Type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(b"".join(response.streaming_content).decode())))
    assert [r["pr_number"] for r in rows] == ["102", "101"]
    newest = rows[0]
    assert newest["apps"] == "payments-api" and newest["requested_by"] == "alice"
    assert newest["approved_by"] == "bob" and newest["merged_by"] == "portal-bot"
    assert newest["incident"] == "INC-4242" and newest["correlation_id"] == "corr0002"
    assert newest["version_after"] == "payments-api=1.4.3" and newest["emergency"] == "true"
    # Argo CD's sync result, in plain cells: phase, message, synced revision, resources, start/finish.
    assert newest["sync_phase"] == "Succeeded"
    assert newest["sync_message"] == "successfully synced (all tasks run)"
    assert newest["sync_revision"] == "c0ffee" + "0" * 34
    assert newest["sync_resources"] == "8 (Synced 8)"
    assert newest["sync_started_at"] == "2026-12-01T10:00:00.000000Z"
    assert newest["sync_finished_at"] == "2026-12-01T10:00:31.000000Z"
    assert not any(cell.startswith(("{", "[")) for row in rows for cell in row.values())
    assert AuditEvent.objects.filter(action="audit.exported", target_id="changes").exists()


@pytest.mark.parametrize("query", ["INC-4242", "corr0002", "PR #102", "#102", "102", "c0ffee02"])
def test_search_finds_incident_correlation_pr_number_and_sha_prefix(auditor_client, query):
    _record(1, days_ago=3)
    _record(2, days_ago=1, incident="INC-4242")
    html = auditor_client.get(reverse("audit:change_list"), {"text": query}).content.decode()
    assert "(#2)" in html and "(#1)" not in html


def test_pdf_opens_with_a_summary_then_records_newest_first(tmp_path):
    _record(1, days_ago=3)
    _record(2, days_ago=2, emergency=True, justification="pager duty at night")
    _record(3, days_ago=1, outcome="rolled_back", sync_result={})
    job = audit_export_begin(fmt="pdf", filters=AuditFilters(), scope=None, system_name="test")
    pdf = tmp_path / "report.pdf"
    assert audit_export_to_file(job, str(pdf), created_by="auditor") == {"change_records": 3}
    if not shutil.which("pdftotext"):  # scripts/ensure-chromium.sh installs poppler-utils for `make test`
        pytest.skip("pdftotext (poppler-utils) is not installed")
    text = subprocess.run(
        ["pdftotext", "-layout", str(pdf), "-"], capture_output=True, text=True, check=True
    ).stdout
    assert text.index("Summary") < text.index("Changes, newest first")
    assert "Exceptions" in text and "pager duty at night" in text and "rolled back" in text
    assert text.index("(#3)") < text.index("(#2)") < text.index("(#1)")
    assert "{}" not in text and "#—" not in text
    assert "merged by portal-bot" in text.lower() or "by portal-bot" in text
    # Each change's Argo CD sync result: its phase and how many resources it synced.
    assert "sync Succeeded" in text and "8 resources" in text
    ARTIFACTS.mkdir(exist_ok=True)
    shutil.copy(pdf, ARTIFACTS / "change-report.pdf")
    subprocess.run(
        ["pdftoppm", "-png", "-r", "70", "-f", "1", "-l", "2", str(pdf), str(ARTIFACTS / "change-report")],
        check=True,
    )


def test_audit_export_command_writes_the_change_record_csv(tmp_path):
    _record(1, days_ago=1, incident="INC-7")
    out = tmp_path / "changes.csv"
    call_command("audit_export", "--format", "changes", "--out", str(out))
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == 1 and rows[0]["incident"] == "INC-7" and rows[0]["merged_by"] == "portal-bot"
