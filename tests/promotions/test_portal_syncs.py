"""Portal-driven syncs (`sync: portal`): the portal syncs merged promotions into a manual-sync prod,
in the AppProject's sync windows, against the sandbox Argo CD (which refuses like real Argo CD)."""

from __future__ import annotations

from datetime import timedelta

import pytest
import requests
from django.core.exceptions import PermissionDenied
from django.urls import reverse
from django.utils import timezone

from audit.models import AuditEvent
from changes.syncs import SyncRefused, SyncRetryable, change_syncs_due
from promotions import services
from promotions.kind import PROMOTION
from promotions.models import Promotion, PromotionState
from tests.conftest import wait_for
from tests.promotions.helpers import promotable_app

pytestmark = pytest.mark.django_db(transaction=True)


def _merged(box, users) -> Promotion:
    app = promotable_app(box)
    promotion = services.promotion_request_create(
        actor=users["rm"], applications=[app], source_env=box.stage, target_env=box.prod
    )
    services.promotion_branch_push(promotion_id=promotion.pk)
    services.promotion_approve(promotion=promotion, actor=users["approver"], comment="ship it")
    assert services.promotion_pr_open(promotion_id=promotion.pk) == "opened"
    promotion.refresh_from_db()
    box.merge(promotion.pr_number)
    services.promotion_track(promotion_id=promotion.pk)
    promotion.refresh_from_db()
    # Auto-synced environments may already run it; a portal-synced one waits for the portal.
    expected = [PromotionState.MERGED] if box.prod.portal_syncs else list(PromotionState)
    assert promotion.state in expected and promotion.merge_commit_sha, promotion.state
    return promotion


def _argo_app(box, promotion: Promotion):
    name = promotion.items.get().application.argo_apps.get(environment=box.prod).name
    return box.argo.apps[name]


def _windows(box, project: str, windows: list[dict]) -> None:
    resp = requests.post(
        f"{box.argo.base_url}/sandbox/sync-windows", json={"project": project, "windows": windows}, timeout=10
    )
    resp.raise_for_status()


def _closed_for(box, project: str, seconds: int, *, manual_sync: bool = False) -> None:
    resp = requests.post(
        f"{box.argo.base_url}/sandbox/sync-windows",
        json={"project": project, "closed_for": seconds},
        timeout=10,
    )
    resp.raise_for_status()
    if manual_sync:
        windows = [{**w, "manualSync": True} for w in resp.json()["windows"]]
        _windows(box, project, windows)


def _actions(promotion: Promotion) -> list[str]:
    return list(
        AuditEvent.objects.filter(target_type="promotion", target_id=str(promotion.pk))
        .order_by("sequence")
        .values_list("action", flat=True)
    )


def _healthy(box, promotion: Promotion) -> None:
    def done():
        box.reconcile()
        return services.promotion_track(promotion_id=promotion.pk) == "healthy"

    wait_for(done, timeout=30, interval=0.3, message="promotion healthy")


def test_the_portal_syncs_the_merged_revision_with_the_configured_options(manual_prod, users, purge_broker):
    promotion = _merged(manual_prod, users)
    argo_app = _argo_app(manual_prod, promotion)
    # Merged, but Argo CD does not sync by itself: tracking holds (no timeout) until the portal syncs.
    manual_prod.reconcile()
    assert argo_app.pending is None and argo_app.running is None
    assert services.promotion_sync(promotion_id=promotion.pk) == "requested"
    promotion.refresh_from_db()
    assert promotion.sync_state == "requested" and promotion.sync_requested_at is not None
    pending = argo_app.pending or argo_app.running
    operation = pending.sync_json(argo_app.definition) if pending else argo_app.op_state["operation"]["sync"]
    assert (argo_app.op_state or {}).get("operation", {}).get("initiatedBy", {}).get("automated") is not True
    assert operation["revision"] == promotion.merge_commit_sha
    assert operation.get("prune") is True
    assert operation.get("syncOptions") == ["ApplyOutOfSyncOnly=true"]
    _healthy(manual_prod, promotion)
    requested = AuditEvent.objects.get(target_id=str(promotion.pk), action="promotion.sync_requested")
    assert requested.after["revision"] == promotion.merge_commit_sha
    assert requested.after["sync_options"] == ["ApplyOutOfSyncOnly=true"] and requested.after["prune"]
    assert _actions(promotion)[-4:] == [
        "promotion.merged",
        "promotion.sync_requested",
        "promotion.deployed",
        "promotion.healthy",
    ]


