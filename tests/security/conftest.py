"""Subjects for security tests: one user per global role, plus project- and environment-scoped users.

The scoped subjects hold one role on projects ``payments-*`` (so the matrix's checkout objects are
out of their scope), and one approver holds the checkout projects in environment ``stage`` only (so
it may see checkout objects but not approve what targets prod).
"""

from __future__ import annotations

import pytest

from accounts.roles import ALL_ROLES
from accounts.services import role_grant_add
from tests.factories import UserFactory, user_with_role

SCOPED_RELEASE_MANAGER = "rm_payments"
# subject -> (role, project glob, environment) of its one scoped grant
SCOPED_GRANTS: dict[str, tuple[str, str, str]] = {
    SCOPED_RELEASE_MANAGER: ("release_manager", "payments-*", "*"),
    "approver_payments": ("approver", "payments-*", "*"),
    "oncall_payments": ("oncall", "payments-*", "*"),
    "auditor_payments": ("auditor", "payments-*", "*"),
    "approver_checkout_stage": ("approver", "checkout*", "stage"),
}
PAYMENTS_SCOPED = frozenset(s for s, (_, project, _) in SCOPED_GRANTS.items() if project == "payments-*")
SUBJECTS = ("anonymous", *ALL_ROLES, *SCOPED_GRANTS)


def make_subjects() -> dict[str, object]:
    """Create the users of every subject (None for anonymous)."""
    users: dict[str, object] = {"anonymous": None}
    for role in ALL_ROLES:
        users[role] = user_with_role(role, username=f"sec-{role}")
    for subject, (role, project, environment) in SCOPED_GRANTS.items():
        scoped = UserFactory(username=f"sec-{subject.replace('_', '-')}")
        role_grant_add(user=scoped, role=role, project=project, environment=environment)
        users[subject] = scoped
    return users


@pytest.fixture
def subjects(db) -> dict[str, object]:
    return make_subjects()
