"""Rollback tracking after the merge: failed syncs, deploy timeouts, tracking errors, the sweeper."""

from __future__ import annotations

from datetime import timedelta

import pytest
import requests
from celery.signals import before_task_publish
from django.urls import reverse
from django.utils import timezone

from audit.models import AuditEvent, ChangeRecord
from inventory.models import Application
from rollbacks import services
from rollbacks.models import RollbackRequest, humanize_duration
from tests.conftest import wait_for
from tests.factories import ApplicationFactory, EnvironmentFactory
from tests.rollbacks.sandbox_env import oncall

pytestmark = pytest.mark.django_db
State = RollbackRequest.State


def _actions(rollback: RollbackRequest) -> list[str]:
    return list(
        AuditEvent.objects.filter(target_type="rollback", target_id=str(rollback.pk))
        .order_by("sequence")
        .values_list("action", flat=True)
    )


def _open_rollback(sandbox) -> RollbackRequest:
    """Prod runs a bad 9.9.9; on call asks to roll it back; the revert PR is open."""
    sandbox.promote_by_pr("prod", "9.9.9")
    sandbox.converge()
    rollback = services.rollback_request_create(
        actor=oncall(sandbox.team),
        application=Application.objects.get(name=sandbox.app),
        environment=sandbox.envs["prod"],
        mode="previous",
        reason="error rate above SLO after 9.9.9",
    )
    services.rollback_pr_open(rollback_id=rollback.pk)
    rollback.refresh_from_db()
    assert rollback.state == State.PR_OPEN
    return rollback


def test_a_failed_argo_cd_sync_of_the_revert_fails_the_rollback_with_the_reason(sandbox, client):
    rollback = _open_rollback(sandbox)
    sandbox.argocd.faults.update({"fail_sync_apps": [sandbox.app]})
    sandbox.merge(rollback.pr_number)
    services.rollback_track(rollback_id=rollback.pk)
    assert RollbackRequest.objects.get(pk=rollback.pk).state == State.MERGED

    sandbox.converge()  # Argo CD tries the revert, the sync fails; the poller records it
    rollback = services.rollback_track(rollback_id=rollback.pk)

    assert rollback.state == State.FAILED
    assert rollback.failure_reason.startswith("Argo CD could not sync the revert into prod")
    assert "sync failed" in rollback.failure_reason and "sandbox fault" in rollback.failure_reason
    assert _actions(rollback)[-1] == "rollback.sync_failed"
    record = ChangeRecord.objects.get(source_type="rollback", source_id=str(rollback.pk))
    assert record.outcome == "failed"
    client.force_login(oncall(sandbox.team, username="viewer-oncall"))
    body = client.get(reverse("rollbacks:detail", args=[rollback.pk])).content.decode()
    assert "Argo CD could not sync the revert into prod" in body


def test_a_revert_argo_cd_does_not_deploy_in_time_fails_the_rollback(sandbox, settings):
    settings.PROMOTION_DEPLOY_TIMEOUT_MINUTES = 20
    rollback = _open_rollback(sandbox)
    sandbox.argocd.faults.update({"deny_sync_window": {"project": "*"}})
    sandbox.merge(rollback.pr_number)
    services.rollback_track(rollback_id=rollback.pk)
    sandbox.converge()
    rollback = services.rollback_track(rollback_id=rollback.pk)
    assert rollback.state == State.MERGED
    assert rollback.tracking_detail.startswith("waiting for Argo CD to run")

    RollbackRequest.objects.filter(pk=rollback.pk).update(merged_at=timezone.now() - timedelta(minutes=21))
    rollback = services.rollback_track(rollback_id=rollback.pk)

    assert rollback.state == State.FAILED
    assert "prod does not run the revert 20 min after the merge" in rollback.failure_reason
    assert _actions(rollback)[-1] == "rollback.deploy_timed_out"


def test_a_pull_request_the_forge_no_longer_knows_is_shown_on_the_page(sandbox, client):
    rollback = _open_rollback(sandbox)
    RollbackRequest.objects.filter(pk=rollback.pk).update(pr_number=9999)

    services.rollback_track(rollback_id=rollback.pk)
    rollback = services.rollback_track(rollback_id=rollback.pk)

    assert rollback.state == State.PR_OPEN
    assert rollback.tracking_error.startswith("cannot read pull request #9999")
    assert _actions(rollback).count("rollback.tracking_error") == 1
    client.force_login(oncall(sandbox.team, username="other-oncall"))
    body = client.get(
        reverse("rollbacks:detail", args=[rollback.pk]), HTTP_HX_REQUEST="true"
    ).content.decode()
    assert "Tracking problem: cannot read pull request #9999" in body
    assert (
        client.get(f"/api/v1/rollbacks/{rollback.pk}")
        .json()["tracking_error"]
        .startswith("cannot read pull request #9999")
    )


