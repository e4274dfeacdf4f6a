"""The one change-request lifecycle, for both kinds: claims, the sweeper, the deploy timeout, backoff."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from celery.signals import before_task_publish
from django.conf import settings
from django.db import connection
from django.utils import timezone

from audit.models import AuditEvent
from changes.backoff import retry_countdown
from changes.lifecycle import change_claim, change_fail, change_kinds
from changes.sweeper import change_sweep
from changes.tracking import change_deploy_timeout, change_tracking_error
from promotions import tasks as promotion_tasks
from promotions.kind import PROMOTION
from promotions.models import Promotion, PromotionState
from rollbacks import tasks as rollback_tasks
from rollbacks.kind import ROLLBACK
from rollbacks.models import RollbackRequest
from tests.factories import ApplicationFactory, EnvironmentFactory, GitRepositoryFactory

RS = RollbackRequest.State
PS = PromotionState


@pytest.fixture
def published():
    """The task messages the code under test publishes (name, first argument, expires set)."""
    sent: list[tuple[str, int, bool]] = []

    def record(sender=None, headers=None, body=None, **kwargs):
        headers = headers or {}
        args = body[0] if isinstance(body, tuple | list) and body else []
        sent.append(
            (str(headers.get("task", sender)), int(args[0]) if args else -1, bool(headers.get("expires")))
        )

    before_task_publish.connect(record, weak=False)
    yield sent
    before_task_publish.disconnect(record)


@pytest.fixture
def rows(db):
    stage = EnvironmentFactory(name="stage", order=20)
    prod = EnvironmentFactory(name="prod", order=30)
    repository = GitRepositoryFactory()
    app = ApplicationFactory(repository=repository)

    def promotion(state: str, **fields) -> Promotion:
        return Promotion.objects.create(
            state=state, source_env=stage, target_env=prod, repository=repository, **fields
        )

    def rollback(state: str, **fields) -> RollbackRequest:
        return RollbackRequest.objects.create(
            application=app,
            environment=prod,
            mode="previous",
            state=state,
            requested_by_name="oncall",
            reason="r",
            base_branch="main",
            current_revision="a" * 40,
            **fields,
        )

    return promotion, rollback


def _actions(target_type: str, pk: int) -> list[str]:
    return list(
        AuditEvent.objects.filter(target_type=target_type, target_id=str(pk))
        .order_by("sequence")
        .values_list("action", flat=True)
    )


def test_both_kinds_are_registered_with_the_lifecycle():
    assert {kind.name for kind in change_kinds()} >= {"promotion", "rollback"}


def test_a_second_claim_loses_while_the_first_holds_the_lease_for_both_kinds(rows):
    promotion, rollback = rows
    p = promotion(PS.APPROVED, approved_at=timezone.now())
    r = rollback(RS.REQUESTED)

    assert change_claim(kind=PROMOTION, change_id=p.pk) is True
    assert change_claim(kind=PROMOTION, change_id=p.pk) is False
    assert change_claim(kind=ROLLBACK, change_id=r.pk) is True
    assert change_claim(kind=ROLLBACK, change_id=r.pk) is False

    p.refresh_from_db()
    r.refresh_from_db()
    assert p.state == PS.PR_OPENING and p.attempts == 1 and p.claimed_until > timezone.now()
    assert r.state == RS.REQUESTED and r.attempts == 1 and r.claimed_until > timezone.now()
    # The lease outlives the hard time limit: a running task never loses its claim.
    assert p.claimed_until - timezone.now() > timedelta(seconds=settings.CELERY_TASK_TIME_LIMIT)

    # A lapsed lease (killed worker) can be claimed again.
    Promotion.objects.filter(pk=p.pk).update(claimed_until=timezone.now() - timedelta(seconds=1))
    RollbackRequest.objects.filter(pk=r.pk).update(claimed_until=timezone.now() - timedelta(seconds=1))
    assert change_claim(kind=PROMOTION, change_id=p.pk) is True
    assert change_claim(kind=ROLLBACK, change_id=r.pk) is True


@pytest.mark.django_db(transaction=True)
def test_concurrent_claims_of_one_row_have_exactly_one_winner():
    stage = EnvironmentFactory(name="stage", order=20)
    prod = EnvironmentFactory(name="prod", order=30)
    p = Promotion.objects.create(
        state=PS.APPROVED, source_env=stage, target_env=prod, repository=GitRepositoryFactory()
    )
    results: list[bool] = []
    barrier = threading.Barrier(4)

    def claim() -> None:
        barrier.wait()
        try:
            results.append(change_claim(kind=PROMOTION, change_id=p.pk))
        finally:
            connection.close()

    threads = [threading.Thread(target=claim) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [False, False, False, True]


def test_the_sweeper_re_enqueues_a_lost_promotion_and_a_lost_rollback(rows, published):
    promotion, rollback = rows
    now = timezone.now()
    lost_p = promotion(PS.APPROVED, approved_at=now - timedelta(minutes=5))
    promotion(PS.APPROVED, approved_at=now)  # its own message is running
    lapsed_p = promotion(PS.PR_OPENING, approved_at=now, claimed_until=now - timedelta(seconds=1))
    lost_r = rollback(RS.REQUESTED, requested_at=now - timedelta(minutes=5))
    rollback(RS.REQUESTED, requested_at=now, claimed_until=now + timedelta(minutes=5))  # claimed
    merged_r = rollback(RS.MERGED, requested_at=now - timedelta(minutes=5))
    # Request-time branch pushes: a lost one, one running, one done (awaiting approval).
    unpushed_p = promotion(PS.REQUESTED, requested_at=now - timedelta(minutes=5))
    promotion(PS.REQUESTED, requested_at=now)
    promotion(PS.REQUESTED, requested_at=now - timedelta(minutes=5), branch_pushed_at=now)

    assert change_sweep(kind=PROMOTION, now=now) == {"reopened": 2, "repushed": 1, "tracked": 0, "synced": 0}
    assert change_sweep(kind=ROLLBACK, now=now) == {"reopened": 1, "repushed": 0, "tracked": 1, "synced": 0}

    assert sorted(published) == sorted(
        [
            ("promotions.tasks.promotion_pr_open_task", lost_p.pk, False),
            ("promotions.tasks.promotion_pr_open_task", lapsed_p.pk, False),
            ("promotions.tasks.promotion_branch_push_task", unpushed_p.pk, False),
            ("rollbacks.tasks.rollback_pr_open_task", lost_r.pk, False),
            # Tracking messages expire: a backed-up queue does not pile up duplicates.
            ("rollbacks.tasks.rollback_track_task", merged_r.pk, True),
        ]
    )


@pytest.mark.parametrize("kind_name", ["promotion", "rollback"])
def test_a_merged_change_not_deployed_in_time_fails_with_the_reason(rows, kind_name):
    promotion, rollback = rows
    kind, make = (PROMOTION, promotion) if kind_name == "promotion" else (ROLLBACK, rollback)
    timeout = timedelta(minutes=settings.PROMOTION_DEPLOY_TIMEOUT_MINUTES)
    fresh = make("merged", merged_at=timezone.now() - timeout + timedelta(minutes=1))
    late = make("merged", merged_at=timezone.now() - timeout - timedelta(seconds=1))

    assert change_deploy_timeout(kind=kind, change=fresh, reason="prod does not run it") is False
    assert change_deploy_timeout(kind=kind, change=late, reason="prod does not run it") is True

    late.refresh_from_db()
    fresh.refresh_from_db()
    assert fresh.state == "merged"
    assert late.state == "failed" and late.failure_reason == "prod does not run it" and late.failed_at
    event = AuditEvent.objects.get(target_type=kind_name, target_id=str(late.pk))
    assert event.action == f"{kind_name}.deploy_timed_out"
    assert event.after["timeout_minutes"] == settings.PROMOTION_DEPLOY_TIMEOUT_MINUTES
    assert event.message == "prod does not run it"
    # Timing out twice does nothing more.
    assert change_deploy_timeout(kind=kind, change=late, reason="again") is False


@pytest.mark.parametrize("kind_name", ["promotion", "rollback"])
def test_a_tracking_error_is_recorded_once_and_cleared(rows, kind_name):
    promotion, rollback = rows
    kind, make = (PROMOTION, promotion) if kind_name == "promotion" else (ROLLBACK, rollback)
    change = make("pr_open", pr_number=7)

    change_tracking_error(kind=kind, change=change, error="cannot read pull request #7: gone")
    change_tracking_error(kind=kind, change=change, error="cannot read pull request #7: gone")
    assert _actions(kind_name, change.pk) == [f"{kind_name}.tracking_error"]
    change_tracking_error(kind=kind, change=change, error="")
    change.refresh_from_db()
    assert change.tracking_error == ""
    assert _actions(kind_name, change.pk) == [f"{kind_name}.tracking_error"]


def test_failing_releases_the_claim_and_writes_the_kinds_event(rows):
    promotion, rollback = rows
    p = promotion(PS.PR_OPENING, claimed_until=timezone.now() + timedelta(minutes=5))
    item = p.items.create(application=ApplicationFactory(), target_env=p.target_env)
    r = rollback(RS.REQUESTED, claimed_until=timezone.now() + timedelta(minutes=5))

    assert change_fail(kind=PROMOTION, change_id=p.pk, reason="gate failed") is True
    assert change_fail(kind=ROLLBACK, change_id=r.pk, reason="revert conflicts") is True
    assert change_fail(kind=ROLLBACK, change_id=r.pk, reason="twice") is False

    p.refresh_from_db()
    r.refresh_from_db()
    item.refresh_from_db()
    assert (p.state, p.claimed_until, p.failure_reason) == ("failed", None, "gate failed")
    assert item.active is False  # the promotion kind frees the in-flight slot
    assert (r.state, r.claimed_until, r.failure_reason) == ("failed", None, "revert conflicts")
    assert _actions("promotion", p.pk) == ["promotion.failed"]
    assert _actions("rollback", r.pk) == ["rollback.failed"]


def test_one_backoff_grows_honours_retry_after_and_stays_below_the_cap():
    cap = settings.CELERY_RETRY_BACKOFF_MAX
    assert [retry_countdown(n, None) for n in range(4)] == [1, 2, 4, 8]
    assert retry_countdown(0, 30) == min(30, cap)
    assert all(retry_countdown(n, 3600) <= cap for n in range(12))
    # Both kinds' tasks retry with this one function.
    assert promotion_tasks.backoff is retry_countdown
    assert not hasattr(rollback_tasks, "_countdown")
