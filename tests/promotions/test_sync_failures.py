"""A portal-driven sync Argo CD refuses for good is given up, shown, and retried only by a person.

Argo CD's errors are sorted as API.md §3 says: 5xx, 429, timeouts and "another operation is
already in progress" are transient (retried with backoff until PORTAL_SYNC_DEADLINE_MINUTES); a
403 "blocked by sync window" waits for the window; 401, 403, 404 and 400 are its final word: the
sync is failed with Argo CD's message (`<kind>.sync_given_up` in the same transaction), the sweeper
no longer sends it, and a release manager or approver retries it from the page.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from accounts.services import api_token_create
from audit.models import AuditEvent
from changes.syncs import (
    PERMANENT,
    TRANSIENT,
    WINDOW,
    SyncRefused,
    SyncRetryable,
    change_syncs_due,
    sync_error_class,
)
from integrations.argocd import ArgoCDUnavailable
from integrations.argocd.errors import error_for
from inventory.models import ArgoApplication
from promotions import services
from promotions.kind import PROMOTION
from promotions.models import Promotion, PromotionState
from tests.promotions.test_portal_syncs import _actions, _merged

SYNC_PATH = "/api/v1/applications/*/sync"


@pytest.mark.parametrize(
    ("status", "message", "expected"),
    [
        (500, "error getting repository by URL: dial tcp: i/o timeout", TRANSIENT),
        (503, "", TRANSIENT),
        (429, "slow down", TRANSIENT),
        (400, "another operation is already in progress", TRANSIENT),
        (403, "cannot sync: blocked by sync window", WINDOW),
        (403, "permission denied", PERMANENT),
        (404, 'applications.argoproj.io "x" not found', PERMANENT),
        (400, "application is deleting", PERMANENT),
        (400, "invalid revision", PERMANENT),
        (401, "invalid session: token has invalid claims", PERMANENT),
    ],
)
def test_argo_cd_errors_are_sorted_as_api_md_says(status, message, expected):
    assert sync_error_class(error_for(status, message, None)) == expected


def test_a_timeout_or_an_unreachable_argo_cd_is_transient():
    assert sync_error_class(ArgoCDUnavailable("read timed out")) == TRANSIENT


@pytest.mark.django_db(transaction=True)
def test_a_403_is_given_up_shown_on_the_page_and_retried_by_a_release_manager(
    client, manual_prod, users, purge_broker
):
    promotion = _merged(manual_prod, users)
    manual_prod.argo_fault(status=403, paths=[SYNC_PATH], error_rate=1.0, count=1)

    assert services.promotion_sync(promotion_id=promotion.pk) == "failed"

    promotion.refresh_from_db()
    assert promotion.state == PromotionState.MERGED and promotion.sync_state == "failed"
    assert "Argo CD answered 403" in promotion.sync_detail and promotion.sync_next_at is None
    given_up = AuditEvent.objects.get(action="promotion.sync_given_up", target_id=str(promotion.pk))
    assert given_up.after["reason"] == "permanent" and "403" in given_up.after["error"]
    assert given_up.message == promotion.sync_detail
    # Nothing retries it by itself: not the sweeper, not a redelivered message.
    assert change_syncs_due(kind=PROMOTION, now=timezone.now() + timedelta(days=1)) == 0
    assert services.promotion_sync(promotion_id=promotion.pk) == "failed"
    assert _actions(promotion).count("promotion.sync_given_up") == 1

    # The page shows Argo CD's answer; a viewer gets no retry, and is refused one.
    client.force_login(users["viewer"])
    page = client.get(promotion.get_absolute_url()).content.decode()
    assert "Sync failed" in page and "Argo CD answered 403" in page and "Retry the sync" not in page
    assert client.post(f"/promotions/{promotion.pk}/sync-retry/").status_code == 403
    assert not AuditEvent.objects.filter(action="promotion.sync_retried").exists()
    # A release manager of the app retries it: recorded, and the sync goes out again.
    client.force_login(users["rm"])
    assert "Retry the sync" in client.get(promotion.get_absolute_url()).content.decode()
    assert client.post(f"/promotions/{promotion.pk}/sync-retry/").status_code == 302
    promotion.refresh_from_db()
    assert promotion.sync_state == "error" and promotion.sync_next_at is not None
    retried = AuditEvent.objects.get(action="promotion.sync_retried", target_id=str(promotion.pk))
    assert retried.actor_name == "rita" and "403" in retried.before["error"]
    assert services.promotion_sync(promotion_id=promotion.pk) == "requested"
    # Nothing to retry any more.
    with pytest.raises(SyncRefused, match="nothing to retry"):
        services.promotion_sync_retry(promotion=promotion, actor=users["rm"])


@pytest.mark.django_db(transaction=True)
def test_an_app_gone_and_an_invalid_request_are_given_up_too(manual_prod, users, purge_broker):
    promotion = _merged(manual_prod, users)
    manual_prod.argo_fault(status=404, paths=[SYNC_PATH], error_rate=1.0, count=1)
    assert services.promotion_sync(promotion_id=promotion.pk) == "failed"
    promotion.refresh_from_db()
    assert "Argo CD answered 404" in promotion.sync_detail and "gone from Argo CD" in promotion.sync_detail

    services.promotion_sync_retry(promotion=promotion, actor=users["approver"])
    manual_prod.argo_fault(status=400, paths=[SYNC_PATH], error_rate=1.0, count=1)
    assert services.promotion_sync(promotion_id=promotion.pk) == "failed"
    promotion.refresh_from_db()
    assert "Argo CD answered 400" in promotion.sync_detail
    assert _actions(promotion).count("promotion.sync_given_up") == 2


@pytest.mark.django_db(transaction=True)
def test_transient_errors_back_off_and_are_given_up_after_the_deadline(
    manual_prod, users, purge_broker, settings
):
    settings.PORTAL_SYNC_DEADLINE_MINUTES = 30
    promotion = _merged(manual_prod, users)
    manual_prod.argo_fault(status=503, paths=[SYNC_PATH], error_rate=1.0, count=None)

    with pytest.raises(SyncRetryable, match="503"):
        services.promotion_sync(promotion_id=promotion.pk)
    promotion.refresh_from_db()
    first = promotion.sync_error_since
    assert promotion.sync_state == "error" and first is not None
    # Still failing 20 minutes on: retried, later each time (the sweeper's backoff grows).
    Promotion.objects.filter(pk=promotion.pk).update(sync_error_since=first - timedelta(minutes=20))
    with pytest.raises(SyncRetryable):
        services.promotion_sync(promotion_id=promotion.pk)
    promotion.refresh_from_db()
    assert promotion.sync_next_at - timezone.now() > timedelta(minutes=4)
    # Past the deadline: given up like a refusal, with Argo CD's message.
    Promotion.objects.filter(pk=promotion.pk).update(sync_error_since=first - timedelta(minutes=31))

    assert services.promotion_sync(promotion_id=promotion.pk) == "failed"

    promotion.refresh_from_db()
    assert (
        promotion.sync_state == "failed"
        and "gave up after 30 min of transient errors" in promotion.sync_detail
    )
    assert "503" in promotion.sync_detail
    given_up = AuditEvent.objects.get(action="promotion.sync_given_up", target_id=str(promotion.pk))
    assert given_up.after["reason"] == "transient"
    manual_prod.argo_fault(error_rate=0.0)


@pytest.mark.django_db(transaction=True)
def test_the_api_retries_a_given_up_sync_and_overrides_a_window_as_the_browser_does(
    client, manual_prod, users, purge_broker
):
    """POST /api/v1/promotions/{id}/sync-retry and …/sync-override {reason}: same roles, 409 when refused."""
    promotion = _merged(manual_prod, users)
    manual_prod.argo_fault(status=403, paths=[SYNC_PATH], error_rate=1.0, count=1)
    assert services.promotion_sync(promotion_id=promotion.pk) == "failed"
    tokens = {name: api_token_create(user=users[name])[1] for name in ("viewer", "rm", "approver")}

    def post(name, action, body=None):
        return client.post(
            f"/api/v1/promotions/{promotion.pk}/{action}",
            body or {},
            content_type="application/json",
            HTTP_AUTHORIZATION=f"Bearer {tokens[name]}",
        )

    assert post("viewer", "sync-retry").status_code == 403
    assert not AuditEvent.objects.filter(action="promotion.sync_retried").exists()
    retried = post("rm", "sync-retry")
    assert retried.status_code == 200, retried.content
    assert retried.json()["id"] == promotion.pk and retried.json()["sync"]["state"] == "error"
    assert AuditEvent.objects.get(action="promotion.sync_retried").actor_name == "rita"
    again = post("rm", "sync-retry")
    assert again.status_code == 409 and "nothing to retry" in again.json()["error"]

    assert services.promotion_sync(promotion_id=promotion.pk) == "requested"
    # The window override: an approver only (the requesting release manager is refused), with a reason.
    assert post("rm", "sync-override", {"reason": "customers are down"}).status_code == 403
    assert post("approver", "sync-override", {"reason": 7}).status_code == 400
    waiting = post("approver", "sync-override", {"reason": "customers are down"})
    assert waiting.status_code == 409 and waiting.json()["error"] == "no sync is waiting for a window"
    Promotion.objects.filter(pk=promotion.pk).update(sync_state="waiting")
    overridden = post("approver", "sync-override", {"reason": "customers are down"})
    assert overridden.status_code == 200, overridden.content
    event = AuditEvent.objects.get(action="promotion.sync_window_overridden", target_id=str(promotion.pk))
    assert event.after["reason"] == "customers are down"


@pytest.mark.django_db(transaction=True)
def test_no_argo_cd_application_to_sync_is_given_up_after_the_deadline(
    manual_prod, users, purge_broker, settings
):
    """Not an Argo CD error, yet no retry forever: after PORTAL_SYNC_DEADLINE_MINUTES the sync is given up."""
    settings.PORTAL_SYNC_DEADLINE_MINUTES = 30
    promotion = _merged(manual_prod, users)
    ArgoApplication.objects.filter(environment__name="prod").update(deleted_at=timezone.now())

    assert services.promotion_sync(promotion_id=promotion.pk) == "error"
    promotion.refresh_from_db()
    first = promotion.sync_error_since
    assert promotion.sync_state == "error" and first is not None
    assert promotion.sync_detail == "cannot sync: no Argo CD application is known"
    # Asked again inside the deadline: still an error, the deadline still counts from the first one.
    assert services.promotion_sync(promotion_id=promotion.pk) == "error"
    promotion.refresh_from_db()
    assert promotion.sync_error_since == first and promotion.sync_next_at is not None
    assert _actions(promotion).count("promotion.sync_error") == 1

    Promotion.objects.filter(pk=promotion.pk).update(sync_error_since=first - timedelta(minutes=31))
    assert services.promotion_sync(promotion_id=promotion.pk) == "failed"

    promotion.refresh_from_db()
    assert promotion.sync_state == "failed" and promotion.sync_next_at is None
    assert promotion.sync_detail == "gave up after 30 min: cannot sync: no Argo CD application is known"
    given_up = AuditEvent.objects.get(action="promotion.sync_given_up", target_id=str(promotion.pk))
    assert given_up.after["reason"] == "unresolved" and given_up.message == promotion.sync_detail
    assert change_syncs_due(kind=PROMOTION, now=timezone.now() + timedelta(days=1)) == 0
