"""Role checks used by every view, htmx partial, API endpoint and task-triggering service."""

from __future__ import annotations

import functools
from collections.abc import Callable
from fnmatch import fnmatchcase
from typing import Any

from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest
from django.http.response import HttpResponseBase

from audit.services import audit_event_record

from .roles import ALL_ROLES, Role

_CACHE_ATTR = "_portal_role_cache"


def _grants(user: Any) -> tuple[frozenset[str], list[Any]]:
    """Return the user's global roles (groups) and scoped grants, cached on the user object."""
    cached = getattr(user, _CACHE_ATTR, None)
    if cached is None:
        grants = list(user.role_grants.all())
        # An unscoped grant row (project "*", environment "*", e.g. from the identity provider)
        # counts exactly like the group of the same name.
        global_roles = frozenset(
            {name for name in user.groups.values_list("name", flat=True) if name in ALL_ROLES}
            | {g.role for g in grants if g.project == "*" and g.environment == "*"}
        )
        scoped = [g for g in grants if not (g.project == "*" and g.environment == "*")]
        cached = (global_roles, scoped)
        setattr(user, _CACHE_ATTR, cached)
    return cached


def forget_cached_roles(user: Any) -> None:
    if hasattr(user, _CACHE_ATTR):
        delattr(user, _CACHE_ATTR)


def is_admin(user: Any) -> bool:
    if not getattr(user, "is_authenticated", False) or not user.is_active:
        return False
    return bool(user.is_superuser) or Role.ADMIN in _grants(user)[0]


def has_role(user: Any, role: str, *, project: str | None = None, environment: str | None = None) -> bool:
    """Tell whether the user holds ``role`` for an object in ``project`` / ``environment``.

    With no project (a page-level check), any grant of the role counts; the page then filters its
    rows with :func:`project_filter`. Every role includes viewing within its scope.
    """
    if not getattr(user, "is_authenticated", False) or not user.is_active:
        return False
    if is_admin(user):
        return True
    global_roles, scoped = _grants(user)
    if role in global_roles or (role == Role.VIEWER and global_roles):
        return True
    for grant in scoped:
        if grant.role != role and role != Role.VIEWER:
            continue
        if project is None and environment is None:
            return True
        if grant.covers(project=project, environment=environment) or (
            project is None and grant.environment in ("*", environment)
        ):
            return True
    return False


def roles_of(user: Any) -> list[str]:
    """Return the role names a user holds anywhere (for display)."""
    if not getattr(user, "is_authenticated", False):
        return []
    if user.is_superuser:
        return [Role.ADMIN.value]
    global_roles, scoped = _grants(user)
    names = set(global_roles) | {grant.role for grant in scoped}
    return [role for role in ALL_ROLES if role in names]


def project_filter(user: Any, role: str = Role.VIEWER) -> list[str] | None:
    """Return the project globs the user may see for ``role``, or None for all projects."""
    if is_admin(user):
        return None
    global_roles, scoped = _grants(user)
    if role in global_roles or (role == Role.VIEWER and global_roles):
        return None
    patterns = [g.project for g in scoped if g.role == role or role == Role.VIEWER]
    if "*" in patterns:
        return None
    return patterns


def project_visible(user: Any, project: str, role: str = Role.VIEWER) -> bool:
    patterns = project_filter(user, role)
    return patterns is None or any(fnmatchcase(project, p) for p in patterns)


def ensure_role(
    user: Any,
    role: str,
    *,
    project: str | None = None,
    environment: str | None = None,
    request: HttpRequest | None = None,
) -> None:
    """Raise PermissionDenied (and record the denial) unless the user holds the role there."""
    if has_role(user, role, project=project, environment=environment):
        return
    _record_denial(user, role, project=project, environment=environment, request=request)
    raise PermissionDenied(f"requires the {role.replace('_', ' ')} role")


def _record_denial(
    user: Any, role: str, *, project: str | None, environment: str | None, request: HttpRequest | None
) -> None:
    audit_event_record(
        action="auth.denied",
        actor=user if getattr(user, "is_authenticated", False) else None,
        target_type="url" if request is not None else "permission",
        target_id=request.path if request is not None else role,
        target_label=f"{request.method} {request.path}" if request is not None else role,
        environment=environment or "",
        message=f"denied: needs role {role}" + (f" on project {project}" if project else ""),
    )


def require_role(role: str) -> Callable[[Callable[..., HttpResponseBase]], Callable[..., HttpResponseBase]]:
    """Decorate a view: anonymous users go to the login page, users without the role get 403."""

    def decorator(view: Callable[..., HttpResponseBase]) -> Callable[..., HttpResponseBase]:
        @functools.wraps(view)
        def wrapped(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
            if not request.user.is_authenticated:
                return redirect_to_login(request.get_full_path())
            ensure_role(request.user, role, request=request)
            return view(request, *args, **kwargs)

        wrapped.required_role = role  # type: ignore[attr-defined]
        return wrapped

    return decorator


def role_scopes(user: Any, role: str) -> list[tuple[str, str]] | None:
    """Return the ``(project glob, environment)`` pairs where the user holds ``role``; None: everywhere.

    The row-level counterpart of :func:`project_filter` that keeps each grant's environment, for
    pages that filter by both (the audit trail).
    """
    if is_admin(user):
        return None
    global_roles, scoped = _grants(user)
    if role in global_roles or (role == Role.VIEWER and global_roles):
        return None
    pairs = [(g.project, g.environment) for g in scoped if g.role == role or role == Role.VIEWER]
    if ("*", "*") in pairs:
        return None
    return pairs
