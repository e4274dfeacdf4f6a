"""Promotion pages and the JSON API: roles on the object, preview, timeline partial, four-eyes."""

from __future__ import annotations

import re

import pytest
from django.test import Client

from accounts.services import api_token_create
from promotions import services
from promotions.models import Promotion, PromotionState
from tests.promotions.helpers import promotable_app

pytestmark = pytest.mark.django_db(transaction=True)


def test_promote_page_shows_preview_diff_and_gates(client, sandbox, users):
    app = promotable_app(sandbox)
    client.force_login(users["rm"])
    page = client.get("/promotions/new/", {"app": app.name, "from": "stage"})
    assert page.status_code == 200
    html = page.content.decode()
    assert f"Promote {app.name} from stage to prod" in html
    assert 'class="add"' in html and 'class="del"' in html
    assert "Zero-downtime checklist" in html
    assert "Request promotion" in html


def test_viewer_cannot_open_the_promote_page_or_request(client, sandbox, users):
    app = promotable_app(sandbox)
    client.force_login(users["viewer"])
    assert client.get("/promotions/new/", {"app": app.name, "from": "stage"}).status_code == 403
    response = client.post("/promotions/request/", {"app": app.name, "from": "stage", "to": "prod"})
    assert response.status_code == 403
    assert not Promotion.objects.exists()


def test_request_from_the_browser_then_detail_and_htmx_timeline(client, sandbox, users, purge_broker):
    app = promotable_app(sandbox)
    client.force_login(users["rm"])
    response = client.post(
        "/promotions/request/", {"app": app.name, "from": "stage", "to": "prod", "note": "<b>hi</b>"}
    )
    promotion = Promotion.objects.get()
    assert response.status_code == 302 and response["Location"] == f"/promotions/{promotion.pk}/"
    detail = client.get(response["Location"])
    html = detail.content.decode()
    assert "&lt;b&gt;hi&lt;/b&gt;" in html  # escaped
    assert "someone else must approve it" in html
    partial = client.get(response["Location"], HTTP_HX_REQUEST="true")
    assert partial.status_code == 200
    assert b"<html" not in partial.content and b"Timeline" in partial.content
    client.force_login(users["approver"])
    waiting = client.get(response["Location"]).content.decode()
    assert 'id="waiting-for-branch"' in waiting and 'name="head_sha"' not in waiting
    assert services.promotion_branch_push(promotion_id=promotion.pk) == "pushed"
    promotion.refresh_from_db()
    page = client.get(response["Location"]).content.decode()
    assert f'name="head_sha" value="{promotion.pushed_head_sha}"' in page
    assert f'You approve commit <code class="sha">{promotion.pushed_head_sha}</code>' in page
    stale = {"comment": "ok", "head_sha": "0" * 40}
    assert client.post(f"/promotions/{promotion.pk}/approve/", stale).status_code == 302
    promotion.refresh_from_db()
    assert promotion.state == PromotionState.REQUESTED  # the branch is not at what they reviewed
    fresh = {"comment": "ok", "head_sha": promotion.pushed_head_sha}
    assert client.post(f"/promotions/{promotion.pk}/approve/", fresh).status_code == 302
    promotion.refresh_from_db()
    assert promotion.state == PromotionState.APPROVED
    approved = client.get(response["Location"]).content.decode()
    assert f'approved commit <code class="sha">{promotion.pushed_head_sha[:12]}</code>' in approved
    listing = client.get("/promotions/", {"state": "in_flight"})
    assert f"#{promotion.pk}" in listing.content.decode()


def test_requester_posting_approve_gets_403(client, sandbox, users):
    promotion = services.promotion_request_create(
        actor=users["rm_approver"],
        applications=[promotable_app(sandbox)],
        source_env=sandbox.stage,
        target_env=sandbox.prod,
    )
    client.force_login(users["rm_approver"])
    assert client.post(f"/promotions/{promotion.pk}/approve/", {"comment": "me"}).status_code == 403
    promotion.refresh_from_db()
    assert promotion.state == PromotionState.REQUESTED


def test_api_request_get_approve_and_conflict(client, sandbox, users, purge_broker):
    app = promotable_app(sandbox)
    _, rm_token = api_token_create(user=users["rm"])
    _, approver_token = api_token_create(user=users["approver"])
    created = client.post(
        "/api/v1/promotions",
        {"apps": [app.name], "from": "stage", "to": "prod"},
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {rm_token}",
    )
    assert created.status_code == 201, created.content
    data = created.json()
    assert data["state"] == "requested" and data["apps"][0]["app"] == app.name
    pk = data["id"]
    again = client.post(
        "/api/v1/promotions",
        {"apps": [app.name], "from": "stage"},
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {rm_token}",
    )
    assert again.status_code == 409 and again.json()["conflict"] == f"/promotions/{pk}/"
    own = client.post(
        f"/api/v1/promotions/{pk}/approve",
        {},
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {rm_token}",
    )
    assert own.status_code == 403
    early = client.post(
        f"/api/v1/promotions/{pk}/approve",
        {"comment": "ok"},
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {approver_token}",
    )
    assert early.status_code == 409 and "not pushed yet" in early.json()["error"]
    services.promotion_branch_push(promotion_id=pk)
    head = client.get(f"/api/v1/promotions/{pk}", HTTP_AUTHORIZATION=f"Bearer {approver_token}").json()[
        "branch"
    ]["pushed_head_sha"]
    assert head and len(head) == 40
    approved = client.post(
        f"/api/v1/promotions/{pk}/approve",
        {"comment": "ok", "head_sha": head},
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {approver_token}",
    )
    assert approved.status_code == 200 and approved.json()["state"] == "approved"
    assert approved.json()["approvals"][0]["head_sha"] == head
    got = client.get(f"/api/v1/promotions/{pk}", HTTP_AUTHORIZATION=f"Bearer {approver_token}")
    assert got.json()["timestamps"]["approved"] is not None
    cancelled = client.post(
        f"/api/v1/promotions/{pk}/cancel",
        {},
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {rm_token}",
    )
    assert cancelled.status_code == 200 and cancelled.json()["state"] == "cancelled"
    bad = client.post(
        "/api/v1/promotions",
        {"apps": "x", "from": 3},
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {rm_token}",
    )
    assert bad.status_code == 400


