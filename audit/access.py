"""The scope of the audit pages' user: the one place the audit pages ask accounts about roles.

The sink (models, services, selectors, exports, chain, bundle, signing, verify) knows only
:data:`audit.scope.AuditScope`; this page-side module turns a user's auditor grants into one.
"""

from __future__ import annotations

from django.contrib.auth.base_user import AbstractBaseUser
from django.contrib.auth.models import AnonymousUser

from accounts.permissions import role_scopes
from accounts.roles import Role

from .scope import AuditScope, ScopeGrant


def audit_scope(user: AbstractBaseUser | AnonymousUser) -> AuditScope | None:
    """Return the auditor grants of a scoped user, or None when they see the whole ledger."""
    pairs = role_scopes(user, Role.AUDITOR)
    if pairs is None:
        return None
    return tuple(ScopeGrant(project=project, environment=environment) for project, environment in pairs)
