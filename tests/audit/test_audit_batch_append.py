"""audit_events_record: many events with one lock, one head read and one INSERT; same chain as one by one."""

from __future__ import annotations

import itertools
import threading

import pytest
from django.db import connection, connections, transaction
from django.test.utils import CaptureQueriesContext

from audit.chain import event_hash
from audit.models import GENESIS_HASH, AuditEvent
from audit.services import audit_event_record, audit_events_record, event_as_record
from audit.verify import audit_chain_verify
from core.bulkinsert import COPY_MIN_ROWS
from insight.models import Delivery, Subscription
from insight.services import subscription_create


def _items(n: int, start: int = 0) -> list[dict]:
    return [
        {
            "action": "deployment.observed",
            "app": f"app-{i}",
            "project": "payments",
            "environment": "prod",
            "target_type": "deployment",
            "target_id": i,
            "after": {"revision": f"{i:040x}", "images": [f"registry/app:{i}"]},
            "message": f"deployment {i} observed",
            "system_name": "poller",
        }
        for i in range(start, start + n)
    ]


@pytest.mark.django_db
def test_a_batch_chains_after_the_head_in_order_and_verifies():
    first = audit_event_record(action="promotion.requested", app="a", environment="prod")
    events = audit_events_record(_items(5))
    assert [e.sequence for e in events] == [2, 3, 4, 5, 6]
    assert events[0].prev_hash == first.hash
    assert all(b.prev_hash == a.hash for a, b in itertools.pairwise(events))
    stored = list(AuditEvent.objects.order_by("sequence"))
    assert [e.pk for e in stored[1:]] == [e.pk for e in events]
    assert all(event_hash(event_as_record(e)) == e.hash for e in stored)
    assert stored[3].actor_name == "system:poller" and stored[3].project == "payments"
    last = audit_event_record(action="promotion.requested", app="a", environment="prod")
    assert last.sequence == 7 and last.prev_hash == events[-1].hash
    assert audit_chain_verify().ok


@pytest.mark.django_db
def test_an_empty_batch_writes_nothing_and_an_unknown_action_writes_nothing():
    assert audit_events_record([]) == []
    with pytest.raises(ValueError, match="audit_events_record: unknown action"):
        audit_events_record([*_items(2), {"action": "not.an.action"}])
    assert AuditEvent.objects.count() == 0
    assert audit_events_record(_items(1))[0].prev_hash == GENESIS_HASH


@pytest.mark.django_db
def test_the_query_count_of_a_batch_does_not_grow_with_its_size(django_capture_on_commit_callbacks):
    def queries(n: int) -> int:
        with django_capture_on_commit_callbacks(execute=True), CaptureQueriesContext(connection) as ctx:
            audit_events_record(_items(n))
        return len(ctx.captured_queries)

    # Two plans, each of a fixed number of statements: one multi-row INSERT for a few events, COPY
    # (through a temporary table) from COPY_MIN_ROWS on.
    assert queries(3) == queries(COPY_MIN_ROWS - 1) <= 6  # savepoint, lock, head, insert, release; notify
    # ... and the ids, the temporary table, insert … select, its truncation
    assert queries(COPY_MIN_ROWS) == queries(3 * COPY_MIN_ROWS) <= 9


@pytest.mark.django_db
def test_a_batch_is_notified_to_matching_subscriptions_after_commit(django_capture_on_commit_callbacks):
    subscription_create(
        actor=None, name="hook", project_glob="*", event_kinds=["deployment.*"],
        target_kind=Subscription.Target.GENERIC, url="http://127.0.0.1:9/hook", secret="s" * 20,
    )  # fmt: skip
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        events = audit_events_record(_items(3))
    assert Delivery.objects.count() == 0
    for callback in callbacks:
        callback()
    assert sorted(Delivery.objects.values_list("event_sequence", flat=True)) == [e.sequence for e in events]


@pytest.mark.django_db(transaction=True)
def test_batches_and_single_appends_from_eight_threads_keep_one_valid_chain():
    errors: list[BaseException] = []
    barrier = threading.Barrier(8)

    def worker(n: int) -> None:
        try:
            barrier.wait()
            for i in range(5):
                with transaction.atomic():
                    if n % 2:
                        audit_events_record(_items(4, start=100 * n + 10 * i))
                    else:
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
    assert list(AuditEvent.objects.order_by("sequence").values_list("sequence", flat=True)) == list(
        range(1, 4 * 5 * 4 + 4 * 5 + 1)
    )
    report = audit_chain_verify()
    assert report.ok, report.problems
