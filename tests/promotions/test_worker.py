"""The PR-opening and tracking tasks on a real Celery worker against the sandbox forge and Argo CD."""

from __future__ import annotations

import time

import pytest
import requests
from django.db.models import F

from audit.models import AuditEvent
from promotions import services
from promotions.models import Promotion, PromotionState
from promotions.tasks import promotion_pr_open_task, promotions_sweep_task
from tests.conftest import wait_for
from tests.promotions.helpers import WEBHOOK_SECRET, git, promotable_app

pytestmark = pytest.mark.django_db(transaction=True)
S = PromotionState


def _state(pk: int) -> str:
    return Promotion.objects.values_list("state", flat=True).get(pk=pk)


def _approved(sandbox, users) -> Promotion:
    app = promotable_app(sandbox)
    promotion = services.promotion_request_create(
        actor=users["rm"],
        applications=[app],
        source_env=sandbox.stage,
        target_env=sandbox.prod,
        note="release 42",
    )
    # The worker pushes the branch on the request's commit; the approver approves its head.
    wait_for(
        lambda: Promotion.objects.get(pk=promotion.pk).branch_pushed,
        timeout=60,
        message="promotion branch pushed by the worker",
    )
    promotion.refresh_from_db()
    services.promotion_approve(
        promotion=promotion, actor=users["approver"], comment="lgtm", head_sha=promotion.pushed_head_sha
    )
    return promotion


def test_worker_runs_the_whole_promotion_to_healthy(live_server, sandbox, users, worker_factory):
    requests.put(
        f"{sandbox.forge.base_url}/sandbox/webhook",
        json={"url": f"{live_server.url}/webhooks/forge/gitops/", "secret": WEBHOOK_SECRET},
        timeout=10,
    ).raise_for_status()
    worker_factory()
    promotion = _approved(sandbox, users)  # approval enqueues the PR task on commit
    wait_for(lambda: _state(promotion.pk) == S.PR_OPEN, timeout=60, message="PR opened by the worker")
    promotion.refresh_from_db()
    pulls = sandbox.pulls()
    assert [p["number"] for p in pulls] == [promotion.pr_number]
    assert pulls[0]["head_ref"] == promotion.pr_branch
    assert promotion.pr_branch.startswith(
        f"promote/{promotion.items.get().application.name}/stage-to-prod/{promotion.pk}-"
    )
    assert "promotion" in pulls[0]["labels"]
    diff = sandbox.pr_diff(promotion.pr_number)
    changed = [x for x in diff.splitlines() if x[:1] in "+-" and not x.startswith(("+++", "---"))]
    assert len(changed) == 2, diff
    log = git(sandbox.bare, "log", "-1", "--format=%B", pulls[0]["head_sha"])
    assert f"Promotion-Id: {promotion.pk}" in log
    assert "Requested-By: rita <rita@example.com>" in log
    assert "Approved-By" not in log  # the commit is made before anyone approves it
    assert pulls[0]["head_sha"] == promotion.pushed_head_sha

    sandbox.merge(promotion.pr_number)  # the forge's signed webhook reaches the portal: tracking follows

    def healthy() -> bool:
        return _state(promotion.pk) == S.HEALTHY

    wait_for(healthy, timeout=60, interval=1, message="promotion healthy")
    promotion.refresh_from_db()
    for field in (
        "requested_at",
        "approved_at",
        "pr_opening_at",
        "pr_opened_at",
        "merged_at",
        "syncing_at",
        "deployed_at",
        "healthy_at",
    ):
        assert getattr(promotion, field) is not None, field
    assert promotion.merge_commit_sha
    actions = list(
        AuditEvent.objects.filter(target_type="promotion", target_id=str(promotion.pk))
        .order_by("sequence")
        .values_list("action", flat=True)
    )
    assert actions == [
        "promotion.requested",
        "promotion.branch_pushed",
        "promotion.approved",
        "promotion.pr_opened",
        "promotion.merged",
        "promotion.deployed",
        "promotion.healthy",
    ]
    assert (
        len(
            set(
                AuditEvent.objects.filter(target_id=str(promotion.pk), target_type="promotion").values_list(
                    "correlation_id", flat=True
                )
            )
        )
        == 1
    )


