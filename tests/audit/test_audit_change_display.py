"""How change records read: versions first, durations in words, per-app records of release trains."""

from __future__ import annotations

import base64
import re
import zlib
from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from accounts.models import RoleGrant
from accounts.roles import Role
from audit.exports import audit_export_begin, audit_export_to_file
from audit.filters import AuditFilters
from audit.models import AuditEvent
from audit.services import audit_event_record, change_record_sync
from core.durations import format_duration
from tests.factories import ApplicationFactory, UserFactory, user_with_role

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (timedelta(seconds=14.147051), "14 s"),
        (timedelta(minutes=3, seconds=20), "3 min 20 s"),
        (timedelta(hours=2, minutes=5, seconds=59), "2 h 5 min"),
        (timedelta(days=3, hours=4, minutes=30), "3 d 4 h"),
        (timedelta(hours=1), "1 h"),
        (timedelta(seconds=60), "1 min"),
        (timedelta(milliseconds=300), "< 1 s"),
        (timedelta(0), "0 s"),
        (timedelta(seconds=-5), "0 s"),
        (125.0, "2 min 5 s"),
        (None, ""),
    ],
)
def test_durations_read_as_their_two_largest_units(value, text):
    assert format_duration(value) == text


def _promotion_record(source_id: str, app: str, *, before: str, after: str, project: str = ""):
    now = timezone.now()
    return change_record_sync(
        kind="promotion", source_type="promotion", source_id=source_id, app=app, environment="prod",
        project=project, requester_name="alice", approvers=["bob"],
        revision_before="a1b2c3d4" + "0" * 32, revision_after="3dbcf1c5" + "f" * 32,
        versions_before={app: before}, versions_after={app: after},
        requested_at=now - timedelta(hours=2, minutes=5, seconds=30), healthy_at=now, outcome="succeeded",
        title=f"Promote {app} {before} → {after} to prod",
    )  # fmt: skip


@pytest.fixture
def auditor_client(client):
    client.force_login(user_with_role(Role.AUDITOR, "auditor"))
    return client


def test_the_change_list_shows_versions_first_and_lead_time_in_words(auditor_client):
    _promotion_record("7:payments-api", "payments-api", before="3.22.5", after="3.22.10")
    body = auditor_client.get(reverse("audit:change_list")).content.decode()
    assert "3.22.5 → 3.22.10" in body
    assert re.search(r'<small class="sha muted nowrap"[^>]*>a1b2c3d4 → 3dbcf1c5</small>', body)
    assert body.index("3.22.5 → 3.22.10") < body.index("a1b2c3d4 → 3dbcf1c5")
    assert "2 h 5 min" in body and "2:05:30" not in body


def test_the_evidence_page_of_one_app_of_a_release_train_lists_the_promotion_events(auditor_client):
    audit_event_record(action="promotion.requested", target_type="promotion", target_id=7,
                       app="payments-api,search", environment="prod", message="train requested")  # fmt: skip
    audit_event_record(action="promotion.healthy", target_type="promotion", target_id=7,
                       app="payments-api,search", environment="prod", message="train healthy")  # fmt: skip
    audit_event_record(action="promotion.requested", target_type="promotion", target_id=70,
                       app="payments-api", environment="prod", message="another promotion")  # fmt: skip
    record = _promotion_record("7:payments-api", "payments-api", before="3.22.5", after="3.22.10")
    body = auditor_client.get(reverse("audit:change_detail", args=[record.pk])).content.decode()
    assert "train requested" in body and "train healthy" in body and "another promotion" not in body
    assert "Ledger evidence (2 events)" in body
    assert "3.22.5 → 3.22.10" in body and "2 h 5 min" in body


