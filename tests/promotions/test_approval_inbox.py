"""The approver's inbox: header badge, "needs my approval" filter, the request-time preview, notifications."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from accounts.models import RoleGrant
from accounts.permissions import _grants
from insight.models import EVENT_KIND_CHOICES
from promotions import services
from promotions.context_processors import approval_inbox
from promotions.models import PromotionState
from tests.factories import UserFactory
from tests.promotions.helpers import promotable_app

pytestmark = pytest.mark.django_db(transaction=True)


def _request(sandbox, users):
    return services.promotion_request_create(
        actor=users["rm_approver"],
        applications=[promotable_app(sandbox)],
        source_env=sandbox.stage,
        target_env=sandbox.prod,
    )


def test_header_badge_counts_requests_waiting_for_this_approver_only(client, sandbox, users, rf):
    promotion = _request(sandbox, users)
    client.force_login(users["approver"])
    html = client.get("/promotions/").content.decode()
    assert "data-approval-inbox" in html and "Needs my approval" in html
    # The requester (four-eyes) and a viewer see no badge.
    for who in ("rm_approver", "viewer"):
        client.force_login(users[who])
        assert "data-approval-inbox" not in client.get("/promotions/").content.decode()
    # Once decided, the request leaves the approver's inbox.
    services.promotion_branch_push(promotion_id=promotion.pk)
    services.promotion_approve(promotion=promotion, actor=users["approver"], comment="ok")
    client.force_login(users["approver"])
    assert "data-approval-inbox" not in client.get("/promotions/").content.decode()


def test_badge_is_one_query_and_scoped_to_the_approvers_environments(sandbox, users, rf, roles):
    _request(sandbox, users)
    scoped_elsewhere = UserFactory(username="sid")
    RoleGrant.objects.create(user=scoped_elsewhere, role="approver", project="*", environment="stage")
    scoped_here = UserFactory(username="pia")
    RoleGrant.objects.create(user=scoped_here, role="approver", project="*", environment="prod")
    for user, expected in ((scoped_elsewhere, 0), (scoped_here, 1), (users["approver"], 1)):
        request = rf.get("/")
        request.user = user
        _grants(user)  # roles are loaded once per request by the permission layer
        with CaptureQueriesContext(connection) as queries:
            assert approval_inbox(request) == {"approval_inbox_count": expected}
        assert len(queries) <= 1


def test_needs_my_approval_filter_lists_only_waiting_requests(client, sandbox, users):
    promotion = _request(sandbox, users)
    client.force_login(users["approver"])
    page = client.get("/promotions/", {"needs_approval": "1"}).content.decode()
    assert f'href="/promotions/{promotion.pk}/"' in page
    client.force_login(users["rm_approver"])
    page = client.get("/promotions/", {"needs_approval": "1"}).content.decode()
    assert f'href="/promotions/{promotion.pk}/"' not in page
    assert "No promotions match." in page


def test_approval_page_shows_commits_diff_and_gates_as_the_requester_saw_them(client, sandbox, users):
    promotion = _request(sandbox, users)
    item = promotion.items.get()
    assert item.diff and item.commits and promotion.requested_gates
    # A later re-evaluation rewrites `gates`; the approver still sees the request-time snapshot.
    promotion.gates = [{"label": "Later check", "passed": False, "blocking": True, "detail": "x"}]
    promotion.save(update_fields=["gates"])
    client.force_login(users["approver"])
    html = client.get(f"/promotions/{promotion.pk}/").content.decode()
    assert "What the requester saw" in html
    assert item.commits[0]["short_sha"] in html
    assert 'class="add"' in html and 'class="del"' in html
    assert promotion.requested_gates[0]["label"] in html
    assert promotion.state == PromotionState.REQUESTED


def test_subscribers_can_choose_approval_requested_notifications():
    assert "promotion.requested" in dict(EVENT_KIND_CHOICES)
