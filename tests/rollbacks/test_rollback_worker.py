"""End to end with a real Celery worker: prod back on version A and Healthy; a crash leaves one PR."""

from __future__ import annotations

import time

import pytest
import requests
from django.urls import reverse
from django.utils import timezone
from django.utils.html import escape

from audit.models import AuditEvent, ChangeRecord
from rollbacks.models import RollbackRequest
from rollbacks.tasks import rollback_track_task, rollbacks_sweep_task
from tests.conftest import WorkerProcess, wait_for
from tests.rollbacks.sandbox_env import oncall

pytestmark = [pytest.mark.worker, pytest.mark.slow]


def _worker(tmp_path, name: str = "worker.log") -> WorkerProcess:
    from django.conf import settings

    return WorkerProcess(
        tmp_path / name,
        extra_env={
            "GITOPSPORTAL_MIRRORS_DIR": str(settings.MIRRORS_DIR),
            "GITOPSPORTAL_WORKSPACES_DIR": str(settings.WORKSPACES_DIR),
            "PORTAL_BASE_URL": settings.PORTAL_BASE_URL,
        },
    ).start()


@pytest.fixture
def worker(live_sandbox, purge_broker, tmp_path):
    process = _worker(tmp_path)
    yield process
    process.stop()


def _state(pk: int) -> str:
    return RollbackRequest.objects.values_list("state", flat=True).get(pk=pk)


def test_oncall_rolls_prod_back_to_the_previous_version_until_healthy(live_sandbox, worker, client):
    sandbox = live_sandbox
    version_a = sandbox.argo_apps()[0].version
    # Prod runs B after a promotion, and B is broken.
    sandbox.argocd.faults.update({"degraded_tags": ["9.9.9"]})
    _, merge_b = sandbox.promote_by_pr("prod", "9.9.9")
    sandbox.converge()
    assert {(a.version, a.health_status) for a in sandbox.argo_apps()} == {("9.9.9", "Degraded")}
    client.force_login(oncall(sandbox.team))

    form = client.get(reverse("rollbacks:new"), {"app": sandbox.app, "env": "prod"})
    plan = form.context["plan"]
    assert plan.revert_shas == [merge_b] and plan.expected_version == version_a
    created = client.post(
        reverse("rollbacks:new"),
        {
            "app": sandbox.app,
            "env": "prod",
            "mode": "previous",
            "reason": "checkout errors after 9.9.9",
            "incident": "https://incidents.example.com/INC-1?x=<b>",
            "observed_deployment": plan.observed_deployment_id,
        },
    )
    assert created.status_code == 302
    rollback = RollbackRequest.objects.get()
    assert created["Location"] == reverse("rollbacks:detail", args=[rollback.pk])

    wait_for(lambda: _state(rollback.pk) == "pr_open", timeout=60, message="the revert PR")
    rollback.refresh_from_db()
    pulls = sandbox.pulls(rollback.branch)
    assert len(pulls) == 1 and pulls[0]["title"].startswith("Revert")
    commits = sandbox.client().compare("main", rollback.branch).commit_shas
    assert len(commits) == 1

    sandbox.merge(rollback.pr_number)

    def restored() -> bool:
        sandbox.converge()
        rollback_track_task.delay(rollback.pk)
        time.sleep(0.3)
        return _state(rollback.pk) == "healthy"

    wait_for(restored, timeout=90, interval=0.5, message="prod healthy on the reverted version")
    rollback.refresh_from_db()
    assert {(a.version, a.health_status) for a in sandbox.argo_apps()} == {(version_a, "Healthy")}
    assert rollback.merge_commit_sha
    assert rollback.time_to_restore is not None and rollback.time_to_restore.total_seconds() > 0
    assert rollback.degraded_since is not None
    assert rollback.time_to_restore_from_degraded >= rollback.time_to_restore
    for stamp in ("pr_opened_at", "merged_at", "deployed_at", "healthy_at"):
        assert getattr(rollback, stamp) is not None, stamp

    actions = list(
        AuditEvent.objects.filter(target_type="rollback", target_id=str(rollback.pk))
        .order_by("sequence")
        .values_list("action", flat=True)
    )
    assert actions == [
        "rollback.requested",
        "rollback.branch_pushed",
        "rollback.pr_opened",
        "rollback.merged",
        "rollback.deployed",
        "rollback.healthy",
    ]
    record = ChangeRecord.objects.get(source_type="rollback", source_id=str(rollback.pk))
    assert record.kind == "rollback" and record.outcome == "succeeded"
    assert record.versions_before == {"image": "9.9.9"} and record.versions_after == {"image": version_a}

    from promotions.models import PromotionBlock

    block = PromotionBlock.objects.get(source_type="rollback", source_id=str(rollback.pk))
    assert block.blocked_version == "9.9.9" and block.is_active

    page = client.get(reverse("rollbacks:detail", args=[rollback.pk]))
    html = page.content.decode()
    assert "Time to restore" in html and escape(rollback.time_to_restore_display) in html
    assert "x=&lt;b&gt;" in html and "<b>" not in html


