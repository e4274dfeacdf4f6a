"""change_record_sync: one record per source, partial updates, computed fields."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from audit.models import ChangeRecord
from audit.services import change_record_sync

pytestmark = pytest.mark.django_db


def test_sync_creates_then_updates_the_one_record_of_a_source():
    t0 = timezone.now() - timedelta(hours=2)
    first = change_record_sync(
        kind="promotion",
        source_type="promotion",
        source_id=42,
        app="payments-api",
        environment="prod",
        requester_name="alice",
        requested_at=t0,
        revision_before="a" * 40,
        gates=[{"name": "ci", "passed": True}],
    )
    again = change_record_sync(
        kind="promotion",
        source_type="promotion",
        source_id="42",
        app="payments-api",
        environment="prod",
        approvers=["bob"],
        approved_at=t0 + timedelta(minutes=5),
        pr_number=7,
        pr_url="http://forge/acme/gitops/pull/7",
        merged_at=t0 + timedelta(minutes=10),
        deployed_at=t0 + timedelta(minutes=12),
        healthy_at=(t0 + timedelta(minutes=15)).isoformat(),
        outcome="succeeded",
    )
    assert again.pk == first.pk
    assert ChangeRecord.objects.count() == 1
    record = ChangeRecord.objects.get()
    assert record.requester_name == "alice"  # kept from the first call
    assert record.revision_before == "a" * 40
    assert record.gates == [{"name": "ci", "passed": True, "detail": ""}]
    assert record.pr_number == 7
    assert record.outcome == "succeeded"
    assert record.lead_time == timedelta(minutes=15)
    assert record.occurred_at == t0
    assert record.separation_of_duties_ok is True


def test_self_approval_breaks_separation_of_duties():
    record = change_record_sync(
        kind="promotion",
        source_type="promotion",
        source_id="1",
        app="a",
        environment="prod",
        requester_name="Alice",
        approvers=["carol", "alice"],
    )
    assert record.separation_of_duties_ok is False


def test_no_approver_yet_means_separation_of_duties_unknown():
    record = change_record_sync(
        kind="rollback",
        source_type="rollback",
        source_id="1",
        app="a",
        environment="prod",
        requester_name="alice",
    )
    assert record.separation_of_duties_ok is None


def test_unknown_fields_and_bad_values_are_refused():
    with pytest.raises(TypeError):
        change_record_sync(
            kind="promotion", source_type="p", source_id="1", app="a", environment="prod", colour="red"
        )
    with pytest.raises(ValueError):
        change_record_sync(kind="deploy", source_type="p", source_id="1", app="a", environment="prod")
    with pytest.raises(ValueError):
        change_record_sync(
            kind="promotion", source_type="p", source_id="1", app="a", environment="prod", outcome="ok"
        )
    assert ChangeRecord.objects.count() == 0


def test_records_created_in_one_batch_read_like_records_synced_one_by_one():
    from audit.services import change_records_create

    when = timezone.now() - timedelta(hours=1)
    change_record_sync(kind="out_of_band", source_type="deployment", source_id=1, app="a", environment="prod")
    fields = {
        "kind": "out_of_band",
        "app": "a",
        "environment": "prod",
        "deployed_at": when,
        "outcome": "succeeded",
    }

    created = change_records_create(
        [
            {"source_type": "deployment", "source_id": 1, **fields, "title": "updated"},  # has one already
            {"source_type": "deployment", "source_id": 2, **fields, "requester_name": "bob"},
        ]
    )
    synced = change_record_sync(source_type="deployment", source_id=3, **fields, requester_name="bob")

    assert len(created) == 2
    assert ChangeRecord.objects.filter(source_type="deployment").count() == 3
    assert ChangeRecord.objects.get(source_id="1").title == "updated"
    batched = ChangeRecord.objects.get(source_id="2")
    for name in (
        "kind",
        "requester_name",
        "deployed_at",
        "occurred_at",
        "outcome",
        "lead_time",
        "separation_of_duties_ok",
    ):
        assert getattr(batched, name) == getattr(synced, name), name
