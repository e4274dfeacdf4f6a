"""Users, role grants and API tokens: each change writes its audit event in the same transaction."""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group, User
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from audit.services import audit_event_record

from .models import ApiToken, OIDCIdentity, RoleGrant, hash_token
from .permissions import forget_cached_roles
from .recording import recorded_by_service
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
    actor: User | None = None,
) -> User:
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
    user: User,
    role: str,
    project: str = "*",
    environment: str = "*",
    actor: User | None = None,
    source: str = "local",
) -> None:
    """Grant a role: a group when unscoped, a RoleGrant row when scoped to a project or environment."""
    _check_role(role)
    with recorded_by_service():
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
    *, user: User, name: str = "cli", expires_in_days: int | None = None, actor: User | None = None
) -> tuple[ApiToken, str]:
    """Create an API token; return the row and the raw token, which is never stored or shown again.

    Every token expires: ``expires_in_days`` defaults to, and may not exceed, API_TOKEN_MAX_AGE_DAYS.
    """
    max_days = settings.API_TOKEN_MAX_AGE_DAYS
    expires_in_days = max_days if expires_in_days is None else expires_in_days
    if not 1 <= expires_in_days <= max_days:
        raise ValidationError(f"a token lives 1 to {max_days} days (API_TOKEN_MAX_AGE_DAYS)")
    raw = ApiToken.generate()
    token = ApiToken.objects.create(
        user=user,
        name=name,
        token_hash=hash_token(raw),
        last_four=raw[-4:],
        expires_at=timezone.now() + timedelta(days=expires_in_days),
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
def api_token_revoke(*, token: ApiToken, actor: User) -> None:
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
def api_tokens_revoke_all(*, user: User, reason: str, actor: User | None = None) -> int:
    """Revoke every live token of ``user`` (deactivation, offboarding); return how many."""
    revoked = 0
    for token in ApiToken.objects.select_for_update().filter(user=user, revoked_at__isnull=True):
        ApiToken.objects.filter(pk=token.pk).update(revoked_at=timezone.now())
        audit_event_record(
            action="token.revoked",
            actor=actor,
            system_name=None if actor else "accounts",
            target_type="api_token",
            target_id=token.pk,
            target_label=f"{user.get_username()}/{token.name} (…{token.last_four})",
            message=reason,
        )
        revoked += 1
    return revoked


@transaction.atomic
def oidc_roles_sync(
    *, user: User, grants: set[tuple[str, str, str]], reason: str = "identity provider groups"
) -> bool:
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
    with recorded_by_service():
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
        message=f"{reason}: {len(added)} grant(s) added, {len(removed)} removed",
    )
    return True


@transaction.atomic
def oidc_identity_link(*, user: User, issuer: str, subject: str) -> OIDCIdentity:
    """Bind ``user`` to the provider's issuer + subject (their first SSO sign-in since identities exist)."""
    identity = OIDCIdentity.objects.create(user=user, issuer=issuer, subject=subject)
    audit_event_record(
        action="auth.identity_linked",
        actor=None,
        system_name="oidc",
        target_type="user",
        target_id=user.pk,
        target_label=user.get_username(),
        after={"issuer": issuer, "subject": subject},
        message="account bound to the identity provider's issuer and subject",
    )
    return identity


def oidc_identity_confirmed(*, identity: OIDCIdentity, refresh_token: str | None) -> None:
    """Note that the provider just vouched for this identity (and keep its newest refresh token)."""
    identity.roles_synced_at = timezone.now()
    fields = ["roles_synced_at"]
    if refresh_token is not None:
        identity.refresh_token = refresh_token
        fields.append("refresh_token")
    identity.save(update_fields=fields)
