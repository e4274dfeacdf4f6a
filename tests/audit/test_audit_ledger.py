"""The ledger is append-only at the database, chained, and audit_verify names the first broken link."""

from __future__ import annotations

import threading

import pytest
from django.core.management import CommandError, call_command
from django.db import connection, connections, transaction
from django.db.utils import DatabaseError

from audit.bundle import verify_checkpoint
from audit.chain import event_hash
from audit.models import GENESIS_HASH, AuditCheckpoint, AuditEvent
from audit.services import (
    audit_checkpoint_create,
    audit_event_record,
    checkpoint_as_record,
    event_as_record,
)
from audit.signing import verification_keys
from audit.verify import audit_chain_verify


def _record(n: int, **extra) -> list[AuditEvent]:
    return [
        audit_event_record(
            action="promotion.requested",
            app="payments-api",
            environment="prod",
            message=f"event {i}",
            **extra,
        )
        for i in range(n)
    ]


def _drop_trigger() -> None:
    # What the owner role could do (the runtime role cannot: tests/audit/test_audit_roles.py).
    # Inside the test's transaction: rolled back (triggers restored) when the test ends.
    with connection.cursor() as cursor:
        cursor.execute("DROP TRIGGER audit_event_no_update_delete ON audit_auditevent")
        cursor.execute("DROP TRIGGER audit_checkpoint_no_update_delete ON audit_auditcheckpoint")


@pytest.mark.django_db
def test_events_chain_from_the_genesis_hash():
    events = _record(3)
    assert [e.sequence for e in events] == [1, 2, 3]
    assert events[0].prev_hash == GENESIS_HASH
    assert events[1].prev_hash == events[0].hash
    stored = AuditEvent.objects.get(sequence=2)
    assert event_hash(event_as_record(stored)) == stored.hash


@pytest.mark.django_db
@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE audit_auditevent SET message = 'edited' WHERE sequence = 1",
        "DELETE FROM audit_auditevent WHERE sequence = 1",
        "TRUNCATE audit_auditevent",
    ],
)
def test_the_database_refuses_update_delete_and_truncate(statement):
    _record(2)
    with (
        pytest.raises(DatabaseError, match="append-only"),
        transaction.atomic(),
        connection.cursor() as cursor,
    ):
        cursor.execute(statement)
    assert AuditEvent.objects.count() == 2
    assert AuditEvent.objects.get(sequence=1).message == "event 0"


@pytest.mark.django_db
def test_the_orm_refuses_to_save_an_existing_event():
    event = _record(1)[0]
    event.message = "edited"
    with pytest.raises(ValueError):
        event.save()


@pytest.mark.django_db
def test_audit_verify_passes_on_an_intact_chain(capsys):
    _record(5)
    audit_checkpoint_create()
    call_command("audit_verify")
    assert "OK: 5 events" in capsys.readouterr().out


@pytest.mark.django_db
def test_audit_verify_names_the_sequence_of_an_edited_row():
    _record(6)
    _drop_trigger()
    with connection.cursor() as cursor:
        cursor.execute("UPDATE audit_auditevent SET message = 'nothing to see' WHERE sequence = 4")
    report = audit_chain_verify(batch=2)  # small batches: the keyset walk crosses the edit
    assert not report.ok
    assert report.first_problem.sequence == 4
    with pytest.raises(CommandError, match="sequence 4"):
        call_command("audit_verify")


@pytest.mark.django_db
def test_audit_verify_detects_a_rehashed_row_by_the_broken_link():
    events = _record(5)
    _drop_trigger()
    forged = event_as_record(events[2])
    forged["message"] = "forged"
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE audit_auditevent SET message = %s, hash = %s WHERE sequence = 3",
            ["forged", event_hash(forged)],
        )
    report = audit_chain_verify()
    assert report.first_problem.sequence == 4
    assert "prev_hash" in report.first_problem.message


@pytest.mark.django_db
def test_audit_verify_detects_a_deleted_row_as_a_gap():
    _record(5)
    _drop_trigger()
    with connection.cursor() as cursor:
        cursor.execute("DELETE FROM audit_auditevent WHERE sequence = 3")
    with pytest.raises(CommandError, match="sequence 4"):
        call_command("audit_verify")