def test_a_project_scoped_auditor_sees_their_app_of_a_release_train(client):
    ApplicationFactory(name="payments-api", project="payments")
    ApplicationFactory(name="search", project="search")
    user = UserFactory(username="scoped")
    RoleGrant.objects.create(user=user, role=Role.AUDITOR, project="payments")
    client.force_login(user)
    train = audit_event_record(action="promotion.requested", target_type="promotion", target_id=8,
                               app="payments-api,search", project="payments,search", environment="prod",
                               message="train-event")  # fmt: skip
    other = audit_event_record(action="promotion.requested", target_type="promotion", target_id=9,
                               app="search,search-ui", project="search", environment="prod",
                               message="other-train")  # fmt: skip
    lookalike = audit_event_record(
        action="promotion.requested", app="payments-api-v2,x", project="payments-v2", message="lookalike"
    )
    mine = _promotion_record(
        "8:payments-api", "payments-api", before="1.0.0", after="1.1.0", project="payments"
    )
    theirs = _promotion_record("8:search", "search", before="2.0.0", after="2.1.0", project="search")

    changes = client.get(reverse("audit:change_list")).content.decode()
    assert "1.0.0 → 1.1.0" in changes and "2.0.0 → 2.1.0" not in changes
    assert client.get(reverse("audit:change_detail", args=[mine.pk])).status_code == 200
    assert client.get(reverse("audit:change_detail", args=[theirs.pk])).status_code == 404
    events = client.get(reverse("audit:event_list")).content.decode()
    assert "train-event" in events and "other-train" not in events and "lookalike" not in events
    assert client.get(reverse("audit:event_detail", args=[train.sequence])).status_code == 200
    assert client.get(reverse("audit:event_detail", args=[other.sequence])).status_code == 404
    assert client.get(reverse("audit:event_detail", args=[lookalike.sequence])).status_code == 404
    filtered = client.get(reverse("audit:event_list"), {"app": "payments-api"}).content.decode()
    assert "train-event" in filtered
    assert AuditEvent.objects.filter(app="payments-api,search").count() == 1


def _pdf_text(data: bytes) -> str:
    """The page streams of a ReportLab PDF (ASCII85 + Flate), decoded."""
    texts = []
    for stream in re.findall(rb"stream\r?\n(.*?)endstream", data, re.S):
        raw = stream.strip()
        if raw.endswith(b"~>"):
            raw = base64.a85decode(raw[:-2])
        try:
            texts.append(zlib.decompress(raw).decode("latin-1"))
        except zlib.error:
            texts.append(raw.decode("latin-1"))
    return "\n".join(texts)


def test_the_pdf_report_shows_versions_and_the_lead_time_in_words(tmp_path):
    _promotion_record("7:payments-api", "payments-api", before="3.22.5", after="3.22.10")
    job = audit_export_begin(fmt="pdf", filters=AuditFilters(env="prod"), scope=None, system_name="test")
    out = tmp_path / "report.pdf"
    assert audit_export_to_file(job, str(out), created_by="test") == {"change_records": 1}
    text = _pdf_text(out.read_bytes())
    assert "2 h 5 min" in text and "2:05:30" not in text
    assert "3.22.5" in text and "3.22.10" in text


def test_the_migration_moves_single_app_promotion_records_to_their_per_app_id():
    from importlib import import_module

    from django.apps import apps

    from audit.models import ChangeRecord

    migration = import_module("audit.migrations.0004_promotion_records_per_app")
    single = change_record_sync(
        kind="promotion", source_type="promotion", source_id=5, app="search", environment="prod"
    )
    train = change_record_sync(
        kind="promotion", source_type="promotion", source_id=6, app="a,b", environment="prod"
    )
    rollback = change_record_sync(
        kind="rollback", source_type="rollback", source_id=5, app="search", environment="prod"
    )

    migration.forwards(apps, None)

    assert ChangeRecord.objects.get(pk=single.pk).source_id == "5:search"
    assert ChangeRecord.objects.get(pk=train.pk).source_id == "6"
    assert ChangeRecord.objects.get(pk=rollback.pk).source_id == "5"
    migration.backwards(apps, None)
    assert ChangeRecord.objects.get(pk=single.pk).source_id == "5"