@pytest.fixture
def published():
    """The messages the code under test publishes (headers), whoever consumes them afterwards."""
    sent: list[dict] = []

    def record(sender=None, headers=None, **kwargs):
        sent.append(dict(headers or {}))

    before_task_publish.connect(record, weak=False)
    yield sent
    before_task_publish.disconnect(record)


def _ids(sent: list[dict]) -> list[tuple[str, int, bool]]:
    out = []
    for headers in sent:
        pk = int(headers["argsrepr"].strip("(),").split(",")[0])
        out.append((headers["task"].rsplit(".", 1)[-1], pk, bool(headers.get("expires"))))
    return sorted(out)


def test_the_sweeper_tracks_merged_rollbacks_every_sweep_and_open_prs_every_half_minute(
    purge_broker, published
):
    app = ApplicationFactory()
    env = EnvironmentFactory(name="prod")
    now = timezone.now()

    def row(state: str, *, tracked_ago: float | None = None, requested_ago: float = 600, **extra):
        return RollbackRequest.objects.create(
            application=app,
            environment=env,
            mode="previous",
            state=state,
            requested_by_name="oncall",
            reason="r",
            base_branch="main",
            current_revision="a" * 40,
            requested_at=now - timedelta(seconds=requested_ago),
            last_tracked_at=None if tracked_ago is None else now - timedelta(seconds=tracked_ago),
            **extra,
        )

    merged = row(State.MERGED, tracked_ago=6)
    deployed = row(State.DEPLOYED, tracked_ago=9)
    row(State.MERGED, tracked_ago=1)
    row(State.PR_OPEN, tracked_ago=10)
    stale_pr = row(State.PR_OPEN, tracked_ago=45)
    row(State.REQUESTED, requested_ago=2)  # its own message is running
    lost = row(State.REQUESTED, requested_ago=60)
    lapsed = row(State.REQUESTED, claimed_until=now - timedelta(seconds=1))
    row(State.HEALTHY, tracked_ago=600)

    assert services.rollbacks_sweep(now=now) == {"opened": 2, "tracked": 3}

    assert _ids(published) == sorted(
        [
            ("rollback_pr_open_task", lost.pk, False),
            ("rollback_pr_open_task", lapsed.pk, False),
            ("rollback_track_task", merged.pk, True),
            ("rollback_track_task", deployed.pk, True),
            ("rollback_track_task", stale_pr.pk, True),
        ]
    )


def test_time_to_restore_reads_like_the_rest_of_the_portal():
    assert humanize_duration(timedelta(seconds=14.147051)) == "14 s"
    assert humanize_duration(timedelta(minutes=3, seconds=20)) == "3 min 20 s"
    assert humanize_duration(None) == ""


def test_the_change_record_names_who_merged_the_revert_and_argo_cds_sync_result(sandbox):
    rollback = _open_rollback(sandbox)
    resp = requests.post(
        f"{sandbox.forge.base_url}/sandbox/pulls/acme/gitops/{rollback.pr_number}/merge",
        json={"user": "alice"},
        timeout=10,
    )
    assert resp.status_code == 200, resp.text
    services.rollback_track(rollback_id=rollback.pk)

    def healthy() -> bool:
        sandbox.converge()
        return services.rollback_track(rollback_id=rollback.pk).state == State.HEALTHY

    wait_for(healthy, timeout=40, interval=0.5, message="the revert healthy in prod")
    rollback.refresh_from_db()
    assert rollback.merged_by == "alice"
    record = ChangeRecord.objects.get(source_type="rollback", source_id=str(rollback.pk))
    assert record.merged_by == "alice"
    result = record.sync_result
    assert result["phase"] == "Succeeded" and result["resources"]["total"] >= 1
    assert result["revision"] == sandbox.argo_apps()[0].deployed_revision
    assert sandbox.client().get_pull_request(rollback.pr_number).merge_commit_sha == rollback.merge_commit_sha
    merged = AuditEvent.objects.get(action="rollback.merged", target_id=str(rollback.pk))
    assert merged.after["merged_by"] == "alice"