@pytest.mark.django_db
def test_audit_verify_detects_a_truncated_tail_through_the_signed_checkpoint():
    _record(5)
    audit_checkpoint_create()
    _drop_trigger()
    with connection.cursor() as cursor:
        cursor.execute("DELETE FROM audit_auditevent WHERE sequence = 5")
    report = audit_chain_verify()
    assert not report.ok
    assert report.first_problem.sequence == 5
    assert "missing" in report.first_problem.message


@pytest.mark.django_db
def test_a_checkpoint_signature_verifies_and_a_tampered_one_fails():
    _record(3)
    checkpoint = audit_checkpoint_create()
    assert checkpoint.head_sequence == 3 and checkpoint.event_count == 3
    assert audit_checkpoint_create() is None  # the head is already signed
    record = checkpoint_as_record(checkpoint)
    assert verify_checkpoint(record, verification_keys()) is None
    assert "does not verify" in verify_checkpoint({**record, "event_count": 2}, verification_keys())
    assert "does not verify" in verify_checkpoint({**record, "head_hash": "f" * 64}, verification_keys())

    _drop_trigger()
    AuditCheckpoint.objects.filter(pk=checkpoint.pk).update(event_count=2)
    with pytest.raises(CommandError, match="signature does not verify"):
        call_command("audit_verify")


@pytest.mark.django_db(transaction=True)
def test_concurrent_appends_from_eight_threads_keep_one_valid_chain():
    errors: list[BaseException] = []
    barrier = threading.Barrier(8)

    def worker(n: int) -> None:
        try:
            barrier.wait()
            for i in range(15):
                with transaction.atomic():
                    audit_event_record(action="deployment.observed", message=f"thread {n} event {i}")
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    sequences = list(AuditEvent.objects.order_by("sequence").values_list("sequence", flat=True))
    assert sequences == list(range(1, 121))
    report = audit_chain_verify()
    assert report.ok, report.problems
    assert report.count == 120


@pytest.mark.django_db
def test_credentials_are_redacted_from_before_and_after():
    event = audit_event_record(
        action="inventory.config_applied", before={"api_token": "abc"}, after={"nested": {"password": "x"}}
    )
    assert event.before == {"api_token": "[redacted]"}
    assert event.after == {"nested": {"password": "[redacted]"}}


@pytest.mark.django_db
def test_payloads_are_stored_as_they_hash_so_the_chain_recomputes():
    import datetime as dt
    import decimal
    import uuid

    event = audit_event_record(
        action="inventory.config_applied",
        app="x" * 300,
        after={
            "at": dt.datetime(2026, 3, 31, 14, 0, tzinfo=dt.UTC),
            "price": decimal.Decimal("1.50"),
            "id": uuid.UUID(int=1),
        },
    )
    stored = AuditEvent.objects.get(pk=event.pk)
    assert stored.after["price"] == "1.50" and len(stored.app) == 200
    assert event_hash(event_as_record(stored)) == stored.hash
    assert audit_chain_verify().ok


@pytest.mark.django_db
@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE audit_auditcheckpoint SET event_count = 1",
        "DELETE FROM audit_auditcheckpoint",
        "TRUNCATE audit_auditcheckpoint CASCADE",
    ],
)
def test_the_database_refuses_update_delete_and_truncate_of_checkpoints(statement):
    _record(2)
    audit_checkpoint_create()
    with (
        pytest.raises(DatabaseError, match="audit_auditcheckpoint is append-only"),
        transaction.atomic(),
        connection.cursor() as cursor,
    ):
        cursor.execute(statement)
    assert AuditCheckpoint.objects.get().event_count == 2


@pytest.mark.django_db
def test_numbers_the_database_normalises_do_not_break_the_chain():
    """PostgreSQL's jsonb keeps no negative zero and prints 1e20 in full: the hash must not see either."""
    from audit.services import audit_event_record
    from audit.verify import audit_chain_verify

    audit_event_record(
        action="promotion.requested",
        app="a",
        environment="prod",
        after={"x": -0.0, "big": 1e20, "small": 1e-7},
    )
    report = audit_chain_verify()
    assert report.ok, report.problems
