"""Login throttling (django-axes): lockout after AXES_FAILURE_LIMIT failures; failed sign-ins,
lockouts and denied actions are audit events."""

from __future__ import annotations

import time

import pytest
from django.urls import reverse

from audit.aggregate import audit_aggregates_flush
from audit.models import AuditEvent
from tests.factories import user_with_role

pytestmark = pytest.mark.django_db


@pytest.fixture
def axes_on(settings):
    settings.AXES_ENABLED = True
    settings.AXES_FAILURE_LIMIT = 3
    yield settings
    from axes.models import AccessAttempt

    AccessAttempt.objects.all().delete()


def _login(client, username, password):
    return client.post(reverse("login"), {"username": username, "password": password})


def test_lockout_after_the_failure_limit_even_with_the_right_password(client, axes_on):
    user_with_role("viewer", username="mallory-target")
    for _ in range(2):
        failed = _login(client, "mallory-target", "wrong")
        assert failed.status_code == 200
        assert "didn't match" in failed.content.decode()
    third = _login(client, "mallory-target", "wrong")
    assert third.status_code == 429
    assert "temporarily locked" in third.content.decode()

    correct = _login(client, "mallory-target", "demo-pass-1234")
    assert correct.status_code == 429
    assert "_auth_user_id" not in client.session

    # Failed sign-ins are aggregated per client address and minute (audit.aggregate).
    audit_aggregates_flush(now=time.time() + 120)
    failures = AuditEvent.objects.filter(action="auth.login_failed", target_label="mallory-target")
    assert sum(event.after["count"] for event in failures) >= 3
    # The lockout, and every attempt made while locked, is recorded (and counted per minute).
    lockouts = AuditEvent.objects.filter(action="auth.locked_out").order_by("sequence")
    assert sum(event.after["count"] for event in lockouts) == 2
    lockout = lockouts.first()
    assert lockout.target_label == "mallory-target"
    assert "127.0.0.1" in lockout.message
    assert not AuditEvent.objects.filter(action="auth.login").exists()


def test_other_accounts_are_not_locked_by_someone_elses_failures(client, axes_on):
    user_with_role("viewer", username="victim")
    user_with_role("viewer", username="bystander")
    for _ in range(3):
        _login(client, "victim", "wrong")
    ok = _login(client, "bystander", "demo-pass-1234")
    assert ok.status_code == 302
    assert AuditEvent.objects.filter(action="auth.login", actor_name="bystander").exists()


def test_a_success_below_the_limit_resets_the_counter(client, axes_on):
    user_with_role("viewer", username="clumsy")
    for _ in range(2):
        _login(client, "clumsy", "wrong")
    assert _login(client, "clumsy", "demo-pass-1234").status_code == 302
    client.logout()
    for _ in range(2):
        assert _login(client, "clumsy", "wrong").status_code == 200
    assert _login(client, "clumsy", "demo-pass-1234").status_code == 302


def test_passwords_never_reach_the_audit_trail(client, axes_on):
    user_with_role("viewer", username="typo")
    _login(client, "typo", "Hunter2-secret-typed-wrong")
    for event in AuditEvent.objects.all():
        assert "Hunter2" not in f"{event.before} {event.after} {event.message} {event.target_label}"


def test_a_denied_page_is_an_audit_event(client):
    viewer = user_with_role("viewer", username="curious")
    client.force_login(viewer)
    assert client.get(reverse("audit:event_list")).status_code == 403
    denial = AuditEvent.objects.get(action="auth.denied")
    assert denial.actor_name == "curious"
    assert denial.target_label == "GET /audit/"
    assert "auditor" in denial.message