def test_openapi_document_lists_promotion_endpoints(client, users):
    client.force_login(users["viewer"])
    schema = client.get("/api/schema").json()
    for path in (
        "/promotions",
        "/promotions/{id}",
        "/promotions/{id}/approve",
        "/promotions/{id}/reject",
        "/promotions/{id}/cancel",
    ):
        assert path in schema["paths"]


def test_new_promotion_is_offered_only_to_release_managers(client, users):
    client.force_login(users["viewer"])
    assert "New promotion" not in client.get("/promotions/").content.decode()
    client.force_login(users["rm"])
    assert "New promotion" in client.get("/promotions/").content.decode()


def test_rejecting_needs_a_reason_and_records_it_in_the_ledger(client, sandbox, users):
    from audit.models import AuditEvent

    promotion = services.promotion_request_create(
        actor=users["rm"],
        applications=[promotable_app(sandbox)],
        source_env=sandbox.stage,
        target_env=sandbox.prod,
    )
    client.force_login(users["approver"])
    page = client.get(f"/promotions/{promotion.pk}/").content.decode()
    assert 'id="reject-form"' in page and "data-confirm=" in page
    assert 'name="comment" rows="2" required' in page

    client.post(f"/promotions/{promotion.pk}/reject/", {"comment": "   "})
    promotion.refresh_from_db()
    assert promotion.state == PromotionState.REQUESTED
    assert not AuditEvent.objects.filter(action="promotion.rejected").exists()

    client.post(f"/promotions/{promotion.pk}/reject/", {"comment": "the error budget is spent"})
    promotion.refresh_from_db()
    assert promotion.state == PromotionState.REJECTED
    event = AuditEvent.objects.get(action="promotion.rejected")
    assert event.message == "the error budget is spent"
    assert event.after["reason"] == "the error budget is spent"


def test_polled_partial_swaps_the_approvals_and_actions_out_of_band(client, sandbox, users, purge_broker):
    """A detail page left open follows the approvals and offers only the actions that still apply."""
    promotion = services.promotion_request_create(
        actor=users["rm"],
        applications=[promotable_app(sandbox)],
        source_env=sandbox.stage,
        target_env=sandbox.prod,
    )
    assert services.promotion_branch_push(promotion_id=promotion.pk) == "pushed"
    promotion.refresh_from_db()
    client.force_login(users["rm"])
    url = promotion.get_absolute_url()
    page = client.get(url).content.decode()
    assert 'id="promotion-actions"' in page and "hx-swap-oob" not in page
    first = client.get(url, HTTP_HX_REQUEST="true").content.decode()
    assert 'id="promotion-actions" hx-swap-oob="outerHTML"' in first
    assert 'id="promotion-sync-actions" hx-swap-oob="outerHTML"' in first
    assert "Approvals (0 of 1)" in first and "Cancel promotion" in first
    services.promotion_approve(
        promotion=promotion, actor=users["approver"], comment="ok", head_sha=promotion.pushed_head_sha
    )
    approved = client.get(url, HTTP_HX_REQUEST="true").content.decode()
    assert "Approvals (1 of 1)" in approved and users["approver"].username in approved
    Promotion.objects.filter(pk=promotion.pk).update(state=PromotionState.HEALTHY)
    done = client.get(url, HTTP_HX_REQUEST="true").content.decode()
    assert "Cancel promotion" not in done and "Approvals (1 of 1)" in done
    assert 'hx-trigger="every 3s"' not in done  # terminal: the partial stops polling


def test_a_cancel_form_swapped_in_by_the_poll_posts_with_its_csrf_token(sandbox, users, purge_broker):
    promotion = services.promotion_request_create(
        actor=users["rm"],
        applications=[promotable_app(sandbox)],
        source_env=sandbox.stage,
        target_env=sandbox.prod,
    )
    browser = Client(enforce_csrf_checks=True)
    browser.force_login(users["rm"])
    polled = browser.get(promotion.get_absolute_url(), HTTP_HX_REQUEST="true").content.decode()
    form = polled[polled.index(f'action="/promotions/{promotion.pk}/cancel/"') :]
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', form)
    assert token is not None
    refused = browser.post(f"/promotions/{promotion.pk}/cancel/", {"comment": "no"})
    assert refused.status_code == 403
    answer = browser.post(
        f"/promotions/{promotion.pk}/cancel/", {"comment": "no", "csrfmiddlewaretoken": token[1]}
    )
    assert answer.status_code == 302
    promotion.refresh_from_db()
    assert promotion.state == PromotionState.CANCELLED
