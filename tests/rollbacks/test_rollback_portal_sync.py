"""Rollbacks into a `sync: portal` environment: the portal syncs the merged revert, in the windows."""

from __future__ import annotations

import pytest
import requests
from django.core.exceptions import PermissionDenied
from django.urls import reverse

from accounts.models import RoleGrant
from accounts.services import api_token_create
from audit.models import AuditEvent
from inventory.models import Application
from rollbacks import services
from rollbacks.models import RollbackRequest
from tests.conftest import wait_for
from tests.factories import UserFactory
from tests.rollbacks.sandbox_env import oncall

pytestmark = pytest.mark.django_db
State = RollbackRequest.State


def _merged_revert(sandbox, requester) -> RollbackRequest:
    """Prod runs a bad 9.9.9 (auto-synced), then prod turns manual (`sync: portal`); the revert merges."""
    sandbox.promote_by_pr("prod", "9.9.9")
    sandbox.converge()
    sandbox.argocd.auto_sync_envs = ("dev", "stage")  # Argo CD picks it up with the next commit
    prod = sandbox.envs["prod"]
    prod.sync_mode = "portal"
    prod.save(update_fields=["sync_mode"])
    rollback = services.rollback_request_create(
        actor=requester,
        application=Application.objects.get(name=sandbox.app),
        environment=prod,
        mode="previous",
        reason="error rate above SLO after 9.9.9",
    )
    services.rollback_pr_open(rollback_id=rollback.pk)
    rollback.refresh_from_db()
    sandbox.merge(rollback.pr_number)
    rollback = services.rollback_track(rollback_id=rollback.pk)
    assert rollback.state == State.MERGED and rollback.merge_commit_sha
    return rollback


def test_a_merged_revert_waits_for_the_window_and_an_approver_overrides_it(sandbox, client):
    requester = oncall(sandbox.team)
    rollback = _merged_revert(sandbox, requester)
    app = sandbox.argo_apps("prod")[0].name
    resp = requests.post(
        f"{sandbox.argocd.base_url}/sandbox/sync-windows",
        json={"project": sandbox.team, "closed_for": 600},
        timeout=10,
    )
    windows = [{**w, "manualSync": True} for w in resp.json()["windows"]]
    requests.post(
        f"{sandbox.argocd.base_url}/sandbox/sync-windows",
        json={"project": sandbox.team, "windows": windows},
        timeout=10,
    ).raise_for_status()
    sandbox.converge()
    assert sandbox.argocd.apps[app].synced.revision != rollback.merge_commit_sha  # no auto-sync
    assert services.rollback_sync(rollback_id=rollback.pk) == "waiting"
    rollback.refresh_from_db()
    assert rollback.sync_state == "waiting" and rollback.sync_opens_at is not None
    # Tracking neither fails it nor times it out while the window is closed.
    assert services.rollback_track(rollback_id=rollback.pk).state == State.MERGED

    viewer = UserFactory(username="vic", roles=["viewer"])
    client.force_login(viewer)
    page = client.get(reverse("rollbacks:detail", args=[rollback.pk])).content.decode()
    assert "Waiting for window, opens at" in page and "Override the window" not in page

    # The on-call engineer who asked cannot override it, even holding the approver role.
    RoleGrant.objects.create(user=requester, role="approver", project=sandbox.team, environment="*")
    requester = type(requester).objects.get(pk=requester.pk)  # role grants are cached per user object
    with pytest.raises(PermissionDenied, match="four-eyes"):
        services.rollback_sync_override(rollback=rollback, actor=requester, reason="customers are down")
    approver = UserFactory(username="ana")
    RoleGrant.objects.create(user=approver, role="approver", project=sandbox.team, environment="*")
    client.force_login(approver)
    page = client.get(reverse("rollbacks:detail", args=[rollback.pk])).content.decode()
    assert "Override the window and sync" in page
    # A page left open follows the sync: the poll swaps the sync forms out of band.
    polled = client.get(
        reverse("rollbacks:detail", args=[rollback.pk]), HTTP_HX_REQUEST="true"
    ).content.decode()
    assert 'id="rollback-sync-actions" hx-swap-oob="outerHTML"' in polled
    assert "Override the window and sync" in polled and 'hx-trigger="every 3s"' in polled
    response = client.post(
        reverse("rollbacks:sync_override", args=[rollback.pk]), {"reason": "customers are down since 9.9.9"}
    )
    assert response.status_code == 302
    assert services.rollback_sync(rollback_id=rollback.pk) == "requested"
    assert sandbox.argocd.apps[app].op_state["operation"]["sync"]["revision"] == rollback.merge_commit_sha

    def healthy():
        sandbox.converge()
        return services.rollback_track(rollback_id=rollback.pk).state == State.HEALTHY

    wait_for(healthy, timeout=30, interval=0.3, message="rollback healthy")
    actions = list(
        AuditEvent.objects.filter(target_type="rollback", target_id=str(rollback.pk))
        .order_by("sequence")
        .values_list("action", flat=True)
    )
    assert actions[actions.index("rollback.merged") :] == [
        "rollback.merged",
        "rollback.sync_waiting",
        "auth.denied",  # the requester's attempt
        "rollback.sync_window_overridden",
        "rollback.sync_requested",
        "rollback.deployed",
        "rollback.healthy",
    ]
    polled = client.get(
        reverse("rollbacks:detail", args=[rollback.pk]), HTTP_HX_REQUEST="true"
    ).content.decode()
    assert 'id="rollback-sync-actions" hx-swap-oob="outerHTML"' in polled
    assert (
        "Override the window" not in polled and 'hx-trigger="every 3s"' not in polled
    )  # healthy: no more polls
    overridden = AuditEvent.objects.get(target_id=str(rollback.pk), action="rollback.sync_window_overridden")
    assert overridden.actor_name == "ana" and overridden.after["reason"] == "customers are down since 9.9.9"
    page = client.get(reverse("rollbacks:detail", args=[rollback.pk])).content.decode()
    assert (
        "rollback sync window overridden by an approver" in page and "customers are down since 9.9.9" in page
    )


