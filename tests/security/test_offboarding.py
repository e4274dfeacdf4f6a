"""Offboarding and privilege changes: tokens expire and die with their user; every role, superuser,
staff or activation change is a ledger event, whatever path made it (admin, ORM, commands)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.exceptions import ValidationError
from django.core.management import CommandError, call_command
from django.db import transaction
from django.urls import reverse
from django.utils import timezone

from accounts.models import ApiToken, RoleGrant
from accounts.services import api_token_create, role_grant_add
from audit.models import AuditEvent
from tests.factories import UserFactory, user_with_role

pytestmark = [pytest.mark.django_db, pytest.mark.urls("tests.security.api_probe_urls")]

PROBE = "/api/probe/whoami"


def _events(action, user):
    return list(AuditEvent.objects.filter(action=action, target_id=str(user.pk)).order_by("sequence"))


# --- API tokens -----------------------------------------------------------------------------------


def test_a_token_expires_by_default_after_api_token_max_age_days_and_never_later(settings):
    settings.API_TOKEN_MAX_AGE_DAYS = 30
    user = user_with_role("viewer", username="tok-max")

    token, _ = api_token_create(user=user)

    assert abs(token.expires_at - (timezone.now() + timedelta(days=30))) < timedelta(minutes=1)
    for days in (31, 365, 0):
        with pytest.raises(ValidationError, match="API_TOKEN_MAX_AGE_DAYS"):
            api_token_create(user=user, expires_in_days=days)
    with pytest.raises(CommandError, match="API_TOKEN_MAX_AGE_DAYS"):
        call_command("create_api_token", "tok-max", "--expires-in-days", "0")
    assert ApiToken.objects.filter(user=user).count() == 1


def test_the_token_page_offers_no_period_beyond_the_maximum(client, settings):
    settings.API_TOKEN_MAX_AGE_DAYS = 30
    client.force_login(user_with_role("viewer", username="tok-page"))
    assert client.get(reverse("accounts:tokens")).context["expiry_choices"] == (7, 30)
    response = client.post(reverse("accounts:token_create"), {"name": "x", "expires_in_days": "90"})
    assert response.status_code == 400
    assert not ApiToken.objects.exists()


def test_deactivating_a_user_revokes_their_tokens_for_good(client):
    user = user_with_role("viewer", username="leaver")
    _, raw = api_token_create(user=user, name="ci")
    auth = {"HTTP_AUTHORIZATION": f"Bearer {raw}"}
    assert client.get(PROBE, **auth).status_code == 200

    user.is_active = False
    user.save()
    assert client.get(PROBE, **auth).status_code == 401

    # Re-activating the account (a mistake undone, a rehire) does not bring old tokens back.
    user.is_active = True
    user.save()
    assert client.get(PROBE, **auth).status_code == 401
    revoked = AuditEvent.objects.get(action="token.revoked")
    assert revoked.message == "user deactivated" and revoked.actor_name == "system:accounts"
    change = _events("user.privileges_changed", user)[0]
    assert change.before == {"is_active": True} and change.after == {"is_active": False}


# --- privilege changes from any path ---------------------------------------------------------------


def test_a_superuser_flag_set_in_the_shell_is_a_ledger_event():
    user = UserFactory(username="quiet-root")

    user.is_superuser = True
    user.is_staff = True
    user.save()

    event = _events("user.privileges_changed", user)[-1]
    assert event.actor_name == "system:orm"
    assert event.before == {"is_staff": False, "is_superuser": False}
    assert event.after == {"is_staff": True, "is_superuser": True}
    # A save that changes nothing privileged writes nothing.
    user.first_name = "Quiet"
    user.save()
    user.save(update_fields=["last_login"])
    assert len(_events("user.privileges_changed", user)) == 1


def test_createsuperuser_is_a_ledger_event(monkeypatch):
    monkeypatch.setenv("DJANGO_SUPERUSER_PASSWORD", "a-long-enough-password-1")
    call_command("createsuperuser", "--noinput", username="break-glass", email="bg@example.com")

    user = get_user_model().objects.get(username="break-glass")
    event = _events("user.privileges_changed", user)[0]
    assert event.after == {"is_staff": True, "is_superuser": True}
    assert event.message == "account created with privileges"


def test_group_changes_from_either_side_and_clear_are_ledger_events():
    user = UserFactory(username="grouped")
    admin_group, auditor_group = Group.objects.get(name="admin"), Group.objects.get(name="auditor")

    user.groups.add(admin_group)
    auditor_group.user_set.add(user)
    admin_group.user_set.remove(user)
    user.groups.clear()

    granted = [e.after["role"] for e in _events("role.granted", user)]
    revoked = [e.after["role"] for e in _events("role.revoked", user)]
    assert granted == ["admin", "auditor"]
    assert revoked == ["admin", "auditor"]
    assert all(e.actor_name == "system:orm" for e in _events("role.granted", user))


def test_role_grant_rows_saved_or_deleted_directly_are_ledger_events():
    user = UserFactory(username="scoped")

    grant = RoleGrant.objects.create(user=user, role="approver", project="payments-*", environment="prod")
    grant.project = "*"
    grant.save()
    grant.delete()

    created = _events("role.granted", user)[-1]
    assert created.after == {
        "role": "approver",
        "project": "payments-*",
        "environment": "prod",
        "source": "local",
    }
    changed = _events("role.grant_changed", user)[-1]
    assert (changed.before["project"], changed.after["project"]) == ("payments-*", "*")
    deleted = _events("role.revoked", user)[-1]
    assert deleted.before["project"] == "*" and deleted.target_label == "scoped"


def test_a_service_records_its_change_once():
    user = UserFactory(username="once")
    role_grant_add(user=user, role="oncall")
    role_grant_add(user=user, role="approver", project="payments-*")
    assert [e.after["role"] for e in _events("role.granted", user)] == ["oncall", "approver"]


def test_the_event_commits_with_the_change_or_not_at_all():
    user = UserFactory(username="atomic")
    before = AuditEvent.objects.count()
    with pytest.raises(RuntimeError), transaction.atomic():
        user.groups.add(Group.objects.get(name="admin"))
        assert AuditEvent.objects.count() == before + 1  # written in the change's transaction
        raise RuntimeError("the change is rolled back")
    assert AuditEvent.objects.count() == before
    assert not user.groups.exists()


def test_django_admin_changes_name_the_admin_as_actor(client):
    root = UserFactory(username="console-root")
    root.is_superuser = root.is_staff = True
    root.save()
    target = UserFactory(username="promoted")
    client.force_login(root)

    response = client.post(
        f"/django-admin/auth/user/{target.pk}/change/",
        {
            "username": "promoted",
            "email": target.email,
            "is_active": "on",
            "is_superuser": "on",
            "groups": [Group.objects.get(name="admin").pk],
            "date_joined_0": "2026-01-01",
            "date_joined_1": "00:00:00",
            "initial-date_joined_0": "2026-01-01",
            "initial-date_joined_1": "00:00:00",
        },
    )

    assert response.status_code == 302, response.content.decode()[:2000]
    privileges = _events("user.privileges_changed", target)[-1]
    assert privileges.actor_name == "console-root" and privileges.after == {"is_superuser": True}
    granted = _events("role.granted", target)[-1]
    assert granted.actor_name == "console-root" and granted.after["role"] == "admin"
