"""Who may roll back, the API, and escaping of what users type."""

from __future__ import annotations

import pytest
from django.urls import reverse

from accounts.models import ApiToken, RoleGrant, hash_token
from audit.models import AuditEvent
from inventory.models import Environment
from rollbacks.models import RollbackRequest
from tests.factories import ApplicationFactory, UserFactory, user_with_role
from tests.rollbacks.sandbox_env import oncall

pytestmark = pytest.mark.django_db


@pytest.fixture
def app_env():
    env = Environment.objects.create(name="prod", order=30, production_like=True)
    app = ApplicationFactory(name="cart", project="checkout")
    return app, env


def _token(user) -> str:
    raw = ApiToken.generate()
    ApiToken.objects.create(user=user, token_hash=hash_token(raw), last_four=raw[-4:])
    return raw


@pytest.mark.parametrize("role", ["viewer", "release_manager", "approver", "auditor"])
def test_only_oncall_may_roll_back(role, app_env, client):
    client.force_login(user_with_role(role))
    query = {"app": "cart", "env": "prod"}
    assert client.get(reverse("rollbacks:new"), query).status_code == 403
    posted = client.post(reverse("rollbacks:new"), {**query, "mode": "previous", "reason": "x"})
    assert posted.status_code == 403
    assert not RollbackRequest.objects.exists()
    assert AuditEvent.objects.filter(action="auth.denied").exists()


@pytest.mark.parametrize(
    ("project", "environment"), [("payments", "*"), ("checkout", "dev")], ids=["other-project", "other-env"]
)
def test_oncall_scope_must_cover_the_app_and_the_environment(project, environment, app_env, client):
    client.force_login(oncall(project, environment=environment))
    assert client.get(reverse("rollbacks:new"), {"app": "cart", "env": "prod"}).status_code in (403, 404)


def test_api_refuses_a_release_manager_with_403(app_env, client):
    token = _token(user_with_role("release_manager"))
    resp = client.post(
        "/api/v1/rollbacks",
        {"app": "cart", "environment": "prod", "reason": "x"},
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {token}",
    )
    assert resp.status_code == 403
    assert not RollbackRequest.objects.exists()


def test_api_validates_input(app_env):
    from django.test import Client

    user = oncall("checkout")
    token = _token(user)
    client = Client()
    headers = {"HTTP_AUTHORIZATION": f"Bearer {token}"}
    missing = client.post(
        "/api/v1/rollbacks",
        {"app": "cart", "environment": "prod"},
        content_type="application/json",
        **headers,
    )
    assert missing.status_code == 400 and "reason" in missing.json()["error"]
    unknown = client.post(
        "/api/v1/rollbacks",
        {"app": "nope", "environment": "prod", "reason": "x"},
        content_type="application/json",
        **headers,
    )
    assert unknown.status_code == 404
    no_deploy = client.post(
        "/api/v1/rollbacks",
        {"app": "cart", "environment": "prod", "reason": "x"},
        content_type="application/json",
        **headers,
    )
    assert no_deploy.status_code == 400
    assert "no deployment" in no_deploy.json()["error"]


def test_viewers_of_other_projects_do_not_see_a_rollback(app_env, client):
    app, env = app_env
    rollback = RollbackRequest.objects.create(
        application=app, environment=env, mode="previous", requested_by_name="x", reason="r",
        base_branch="main", current_revision="a" * 40, revert_shas=["b" * 40],
    )  # fmt: skip
    outsider = UserFactory(username="outsider")
    RoleGrant.objects.create(user=outsider, role="viewer", project="payments")
    client.force_login(outsider)
    assert client.get(reverse("rollbacks:detail", args=[rollback.pk])).status_code == 404
    assert client.get(f"/api/v1/rollbacks/{rollback.pk}").status_code == 404
    assert rollback.pk not in [r.pk for r in client.get(reverse("rollbacks:list")).context["rollbacks"]]

    client.force_login(user_with_role("viewer"))
    assert client.get(reverse("rollbacks:detail", args=[rollback.pk])).status_code == 200
    body = client.get(f"/api/v1/rollbacks/{rollback.pk}").json()
    assert body["state"] == "requested" and body["revert_shas"] == ["b" * 40]


def test_user_text_is_escaped_on_the_pages(app_env, client):
    app, env = app_env
    rollback = RollbackRequest.objects.create(
        application=app, environment=env, mode="previous", requested_by_name="x",
        reason="<script>alert(1)</script>", incident='javascript:alert(1)" onmouseover="x',
        base_branch="main", current_revision="a" * 40, revert_shas=["b" * 40],
    )  # fmt: skip
    client.force_login(user_with_role("viewer"))
    html = client.get(reverse("rollbacks:detail", args=[rollback.pk])).content.decode()
    assert "<script>alert(1)</script>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert 'href="javascript:' not in html
    listing = client.get(reverse("rollbacks:list")).content.decode()
    assert "<script>alert" not in listing


def test_a_pull_request_webhook_of_a_rollback_branch_triggers_tracking(
    app_env, django_capture_on_commit_callbacks
):
    from changes.pullrequests import PR_STATE_HANDLERS
    from integrations.forges.webhooks import WebhookEvent
    from rollbacks.services import rollback_pr_event

    app, env = app_env
    rollback = RollbackRequest.objects.create(
        application=app, environment=env, mode="previous", requested_by_name="x", reason="r", state="pr_open",
        base_branch="main", current_revision="a" * 40, revert_shas=["b" * 40], branch="rollback/cart/prod/1",
    )  # fmt: skip
    assert rollback_pr_event in PR_STATE_HANDLERS
    event = WebhookEvent(
        forge="github", kind="pull_request", event="pull_request", delivery_id="d1", action="closed",
        repo_full_name="acme/gitops", pr_number=3, merged=True, head_ref=rollback.branch, base_ref="main",
    )  # fmt: skip
    other = WebhookEvent(
        forge="github", kind="pull_request", event="pull_request", delivery_id="d2", action="closed",
        repo_full_name="acme/gitops", pr_number=4, head_ref="promote/cart/stage-to-prod/9", base_ref="main",
    )  # fmt: skip
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        rollback_pr_event(app.repository, event)
        rollback_pr_event(app.repository, other)
    assert len(callbacks) == 1