def test_a_revert_sync_argo_cd_refuses_is_given_up_and_the_on_call_engineer_retries_it(sandbox, client):
    requester = oncall(sandbox.team)
    rollback = _merged_revert(sandbox, requester)
    with sandbox.argocd.lock:
        sandbox.argocd.faults.update(
            {"status": 403, "error_rate": 1.0, "count": 1, "paths": ["/api/v1/applications/*/sync"]}
        )

    assert services.rollback_sync(rollback_id=rollback.pk) == "failed"

    rollback.refresh_from_db()
    assert rollback.sync_state == "failed" and "Argo CD answered 403" in rollback.sync_detail
    given_up = AuditEvent.objects.get(action="rollback.sync_given_up", target_id=str(rollback.pk))
    assert given_up.after["reason"] == "permanent"
    # Tracking holds it (no deploy timeout on a sync nobody asked for again).
    assert services.rollback_track(rollback_id=rollback.pk).state == State.MERGED
    viewer = UserFactory(username="vic", roles=["viewer"])
    client.force_login(viewer)
    page = client.get(reverse("rollbacks:detail", args=[rollback.pk])).content.decode()
    assert "Sync failed" in page and "Retry the sync" not in page
    assert client.post(reverse("rollbacks:sync_retry", args=[rollback.pk])).status_code == 403
    client.force_login(requester)
    assert "Retry the sync" in client.get(reverse("rollbacks:detail", args=[rollback.pk])).content.decode()
    assert client.post(reverse("rollbacks:sync_retry", args=[rollback.pk])).status_code == 302
    assert services.rollback_sync(rollback_id=rollback.pk) == "requested"
    retried = AuditEvent.objects.get(action="rollback.sync_retried", target_id=str(rollback.pk))
    assert retried.actor_name == requester.username


def test_the_api_retries_a_given_up_revert_sync_and_refuses_a_window_override_by_the_requester(
    sandbox, client
):
    """POST /api/v1/rollbacks/{id}/sync-retry and …/sync-override {reason}: the browser's roles and checks."""
    requester = oncall(sandbox.team)
    rollback = _merged_revert(sandbox, requester)
    with sandbox.argocd.lock:
        sandbox.argocd.faults.update(
            {"status": 403, "error_rate": 1.0, "count": 1, "paths": ["/api/v1/applications/*/sync"]}
        )
    assert services.rollback_sync(rollback_id=rollback.pk) == "failed"
    viewer = UserFactory(username="vic", roles=["viewer"])
    approver = UserFactory(username="ana")
    RoleGrant.objects.create(user=approver, role="approver", project=sandbox.team, environment="*")
    RoleGrant.objects.create(user=requester, role="approver", project=sandbox.team, environment="*")

    def post(user, action, body=None):
        _, token = api_token_create(user=type(user).objects.get(pk=user.pk))
        return client.post(
            f"/api/v1/rollbacks/{rollback.pk}/{action}",
            body or {},
            content_type="application/json",
            HTTP_AUTHORIZATION=f"Bearer {token}",
        )

    assert post(viewer, "sync-retry").status_code == 403
    retried = post(requester, "sync-retry")
    assert retried.status_code == 200, retried.content
    assert retried.json()["id"] == rollback.pk and retried.json()["sync"]["state"] == "error"
    assert AuditEvent.objects.get(action="rollback.sync_retried").actor_name == requester.username
    again = post(requester, "sync-retry")
    assert again.status_code == 409 and "nothing to retry" in again.json()["error"]

    RollbackRequest.objects.filter(pk=rollback.pk).update(sync_state="waiting")
    assert post(requester, "sync-override", {"reason": "customers are down"}).status_code == 403  # four-eyes
    short = post(approver, "sync-override", {"reason": "now"})
    assert short.status_code == 409 and "written reason" in short.json()["error"]
    overridden = post(approver, "sync-override", {"reason": "customers are down since 9.9.9"})
    assert overridden.status_code == 200, overridden.content
    assert overridden.json()["sync"]["override"]["by"] == "ana"
