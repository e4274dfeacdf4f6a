"""Scoped role grants and API tokens."""

from __future__ import annotations

import hashlib
import secrets
from fnmatch import fnmatchcase

from django.conf import settings
from django.db import models
from django.utils import timezone

from core.fields import EncryptedTextField

from .roles import ALL_ROLES

ROLE_CHOICES = [(role, role.replace("_", " ")) for role in ALL_ROLES]


class RoleGrant(models.Model):
    """A role for one user, limited to projects (glob, e.g. ``payments-*``) and optionally an environment."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="role_grants")
    role = models.CharField(max_length=32, choices=ROLE_CHOICES)
    project = models.CharField(max_length=200, default="*", help_text="Argo CD project name or glob; * = all")
    environment = models.CharField(max_length=64, default="*", help_text="Environment name or *; * = all")
    source = models.CharField(max_length=16, default="local", help_text="local or oidc (re-synced at login)")
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["user", "role", "project", "environment"], name="uniq_role_grant")
        ]

    def __str__(self) -> str:
        return f"{self.user} {self.role} project={self.project} env={self.environment}"

    def covers(self, *, project: str | None, environment: str | None) -> bool:
        """Tell whether this grant reaches an object in that project and environment."""
        project_ok = self.project == "*" or (project is not None and fnmatchcase(project, self.project))
        env_ok = self.environment == "*" or (environment is not None and environment == self.environment)
        return project_ok and env_ok


TOKEN_PREFIX = "gpp_"


def hash_token(raw: str) -> str:
    return hashlib.sha256(raw.encode()).hexdigest()


class ApiTokenQuerySet(models.QuerySet):
    def active(self) -> ApiTokenQuerySet:
        now = timezone.now()
        return self.filter(revoked_at__isnull=True).filter(
            models.Q(expires_at__isnull=True) | models.Q(expires_at__gt=now)
        )


class ApiToken(models.Model):
    """A bearer token for scripts and CI; only its SHA-256 is stored, the token is shown once."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens")
    name = models.CharField(max_length=100, default="cli")
    token_hash = models.CharField(max_length=64, unique=True)
    last_four = models.CharField(max_length=4)
    created_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True)

    objects = ApiTokenQuerySet.as_manager()

    def __str__(self) -> str:
        return f"{self.name} (…{self.last_four})"

    @staticmethod
    def generate() -> str:
        return TOKEN_PREFIX + secrets.token_urlsafe(32)

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None and (self.expires_at is None or self.expires_at > timezone.now())


class OIDCIdentity(models.Model):
    """Who a user is at the identity provider: issuer + subject, the only stable pair OIDC promises.

    ``preferred_username`` and ``email`` can be reassigned by the provider (a leaver's name given to a
    newcomer); the subject cannot. The refresh token, when the provider issues one, lets the portal
    re-ask the provider about this user when they are not browsing (API tokens), so offboarding there
    reaches scripts too.
    """

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="oidc_identities"
    )
    issuer = models.CharField(max_length=255)
    subject = models.CharField(max_length=255)
    refresh_token = EncryptedTextField(blank=True, default="")
    roles_synced_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["issuer", "subject"], name="uniq_oidc_identity")]

    def __str__(self) -> str:
        return f"{self.user} = {self.subject} @ {self.issuer}"
