"""Users, role grants and API tokens: each change writes its audit event in the same transaction."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from audit.services import audit_event_record

from .models import ApiToken, RoleGrant, hash_token
from .permissions import forget_cached_roles
from .roles import ALL_ROLES


def _check_role(role: str) -> None:
    if role not in ALL_ROLES:
        raise ValidationError(f"unknown role {role!r}; roles: {', '.join(ALL_ROLES)}")


@transaction.atomic
def user_create(
    *,
    username: str,
    roles: list[str],
    password: str | None = None,
    email: str = "",
    project: str = "*",
    environment: str = "*",
    actor: Any = None,
) -> Any:
    """Create (or update) a local user with roles: global when project and environment are '*'."""
    for role in roles:
        _check_role(role)
    user_model = get_user_model()
    user, created = user_model.objects.get_or_create(username=username, defaults={"email": email})
    if password:
        user.set_password(password)
    elif created:
        user.set_unusable_password()
    user.save()
    for role in roles:
        role_grant_add(user=user, role=role, project=project, environment=environment, actor=actor)
    audit_event_record(
        action="user.created" if created else "user.updated",
        actor=actor,
        system_name=None if actor else "manage.py",
        target_type="user",
        target_id=user.pk,
        target_label=username,
        after={"roles": roles, "project": project, "environment": environment},
    )
    return user


@transaction.atomic
def role_grant_add(
    *,
    user: Any,
    role: str,
    project: str = "*",
    environment: str = "*",
    actor: Any = None,
    source: str = "local",
) -> None:
    """Grant a role: a group when unscoped, a RoleGrant row when scoped to a project or environment."""
    _check_role(role)
    if project == "*" and environment == "*":
        user.groups.add(Group.objects.get(name=role))
    else:
        RoleGrant.objects.get_or_create(
            user=user, role=role, project=project, environment=environment, defaults={"source": source}
        )
    forget_cached_roles(user)
    audit_event_record(
        action="role.granted",
        actor=actor,
        system_name=None if actor else "manage.py",
        target_type="user",
        target_id=user.pk,
        target_label=user.get_username(),
        environment="" if environment == "*" else environment,
        after={"role": role, "project": project, "environment": environment, "source": source},
    )


@transaction.atomic
def api_token_create(
    *, user: Any, name: str = "cli", expires_in_days: int | None = 90, actor: Any = None
) -> tuple[ApiToken, str]:
    """Create an API token; return the row and the raw token, which is never stored or shown again."""
    raw = ApiToken.generate()
    token = ApiToken.objects.create(
        user=user,
        name=name,
        token_hash=hash_token(raw),
        last_four=raw[-4:],
        expires_at=timezone.now() + timedelta(days=expires_in_days) if expires_in_days else None,
    )
    audit_event_record(
        action="token.created",
        actor=actor or user,
        target_type="api_token",
        target_id=token.pk,
        target_label=f"{user.get_username()}/{name} (…{token.last_four})",
        after={"expires_at": token.expires_at.isoformat() if token.expires_at else None},
    )
    return token, raw


@transaction.atomic
def api_token_revoke(*, token: ApiToken, actor: Any) -> None:
    """Revoke a token (kept for the record)."""
    if token.revoked_at is None:
        ApiToken.objects.filter(pk=token.pk).update(revoked_at=timezone.now())
        audit_event_record(
            action="token.revoked",
            actor=actor,
            target_type="api_token",
            target_id=token.pk,
            target_label=f"{token.user.get_username()}/{token.name} (…{token.last_four})",
        )


@transaction.atomic
def oidc_roles_sync(*, user: Any, grants: set[tuple[str, str, str]]) -> bool:
    """Make the user's identity-provider grants exactly ``grants``; return whether anything changed.

    Runs at every OIDC sign-in and silent session refresh. Only rows with source="oidc" are
    touched: local grants (groups and local RoleGrant rows) stay as an administrator set them. A
    grant the user already holds locally is not duplicated.
    """
    for role, _, _ in grants:
        _check_role(role)
    current = {
        (g.role, g.project, g.environment): g.pk
        for g in RoleGrant.objects.select_for_update().filter(user=user)
    }
    oidc_current = set(
        RoleGrant.objects.filter(user=user, source="oidc").values_list("role", "project", "environment")
    )
    removed = oidc_current - grants
    added = {grant for grant in grants if grant not in current}
    if removed:
        RoleGrant.objects.filter(pk__in=[current[grant] for grant in removed]).delete()
    for role, project, environment in sorted(added):
        RoleGrant.objects.create(
            user=user, role=role, project=project, environment=environment, source="oidc"
        )
    forget_cached_roles(user)
    if not removed and not added:
        return False
    audit_event_record(
        action="role.synced",
        actor=None,
        system_name="oidc",
        target_type="user",
        target_id=user.pk,
        target_label=user.get_username(),
        before={"grants": [list(g) for g in sorted(oidc_current)]},
        after={"grants": [list(g) for g in sorted((oidc_current - removed) | added)]},
        message=f"identity provider groups: {len(added)} grant(s) added, {len(removed)} removed",
    )
    return True
