"""Every list filter answers hostile query values with a field error, never a server error."""

from __future__ import annotations

import pytest
from django.urls import reverse

from accounts.roles import Role
from tests.factories import user_with_role

pytestmark = pytest.mark.django_db

HOSTILE = [
    "2026-13-45T99:00",
    "2026-02-30",
    "9999-99-99",
    "0000-00-00T00:00",
    "\x00",
    "a\x00b",
    "99999999999999999999999",
    "-1",
    "1e309",
    "' OR 1=1 --",
    "<script>alert(1)</script>",
    "%",
    "x" * 5000,
]

PAGES = {
    "audit:event_list": ["since", "until", "env", "app", "actor", "action", "text", "before"],
    "audit:change_list": ["since", "until", "env", "app", "actor", "action", "text", "cursor"],
    "promotions:list": ["state", "to", "app", "page", "override", "mine"],
    "rollbacks:list": ["state", "app", "env", "emergency"],
    "inventory:matrix": ["project", "environment", "label", "q", "differing", "page", "at"],
    "insight:dora": ["period", "count", "project", "app", "environment"],
}


@pytest.mark.parametrize("url_name", sorted(PAGES))
def test_hostile_filter_values_answer_a_page_not_a_server_error(client, url_name):
    client.force_login(user_with_role(Role.ADMIN, "admin"))
    client.raise_request_exception = False
    failures = []
    for param in PAGES[url_name]:
        for value in HOSTILE:
            response = client.get(reverse(url_name), {param: value})
            if response.status_code >= 500:
                failures.append((param, value[:20], response.status_code))
    assert failures == []


@pytest.mark.parametrize("value", ["2026-13-45T99:00", "2026-02-30", "a\x00b"])
def test_a_malformed_audit_date_is_a_field_error(client, value):
    client.force_login(user_with_role(Role.AUDITOR, "auditor"))

    response = client.get(reverse("audit:event_list"), {"since": value})

    assert response.status_code == 400
    assert "not a date or date-time" in response.content.decode()


def test_a_malformed_matrix_time_is_a_field_error(client):
    client.force_login(user_with_role(Role.VIEWER, "viewer"))

    response = client.get(reverse("inventory:matrix"), {"at": "2026-13-45T99:00"})

    assert response.status_code == 400
    assert "point in time: use YYYY-MM-DDTHH:MM" in response.content.decode()
