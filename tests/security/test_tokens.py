"""Personal API tokens: shown once, hashed at rest, expiry, revocation, last use; the API refuses
revoked and expired tokens."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from accounts.models import ApiToken, hash_token
from accounts.services import api_token_create
from audit.models import AuditEvent
from tests.factories import user_with_role

pytestmark = [pytest.mark.django_db, pytest.mark.urls("tests.security.api_probe_urls")]

PROBE = "/api/probe/whoami"


def bearer(raw: str) -> dict[str, str]:
    return {"HTTP_AUTHORIZATION": f"Bearer {raw}"}


@pytest.fixture
def viewer():
    return user_with_role("viewer", username="tok-viewer")


def test_token_page_creates_a_token_shown_once_and_stores_only_its_hash(client, viewer):
    client.force_login(viewer)
    response = client.post(reverse("accounts:token_create"), {"name": "ci-deploy", "expires_in_days": "30"})

    assert response.status_code == 200
    assert "no-store" in response["Cache-Control"]
    token = ApiToken.objects.get(user=viewer)
    raw = response.context["new_token"]
    assert raw.startswith("gpp_") and raw in response.content.decode()
    assert token.token_hash == hash_token(raw) and raw not in token.token_hash
    assert token.last_four == raw[-4:]
    assert abs((token.expires_at - timezone.now()) - timedelta(days=30)) < timedelta(minutes=1)
    # Listing again never shows the token.
    listing = client.get(reverse("accounts:tokens")).content.decode()
    assert raw not in listing and f"…{raw[-4:]}" in listing and "ci-deploy" in listing
    event = AuditEvent.objects.get(action="token.created")
    assert raw not in str(event.after) and raw not in event.target_label and raw not in event.message


@pytest.mark.parametrize(
    ("form", "problem"),
    [
        ({"name": "", "expires_in_days": "30"}, "name"),
        ({"name": "x", "expires_in_days": "0"}, "expiry"),
        ({"name": "x", "expires_in_days": "99999"}, "expiry"),
        ({"name": "x" * 101, "expires_in_days": "30"}, "name"),
    ],
)
def test_token_form_refuses_bad_input(client, viewer, form, problem):
    client.force_login(viewer)
    response = client.post(reverse("accounts:token_create"), form)
    assert response.status_code == 400
    assert problem in response.content.decode().lower()
    assert not ApiToken.objects.exists()


def test_api_accepts_a_fresh_token_and_records_last_use(client, viewer):
    _, raw = api_token_create(user=viewer, name="ci", expires_in_days=30)
    response = client.get(PROBE, **bearer(raw))
    assert response.status_code == 200, response.content
    assert response.json()["user"] == "tok-viewer"
    assert ApiToken.objects.get(user=viewer).last_used_at is not None
    page = client.get(reverse("accounts:tokens"))  # anonymous: the token does not log a browser in
    assert page.status_code == 302


def test_api_refuses_a_revoked_token(client, viewer):
    token, raw = api_token_create(user=viewer, name="ci", expires_in_days=30)
    assert client.get(PROBE, **bearer(raw)).status_code == 200

    client.force_login(viewer)
    revoke = client.post(reverse("accounts:token_revoke", args=[token.pk]))
    assert revoke.status_code == 302
    client.logout()

    refused = client.get(PROBE, **bearer(raw))
    assert refused.status_code == 401
    assert refused.json() == {"error": "invalid or expired API token"}
    assert AuditEvent.objects.filter(action="token.revoked", target_id=str(token.pk)).exists()


def test_api_refuses_an_expired_token(client, viewer):
    token, raw = api_token_create(user=viewer, name="ci", expires_in_days=30)
    ApiToken.objects.filter(pk=token.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    assert client.get(PROBE, **bearer(raw)).status_code == 401
    assert client.post(PROBE, data="{}", content_type="application/json", **bearer(raw)).status_code == 401


def test_api_refuses_the_token_of_a_deactivated_user_and_garbage(client, viewer):
    _, raw = api_token_create(user=viewer, name="ci", expires_in_days=30)
    viewer.is_active = False
    viewer.save()
    assert client.get(PROBE, **bearer(raw)).status_code == 401
    for junk in ("", "gpp_", raw + "x", raw.upper(), "' OR 1=1 --", hash_token(raw)):
        assert client.get(PROBE, **bearer(junk)).status_code == 401


def test_a_user_cannot_see_or_revoke_another_users_token(client, viewer):
    other = user_with_role("viewer", username="tok-other")
    token, _ = api_token_create(user=other, name="theirs", expires_in_days=30)
    client.force_login(viewer)
    assert "theirs" not in client.get(reverse("accounts:tokens")).content.decode()
    assert client.post(reverse("accounts:token_revoke", args=[token.pk])).status_code == 404
    token.refresh_from_db()
    assert token.revoked_at is None


def test_an_admin_sees_and_revokes_everyones_tokens(client, viewer):
    admin = user_with_role("admin", username="tok-admin")
    token, _ = api_token_create(user=viewer, name="leaked", expires_in_days=30)
    client.force_login(admin)
    assert "leaked" in client.get(reverse("accounts:tokens")).content.decode()
    assert client.post(reverse("accounts:token_revoke", args=[token.pk])).status_code == 302
    token.refresh_from_db()
    assert token.revoked_at is not None
    event = AuditEvent.objects.get(action="token.revoked")
    assert event.actor_name == "tok-admin"


def test_token_auth_is_recorded_as_such_and_keeps_role_checks(client):
    nobody = user_with_role("viewer", username="tok-norole")
    nobody.groups.clear()
    _, raw = api_token_create(user=nobody, name="ci", expires_in_days=30)
    response = client.get(PROBE, **bearer(raw))
    assert response.status_code == 403
    denial = AuditEvent.objects.filter(action="auth.denied").order_by("-sequence").first()
    assert denial.actor_name == "tok-norole" and denial.actor_type == "token"