def test_worker_killed_between_push_and_pr_creation_leaves_exactly_one_pr(sandbox, users, worker_factory):
    # The PR creation hangs, then fails: the first attempt pushes its branch and dies before a PR exists.
    sandbox.fault(latency_ms=6000, latency_count=1, status=502, count=1, paths=["/pulls"], methods=["POST"])
    worker = worker_factory()
    promotion = _approved(sandbox, users)
    branch = wait_for(
        lambda: next((b for b in sandbox.branches() if b.startswith("promote/")), None),
        timeout=60,
        message="the branch pushed by the first attempt",
    )
    pushed_sha = sandbox.forge_state()["branches"][branch]
    assert pushed_sha == Promotion.objects.get(pk=promotion.pk).pushed_head_sha  # pushed at the request
    wait_for(lambda: _state(promotion.pk) == S.PR_OPENING, timeout=60, message="PR opening claimed")
    worker.kill()
    assert sandbox.pulls() == []
    assert _state(promotion.pk) == S.PR_OPENING

    # Later: the lease has expired and the beat sweeper re-enqueues it on a fresh worker.
    # A request the dead worker may have sent still hangs, then fails (its fault stays armed until then).
    time.sleep(7)
    assert sandbox.pulls() == []
    requests.post(f"{sandbox.forge.base_url}/sandbox/reset-faults", timeout=10)
    Promotion.objects.filter(pk=promotion.pk).update(claimed_until=F("pr_opening_at"))
    worker_factory()
    promotions_sweep_task.delay()
    wait_for(lambda: _state(promotion.pk) == S.PR_OPEN, timeout=60, message="PR opened by the retry")
    pulls = sandbox.pulls()
    assert len(pulls) == 1
    assert pulls[0]["head_ref"] == branch
    assert sandbox.forge_state()["branches"][branch] == pushed_sha  # the branch was reused, not rebuilt
    promotion.refresh_from_db()
    assert promotion.attempts == 3  # the request's push, the killed PR opening, its retry


def test_pr_created_but_answer_lost_is_found_on_retry(sandbox, users, worker_factory):
    sandbox.fault(fail_after_create=True, status=502, count=1, paths=["/pulls"], methods=["POST"])
    worker_factory()
    promotion = _approved(sandbox, users)
    wait_for(lambda: _state(promotion.pk) == S.PR_OPEN, timeout=60, message="PR found after the lost answer")
    assert len(sandbox.pulls()) == 1
    promotion.refresh_from_db()
    assert promotion.attempts == 3  # the push, then two PR-opening claims
    event = AuditEvent.objects.get(
        target_type="promotion", target_id=str(promotion.pk), action="promotion.pr_opened"
    )
    assert event.after["created"] is False


def test_same_task_enqueued_five_times_concurrently_opens_one_pr(sandbox, users, worker_factory):
    app = promotable_app(sandbox)
    promotion = services.promotion_request_create(
        actor=users["rm"], applications=[app], source_env=sandbox.stage, target_env=sandbox.prod
    )
    services.promotion_branch_push(promotion_id=promotion.pk)
    services.promotion_approve(promotion=promotion, actor=users["approver"])
    for _ in range(4):
        promotion_pr_open_task.delay(promotion.pk)
    worker_factory()
    wait_for(lambda: _state(promotion.pk) == S.PR_OPEN, timeout=60, message="PR opened")
    time.sleep(2)
    assert len(sandbox.pulls()) == 1
    assert AuditEvent.objects.filter(target_id=str(promotion.pk), action="promotion.pr_opened").count() == 1


def test_forge_5xx_is_retried_with_backoff(sandbox, users, worker_factory):
    sandbox.fault(status=503, count=2, paths=["/pulls"], methods=["POST"])
    worker_factory()
    promotion = _approved(sandbox, users)
    wait_for(lambda: _state(promotion.pk) == S.PR_OPEN, timeout=60, message="PR opened after retries")
    promotion.refresh_from_db()
    assert promotion.attempts == 4  # the push, then three PR-opening claims
    assert len(sandbox.pulls()) == 1


def test_forge_422_fails_cleanly_with_a_readable_reason(sandbox, users, worker_factory):
    sandbox.fault(
        status=422,
        count=1,
        paths=["/pulls"],
        methods=["POST"],
        message="Validation Failed: base branch is protected",
    )
    worker_factory()
    promotion = _approved(sandbox, users)
    wait_for(lambda: _state(promotion.pk) == S.FAILED, timeout=60, message="promotion failed")
    promotion.refresh_from_db()
    assert "422" in promotion.failure_reason and "base branch is protected" in promotion.failure_reason
    assert promotion.attempts == 2  # the push, then one PR-opening claim
    assert sandbox.pulls() == []
    assert not promotion.items.filter(active=True).exists()  # the app is free to promote again
    assert AuditEvent.objects.filter(target_id=str(promotion.pk), action="promotion.failed").count() == 1