def test_a_worker_killed_mid_task_leaves_exactly_one_pr(live_sandbox, purge_broker, tmp_path, client):
    sandbox = live_sandbox
    sandbox.promote_by_pr("prod", "9.9.9")
    sandbox.converge()
    # Hold the PR creation long enough to kill the worker after its push, before the PR exists.
    requests.post(
        f"{sandbox.forge.base_url}/sandbox/faults",
        json={
            "latency_ms": 20000,
            "latency_count": 1,
            "paths": ["/repos/acme/gitops/pulls"],
            "methods": ["POST"],
        },
        timeout=10,
    )
    first = _worker(tmp_path, "first.log")
    try:
        client.force_login(oncall(sandbox.team))
        plan = client.get(reverse("rollbacks:new"), {"app": sandbox.app, "env": "prod"}).context["plan"]
        client.post(
            reverse("rollbacks:new"),
            {
                "app": sandbox.app,
                "env": "prod",
                "mode": "previous",
                "reason": "bad",
                "observed_deployment": plan.observed_deployment_id,
            },
        )
        rollback = RollbackRequest.objects.get()
        wait_for(lambda: sandbox.head(rollback.branch), timeout=60, message="the pushed rollback branch")
        time.sleep(0.5)  # the worker now waits on POST /pulls
    finally:
        first.kill()
        first.stop()
    assert _state(rollback.pk) == "requested"

    # Time passes: the claim of the dead worker lapses and the sweeper re-enqueues the work.
    requests.post(f"{sandbox.forge.base_url}/sandbox/reset-faults", timeout=10)
    RollbackRequest.objects.filter(pk=rollback.pk).update(claimed_until=timezone.now())
    second = _worker(tmp_path, "second.log")
    try:
        rollbacks_sweep_task.delay()
        wait_for(lambda: _state(rollback.pk) == "pr_open", timeout=60, message="the PR after the retry")
        # A duplicate run (the redelivered message) finds the row done and the PR in place.
        rollbacks_sweep_task.delay()
        time.sleep(1.5)
    finally:
        second.stop()
    time.sleep(1)  # a slow first POST may still land: the forge must answer "already exists"
    assert len(sandbox.pulls(rollback.branch)) == 1
    rollback.refresh_from_db()
    assert rollback.attempts == 2


def test_a_real_worker_syncs_a_merged_revert_into_a_portal_synced_prod(live_sandbox, worker):
    """`sync: portal`: tracking sends the sync task, the worker syncs the revert's merge commit."""
    sandbox = live_sandbox
    sandbox.promote_by_pr("prod", "9.9.9")
    sandbox.converge()
    sandbox.argocd.auto_sync_envs = ("dev", "stage")
    prod = sandbox.envs["prod"]
    prod.sync_mode = "portal"
    prod.save(update_fields=["sync_mode"])
    from inventory.models import Application
    from rollbacks import services

    rollback = services.rollback_request_create(
        actor=oncall(sandbox.team),
        application=Application.objects.get(name=sandbox.app),
        environment=prod,
        mode="previous",
        reason="error rate above SLO after 9.9.9",
    )
    wait_for(lambda: _state(rollback.pk) == "pr_open", timeout=60, message="the revert PR")
    rollback.refresh_from_db()
    sandbox.merge(rollback.pr_number)
    rollback_track_task.delay(rollback.pk)

    def healthy() -> bool:
        sandbox.converge()
        rollback_track_task.delay(rollback.pk)
        return _state(rollback.pk) == "healthy"

    wait_for(healthy, timeout=90, interval=1, message="the portal-synced revert healthy")
    rollback.refresh_from_db()
    assert rollback.sync_state == "requested"
    app = sandbox.argo_apps("prod")[0].name
    operation = sandbox.argocd.apps[app].op_state["operation"]
    assert operation["sync"]["revision"] == rollback.merge_commit_sha
    assert operation["initiatedBy"].get("automated") is not True
    assert (
        AuditEvent.objects.filter(target_id=str(rollback.pk), action="rollback.sync_requested").count() == 1
    )
