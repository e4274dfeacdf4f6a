"""A user the ledger names is deactivated, never deleted: the actor id is inside every event's hash."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.db.models import ProtectedError

from audit.models import AuditEvent
from audit.services import audit_event_record
from audit.verify import audit_chain_verify
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db
User = get_user_model()


@pytest.fixture
def leaver():
    user = UserFactory(username="leaver")
    audit_event_record(action="promotion.requested", actor=user, message="asked for a promotion")
    audit_event_record(action="promotion.approved", actor=user)
    return user


@pytest.fixture
def superuser_client(client):
    client.force_login(User.objects.create_superuser("root", "root@example.com", "demo-pass-1234"))
    return client


def test_deleting_a_user_the_ledger_names_is_refused(leaver):
    with pytest.raises(ProtectedError, match=r"AuditEvent\.actor"):
        leaver.delete()
    with pytest.raises(ProtectedError):
        User.objects.filter(pk=leaver.pk).delete()
    assert AuditEvent.objects.filter(actor_id=leaver.pk).count() == 2
    leaver.is_active = False  # what to do instead
    leaver.save()
    assert audit_chain_verify().ok


def test_a_user_with_no_events_can_still_be_deleted():
    UserFactory(username="never-acted").delete()
    assert not User.objects.filter(username="never-acted").exists()


def test_the_admin_refuses_and_says_to_deactivate(superuser_client, leaver):
    url = f"/django-admin/auth/user/{leaver.pk}/delete/"
    page = superuser_client.get(url).content.decode()
    assert "leaver: named by 2 audit events" in page and "Deactivate the user instead" in page
    superuser_client.post(url, {"post": "yes"})
    bulk = superuser_client.post(
        "/django-admin/auth/user/",
        {"action": "delete_selected", "_selected_action": [leaver.pk], "post": "yes"},
    )
    assert "Deactivate the user instead" in bulk.content.decode()
    assert User.objects.filter(pk=leaver.pk).exists()
    assert audit_chain_verify().ok