def test_an_argocd_synced_environment_is_never_synced_by_the_portal(sandbox, users, purge_broker):
    promotion = _merged(sandbox, users)
    assert services.promotion_sync(promotion_id=promotion.pk) == "skipped"
    _healthy(sandbox, promotion)
    argo_app = _argo_app(sandbox, promotion)
    assert argo_app.op_state["operation"]["initiatedBy"] == {"automated": True}
    promotion.refresh_from_db()
    assert promotion.sync_state == "" and "promotion.sync_requested" not in _actions(promotion)


def test_a_closed_window_waits_with_its_opening_time_then_syncs_once_it_opens(
    manual_prod, users, purge_broker, client
):
    promotion = _merged(manual_prod, users)
    team = promotion.items.get().application.project
    _closed_for(manual_prod, team, 180)
    before = timezone.now()
    assert services.promotion_sync(promotion_id=promotion.pk) == "waiting"
    promotion.refresh_from_db()
    assert promotion.sync_state == "waiting"
    opens = promotion.sync_opens_at
    assert before + timedelta(seconds=60) < opens <= before + timedelta(minutes=4), opens
    assert promotion.sync_detail.startswith("closed by ") and "deny" in promotion.sync_detail
    assert promotion.sync_next_at == opens
    # The page and the API say so.
    client.force_login(users["viewer"])
    page = client.get(reverse("promotions:detail", args=[promotion.pk])).content.decode()
    assert "Waiting for window, opens at" in page and f"{opens:%Y-%m-%d %H:%M} UTC</time>" in page
    assert "Override the window" not in page
    body = client.get(reverse("api-promotion", args=[promotion.pk])).json()
    assert body["sync"]["state"] == "waiting" and body["sync"]["opens_at"]
    # Asking again changes nothing and writes no second event; tracking does not time it out.
    assert services.promotion_sync(promotion_id=promotion.pk) == "waiting"
    assert _actions(promotion).count("promotion.sync_waiting") == 1
    assert services.promotion_track(promotion_id=promotion.pk) == "merged"
    assert _argo_app(manual_prod, promotion).pending is None
    # The beat sweeper sends it once the window opens, not before.
    assert change_syncs_due(kind=PROMOTION, now=opens - timedelta(seconds=5)) == 0
    _windows(manual_prod, team, [])  # the window ends (the sandbox's window admin drives the time)
    assert change_syncs_due(kind=PROMOTION, now=opens) == 1
    assert services.promotion_sync(promotion_id=promotion.pk) == "requested"
    _healthy(manual_prod, promotion)
    waiting = AuditEvent.objects.get(target_id=str(promotion.pk), action="promotion.sync_waiting")
    assert waiting.after["opens_at"] == opens.isoformat()
    assert waiting.message.startswith(f"waiting for window, opens at {opens:%Y-%m-%d %H:%M} UTC")


def test_an_approver_overrides_a_closed_window_with_a_reason_the_requester_cannot(
    manual_prod, users, purge_broker, client
):
    promotion = _merged(manual_prod, users)
    team = promotion.items.get().application.project
    _closed_for(manual_prod, team, 600, manual_sync=True)
    assert services.promotion_sync(promotion_id=promotion.pk) == "waiting"
    requester = users["rm_approver"]
    Promotion.objects.filter(pk=promotion.pk).update(requested_by=requester)
    with pytest.raises(PermissionDenied, match="four-eyes"):
        services.promotion_sync_override(promotion=promotion, actor=requester, reason="customers are down")
    with pytest.raises(PermissionDenied):
        services.promotion_sync_override(promotion=promotion, actor=users["rm"], reason="customers are down")
    with pytest.raises(SyncRefused, match="reason"):
        services.promotion_sync_override(promotion=promotion, actor=users["approver"], reason="now")
    services.promotion_sync_override(
        promotion=promotion, actor=users["approver"], reason="customers are down"
    )
    client.force_login(users["viewer"])
    listed = client.get(reverse("promotions:list"), {"override": "1"}).content.decode()
    assert f"/promotions/{promotion.pk}/" in listed  # listed with the emergency changes
    override = AuditEvent.objects.get(target_id=str(promotion.pk), action="promotion.sync_window_overridden")
    assert override.actor_name == "alex" and override.after["reason"] == "customers are down"
    # The window allows manual syncs: Argo CD accepts the override.
    assert services.promotion_sync(promotion_id=promotion.pk) == "requested"
    _healthy(manual_prod, promotion)
    assert (
        AuditEvent.objects.get(target_id=str(promotion.pk), action="promotion.sync_requested").after[
            "override"
        ]
        == "customers are down"
    )


