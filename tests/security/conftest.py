"""Subjects for security tests: one user per role, plus a release manager scoped to payments-*."""

from __future__ import annotations

import pytest

from accounts.roles import ALL_ROLES
from accounts.services import role_grant_add
from tests.factories import UserFactory, user_with_role

SCOPED_RELEASE_MANAGER = "rm_payments"
SUBJECTS = ("anonymous", *ALL_ROLES, SCOPED_RELEASE_MANAGER)


def make_subjects() -> dict[str, object]:
    """Create the users of every subject (None for anonymous)."""
    users: dict[str, object] = {"anonymous": None}
    for role in ALL_ROLES:
        users[role] = user_with_role(role, username=f"sec-{role}")
    scoped = UserFactory(username="sec-rm-payments")
    role_grant_add(user=scoped, role="release_manager", project="payments-*")
    users[SCOPED_RELEASE_MANAGER] = scoped
    return users


@pytest.fixture
def subjects(db) -> dict[str, object]:
    return make_subjects()
