"""Forge webhooks: signature checks, rejections counted, PR events drive tracking and handlers."""

from __future__ import annotations

import json
import time

import pytest
import requests

from audit.aggregate import audit_aggregates_flush
from audit.models import AuditEvent
from changes.pullrequests import PR_STATE_HANDLERS, register_pr_state_handler
from promotions import services
from promotions.models import PromotionState
from sandbox.forge import signature
from tests.conftest import wait_for
from tests.promotions.helpers import WEBHOOK_SECRET, promotable_app

pytestmark = pytest.mark.django_db(transaction=True)
URL = "/webhooks/forge/gitops/"


def _pr_event(number: int, *, merged: bool, head: str = "promote/x/stage-to-prod/1") -> bytes:
    return json.dumps(
        {
            "action": "closed",
            "number": number,
            "pull_request": {
                "number": number,
                "merged": merged,
                "merge_commit_sha": "a" * 40 if merged else None,
                "head": {"ref": head, "sha": "b" * 40},
                "base": {"ref": "main", "sha": "c" * 40},
            },
            "repository": {"full_name": "acme/gitops"},
        }
    ).encode()


def test_unsigned_and_badly_signed_deliveries_are_refused_and_counted(client, sandbox):
    body = _pr_event(1, merged=True)
    assert (
        client.post(
            URL, body, content_type="application/json", HTTP_X_GITHUB_EVENT="pull_request"
        ).status_code
        == 403
    )
    bad = client.post(
        URL,
        body,
        content_type="application/json",
        HTTP_X_GITHUB_EVENT="pull_request",
        HTTP_X_HUB_SIGNATURE_256=signature("wrong-secret", body),
    )
    assert bad.status_code == 403
    assert client.post("/webhooks/forge/nope/", body, content_type="application/json").status_code == 404
    # Aggregated per client address and minute: one row now, the rest counted for the summary.
    rejected = AuditEvent.objects.filter(action="webhook.rejected")
    assert rejected.count() == 1 and rejected.get().after["count"] == 1
    assert audit_aggregates_flush(now=time.time() + 120) == 1
    assert sum(event.after["count"] for event in rejected) == 3


def test_signed_pull_request_event_reaches_tracking_and_registered_handlers(
    client, sandbox, users, purge_broker
):
    seen = []

    def handler(repository, event):
        seen.append((repository.name, event.pr_number, event.merged))

    register_pr_state_handler(handler)
    try:
        promotion = services.promotion_request_create(
            actor=users["rm"],
            applications=[promotable_app(sandbox)],
            source_env=sandbox.stage,
            target_env=sandbox.prod,
        )
        services.promotion_branch_push(promotion_id=promotion.pk)
        services.promotion_approve(promotion=promotion, actor=users["approver"])
        services.promotion_pr_open(promotion_id=promotion.pk)
        promotion.refresh_from_db()
        body = _pr_event(promotion.pr_number, merged=True, head=promotion.pr_branch)
        response = client.post(
            URL,
            body,
            content_type="application/json",
            HTTP_X_GITHUB_EVENT="pull_request",
            HTTP_X_HUB_SIGNATURE_256=signature(WEBHOOK_SECRET, body),
        )
        assert response.status_code == 202, response.content
        assert response.json()["promotions"] == [promotion.pk]
        assert seen == [("gitops", promotion.pr_number, True)]
    finally:
        PR_STATE_HANDLERS.remove(handler)


def test_real_forge_merge_webhook_is_accepted(live_server, sandbox, users, purge_broker):
    """The sandbox forge delivers its signed webhook to the running portal on merge."""
    requests.put(
        f"{sandbox.forge.base_url}/sandbox/webhook",
        json={"url": f"{live_server.url}{URL}", "secret": WEBHOOK_SECRET},
        timeout=10,
    ).raise_for_status()
    promotion = services.promotion_request_create(
        actor=users["rm"],
        applications=[promotable_app(sandbox)],
        source_env=sandbox.stage,
        target_env=sandbox.prod,
    )
    services.promotion_branch_push(promotion_id=promotion.pk)
    services.promotion_approve(promotion=promotion, actor=users["approver"])
    services.promotion_pr_open(promotion_id=promotion.pk)
    promotion.refresh_from_db()
    sandbox.merge(promotion.pr_number)
    assert sandbox.forge.wait_for_webhooks(10)
    deliveries = requests.get(f"{sandbox.forge.base_url}/sandbox/state", timeout=10).json()["deliveries"]
    closed = [d for d in deliveries if d["event"] == "pull_request" and d["action"] == "closed"]
    assert closed and closed[-1]["status_code"] == 202
    assert not AuditEvent.objects.filter(action="webhook.rejected").exists()
    assert wait_for(
        lambda: services.promotion_track(promotion_id=promotion.pk) != PromotionState.PR_OPEN, timeout=10
    )


def test_a_replayed_delivery_id_answers_duplicate_and_does_nothing(client, sandbox):
    seen = []

    def handler(repository, event):
        seen.append(event.delivery_id)

    register_pr_state_handler(handler)
    try:
        body = _pr_event(4711, merged=True)
        headers = {
            "HTTP_X_GITHUB_EVENT": "pull_request",
            "HTTP_X_GITHUB_DELIVERY": "0b8e1c2a-replayed-delivery",
            "HTTP_X_HUB_SIGNATURE_256": signature(WEBHOOK_SECRET, body),
        }
        first = client.post(URL, body, content_type="application/json", **headers)
        replay = client.post(URL, body, content_type="application/json", **headers)
        other = client.post(
            URL,
            body,
            content_type="application/json",
            **{**headers, "HTTP_X_GITHUB_DELIVERY": "0b8e1c2a-another-delivery"},
        )
    finally:
        PR_STATE_HANDLERS.remove(handler)

    assert first.status_code == 202 and other.status_code == 202
    assert replay.status_code == 200 and replay.json()["duplicate"] is True
    assert seen == ["0b8e1c2a-replayed-delivery", "0b8e1c2a-another-delivery"]