def test_argo_cd_refusing_an_override_in_a_deny_window_is_reported(manual_prod, users, purge_broker):
    promotion = _merged(manual_prod, users)
    _closed_for(manual_prod, promotion.items.get().application.project, 600)  # no manualSync
    assert services.promotion_sync(promotion_id=promotion.pk) == "waiting"
    services.promotion_sync_override(
        promotion=promotion, actor=users["approver"], reason="customers are down"
    )
    assert services.promotion_sync(promotion_id=promotion.pk) == "error"
    promotion.refresh_from_db()
    assert promotion.sync_state == "error"
    assert "Argo CD refused the sync inside a sync window" in promotion.sync_detail
    assert "cannot sync: blocked by sync window" in promotion.sync_detail
    assert "promotion.sync_error" in _actions(promotion)
    assert _argo_app(manual_prod, promotion).pending is None


def test_a_retried_sync_does_not_sync_an_app_twice(manual_prod, users, purge_broker):
    promotion = _merged(manual_prod, users)
    argo_app = _argo_app(manual_prod, promotion)
    generation = argo_app.generation
    assert services.promotion_sync(promotion_id=promotion.pk) == "requested"
    assert services.promotion_sync(promotion_id=promotion.pk) == "requested"
    # A worker that died after Argo CD accepted the sync but before the portal recorded it.
    Promotion.objects.filter(pk=promotion.pk).update(sync_state="", sync_apps={})
    assert services.promotion_sync(promotion_id=promotion.pk) == "requested"
    assert argo_app.generation == generation + 1
    promotion.refresh_from_db()
    assert next(iter(promotion.sync_apps.values()))["outcome"] == "already"


def test_argo_cd_errors_on_sync_are_shown_and_retried(manual_prod, users, purge_broker):
    promotion = _merged(manual_prod, users)
    manual_prod.argo_fault(status=503, paths=["/api/v1/applications/*/sync"], error_rate=1.0, count=1)
    with pytest.raises(SyncRetryable, match="503"):
        services.promotion_sync(promotion_id=promotion.pk)
    promotion.refresh_from_db()
    assert promotion.sync_state == "error" and "503" in promotion.sync_detail
    assert services.promotion_sync(promotion_id=promotion.pk) == "requested"
    # A permanent refusal (RBAC) is shown with what the token needs and not retried by itself
    # (tests/promotions/test_sync_failures.py: given up, then retried by a person).
    other = _merged_again(manual_prod, users, promotion)
    manual_prod.argo_fault(status=403, paths=["/api/v1/applications/*/sync"], error_rate=1.0, count=1)
    assert services.promotion_sync(promotion_id=other.pk) == "failed"
    other.refresh_from_db()
    assert "403" in other.sync_detail and "applications, sync" in other.sync_detail
    assert other.sync_state == "failed" and other.sync_next_at is None
    assert change_syncs_due(kind=PROMOTION, now=timezone.now() + timedelta(days=1)) == 0
    services.promotion_sync_retry(promotion=other, actor=users["rm"])
    assert services.promotion_sync(promotion_id=other.pk) == "requested"


def _merged_again(box, users, first: Promotion) -> Promotion:
    _healthy(box, first)
    return _merged(box, users)


def test_a_closed_window_does_not_block_the_request_into_a_portal_synced_environment(manual_prod, users):
    app = promotable_app(manual_prod)
    _closed_for(manual_prod, app.project, 600)
    preview = services.promotion_preview(
        actor=users["rm"], applications=[app], source_env=manual_prod.stage, target_env=manual_prod.prod
    )
    (gate,) = [g for g in preview.all_gates if g.name == "sync_window"]
    assert not gate.passed and not gate.blocking, gate
    assert "the portal syncs after the merge once it opens" in gate.detail
    assert preview.ok, preview.failing


def test_a_request_approved_with_a_window_override_syncs_without_waiting(manual_prod, users, purge_broker):
    app = promotable_app(manual_prod)
    _closed_for(manual_prod, app.project, 600, manual_sync=True)
    promotion = services.promotion_request_create(
        actor=users["rm_approver"],
        applications=[app],
        source_env=manual_prod.stage,
        target_env=manual_prod.prod,
        override_justification="hotfix for the payment outage INC-7",
    )
    services.promotion_branch_push(promotion_id=promotion.pk)
    services.promotion_approve(promotion=promotion, actor=users["approver"], comment="four eyes")
    assert services.promotion_pr_open(promotion_id=promotion.pk) == "opened"
    promotion.refresh_from_db()
    manual_prod.merge(promotion.pr_number)
    assert services.promotion_track(promotion_id=promotion.pk) == "merged"
    assert services.promotion_sync(promotion_id=promotion.pk) == "requested"
    requested = AuditEvent.objects.get(target_id=str(promotion.pk), action="promotion.sync_requested")
    assert requested.after["override"] == "hotfix for the payment outage INC-7"
    assert "promotion.sync_waiting" not in _actions(promotion)
