from __future__ import annotations

from django.conf import settings
from django.http import HttpRequest

from accounts.permissions import has_role, roles_of
from accounts.roles import Role


def portal(request: HttpRequest) -> dict:
    """Expose the signed-in user's roles and the navigation they may use."""
    user = getattr(request, "user", None)
    roles = roles_of(user) if user is not None else []
    return {
        "portal_roles": roles,
        "portal_can_audit": bool(user is not None and has_role(user, Role.AUDITOR)),
        "portal_sandbox": settings.SANDBOX_ENABLED,
    }
