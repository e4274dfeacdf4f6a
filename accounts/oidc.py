"""OpenID Connect sign-in: map the identity provider's groups claim to portal roles at every login.

mozilla-django-oidc does the code flow (state, nonce, PKCE, RS256 signature against the JWKS). This
backend adds what the portal needs on top:

- the ID token's audience and issuer are checked (the library skips the audience check);
- the ID token's claims and the userinfo claims are merged (Entra ID puts ``groups`` only in the ID
  token, Keycloak and Okta usually in both), after checking both describe the same ``sub``;
- users are matched on the ID token's issuer + subject (an OIDCIdentity row), never on a name or an
  e-mail the provider may hand to someone else; the username claim only names a new account. An
  account from before identities were stored (SSO-created, no password, no identity yet) is bound
  at its first sign-in; a username already held by another account refuses the sign-in;
- on every sign-in and every silent refresh the grants with source="oidc" are replaced by the ones
  the current groups confer, so a user removed from a group loses the role at the next refresh;
- API tokens refresh too: ``oidc_roles_ensure_fresh`` re-asks the provider with the stored refresh
  token once the roles are older than OIDC_RENEW_ID_TOKEN_EXPIRY_SECONDS; a provider that no longer
  knows the user (``invalid_grant``) or no refresh token to ask with takes the SSO roles away.
"""

from __future__ import annotations

import logging
import re
from typing import Any

import jwt
import requests
from django.conf import settings
from django.core.exceptions import SuspiciousOperation
from django.db import transaction
from django.utils import timezone
from mozilla_django_oidc.auth import OIDCAuthenticationBackend

from .models import OIDCIdentity, RoleGrant
from .rolemap import grants_for_groups
from .services import oidc_identity_confirmed, oidc_identity_link, oidc_roles_sync

logger = logging.getLogger(__name__)

_USERNAME_OK = re.compile(r"^[\w.@+-]{1,150}$")


def _audiences(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [v for v in value if isinstance(v, str)]
    return []


class IdentityProviderUnavailable(Exception):
    """The provider could not be asked about a user (network error or a server error)."""


def _identity_key(claims: dict[str, Any]) -> tuple[str, str]:
    issuer, subject = claims.get("iss"), claims.get("sub")
    if not (isinstance(issuer, str) and issuer and isinstance(subject, str) and subject):
        raise SuspiciousOperation("ID token without issuer and subject")
    if len(issuer) > 255 or len(subject) > 255:
        raise SuspiciousOperation("ID token issuer or subject too long")
    return issuer, subject


class PortalOIDCBackend(OIDCAuthenticationBackend):
    """Sign users in through the identity provider and keep their roles in step with its groups."""

    def authenticate(self, request, **kwargs: Any):
        """Run the code flow; a token or provider failure is a failed sign-in, not a server error."""
        try:
            return super().authenticate(request, **kwargs)
        except (SuspiciousOperation, jwt.InvalidTokenError) as exc:
            # Messages here are ours or PyJWT's; they never contain a token.
            logger.warning("single sign-on refused: %s: %s", type(exc).__name__, exc)
        except requests.RequestException as exc:
            # The library's HTTPError text carries the provider's response body: log the status only.
            status = getattr(getattr(exc, "response", None), "status_code", None)
            logger.warning(
                "single sign-on failed: identity provider unreachable or refused (%s, status %s)",
                type(exc).__name__,
                status,
            )
        return None

    def verify_token(self, token: str, **kwargs: Any) -> dict[str, Any]:
        """Check signature and nonce (library), then audience, authorized party and issuer."""
        payload = super().verify_token(token, **kwargs)
        client_id = settings.OIDC_RP_CLIENT_ID
        audiences = _audiences(payload.get("aud"))
        if client_id not in audiences:
            raise SuspiciousOperation("ID token audience does not name this client")
        if len(audiences) > 1 and payload.get("azp") not in (None, client_id):
            raise SuspiciousOperation("ID token authorized party is another client")
        issuer = settings.OIDC_OP_ISSUER
        if issuer and payload.get("iss") != issuer:
            raise SuspiciousOperation("ID token issuer does not match OIDC_OP_ISSUER")
        return payload

    def get_userinfo(self, access_token: str, id_token: str, payload: dict[str, Any]) -> dict[str, Any]:
        """Merge ID token claims with the userinfo response (userinfo wins), same subject only."""
        userinfo = super().get_userinfo(access_token, id_token, payload) or {}
        if not isinstance(userinfo, dict):
            raise SuspiciousOperation("userinfo response is not a JSON object")
        if "sub" in userinfo and userinfo["sub"] != payload.get("sub"):
            raise SuspiciousOperation("userinfo subject differs from the ID token subject")
        return {**payload, **userinfo}

    def _username(self, claims: dict[str, Any]) -> str:
        value = claims.get(settings.OIDC_USERNAME_CLAIM)
        if not isinstance(value, str) or not _USERNAME_OK.match(value):
            raise SuspiciousOperation(
                f"claim {settings.OIDC_USERNAME_CLAIM!r} is missing or not a valid username"
            )
        return value

    def get_token(self, payload: dict[str, Any]) -> dict[str, Any]:
        """Exchange the code; keep the refresh token (if any) for re-checking API-token users later."""
        token_info = super().get_token(payload)
        refresh = token_info.get("refresh_token") if isinstance(token_info, dict) else None
        self._refresh_token = refresh if isinstance(refresh, str) else ""
        return token_info

    def verify_claims(self, claims: dict[str, Any]) -> bool:
        try:
            self._username(claims)
            _identity_key(claims)
        except SuspiciousOperation:
            return False
        return True

    def filter_users_by_claims(self, claims: dict[str, Any]):
        """Find the account bound to this issuer + subject, else a pre-identity SSO account to bind."""
        issuer, subject = _identity_key(claims)
        bound = self.UserModel.objects.filter(
            oidc_identities__issuer=issuer, oidc_identities__subject=subject
        )
        if bound.exists():
            return bound
        # Accounts created by SSO before identities were stored: same username, no password (a local
        # account with a password is never taken over by a matching name), not bound to anyone yet.
        return self.UserModel.objects.filter(
            username=self._username(claims), password__startswith="!", oidc_identities__isnull=True
        )

    def get_user(self, user_id: Any):
        user = super().get_user(user_id)
        return user if user is not None and self.user_can_authenticate(user) else None

    def describe_user_by_claims(self, claims: dict[str, Any]) -> str:
        return f"subject {claims.get('sub')!r} of {claims.get('iss')!r}"

    @transaction.atomic
    def create_user(self, claims: dict[str, Any]):
        """Create the account of a new subject; refuse a username another account already holds."""
        username = self._username(claims)
        if self.UserModel.objects.filter(username=username).exists():
            raise SuspiciousOperation(f"username {username!r} belongs to another account")
        user = self.UserModel.objects.create_user(username, email=_email(claims))
        user.set_unusable_password()
        user.save(update_fields=["password"])
        return self.update_user(user, claims)

    @transaction.atomic
    def update_user(self, user, claims: dict[str, Any]):
        """Refresh profile fields and re-derive the user's identity-provider roles."""
        issuer, subject = _identity_key(claims)
        identity = OIDCIdentity.objects.filter(user=user, issuer=issuer, subject=subject).first()
        if identity is None:
            identity = oidc_identity_link(user=user, issuer=issuer, subject=subject)
        changed = []
        for field, value in (
            ("email", _email(claims)),
            ("first_name", str(claims.get("given_name") or "")[:150]),
            ("last_name", str(claims.get("family_name") or "")[:150]),
        ):
            if value and getattr(user, field) != value:
                setattr(user, field, value)
                changed.append(field)
        if changed:
            user.save(update_fields=changed)
        sync_roles_from_claims(user=user, claims=claims)
        # An empty refresh token from this sign-in is not news: keep the one stored before.
        oidc_identity_confirmed(identity=identity, refresh_token=getattr(self, "_refresh_token", "") or None)
        return user


def sync_roles_from_claims(
    *, user: Any, claims: dict[str, Any], reason: str = "identity provider groups"
) -> bool:
    """Apply OIDC_ROLE_MAP to the groups claim of ``claims``; return whether the grants changed."""
    groups = claims.get(settings.OIDC_GROUPS_CLAIM, [])
    grants = grants_for_groups(groups, settings.OIDC_ROLE_MAPPINGS)
    changed = oidc_roles_sync(user=user, grants=grants, reason=reason)
    if changed:
        logger.info("roles of %s re-derived from identity provider groups", user.get_username())
    return changed


def oidc_roles_ensure_fresh(*, user: Any) -> None:
    """Re-ask the provider about an SSO user whose roles are older than the refresh interval.

    For requests that never see the provider (API tokens). With a refresh token the provider answers
    with the user's current claims (roles re-derived) or ``invalid_grant`` when it no longer knows the
    user or the grant; that, or no refresh token to ask with, leaves the user no SSO role. Raise
    IdentityProviderUnavailable when the provider cannot be reached: the caller refuses the request
    rather than trusting roles it cannot confirm.
    """
    identity = OIDCIdentity.objects.filter(user=user).order_by("-roles_synced_at").first()
    if identity is None and not RoleGrant.objects.filter(user=user, source="oidc").exists():
        return  # a local account: its roles are the administrators' to keep
    max_age = settings.OIDC_RENEW_ID_TOKEN_EXPIRY_SECONDS
    synced_at = identity.roles_synced_at if identity else None
    if synced_at and (timezone.now() - synced_at).total_seconds() < max_age:
        return
    refresh_token = str(identity.refresh_token or "") if identity else ""
    if identity is None or not settings.OIDC_ENABLED or not refresh_token:
        oidc_roles_sync(
            user=user, grants=set(), reason="roles past their refresh time and no way to re-check"
        )
        return
    backend = PortalOIDCBackend()
    # Reference: https://openid.net/specs/openid-connect-core-1_0.html#RefreshTokens
    try:
        response = requests.post(
            settings.OIDC_OP_TOKEN_ENDPOINT,
            data={
                "grant_type": "refresh_token",
                "refresh_token": refresh_token,
                "client_id": settings.OIDC_RP_CLIENT_ID,
                "client_secret": settings.OIDC_RP_CLIENT_SECRET,
            },
            timeout=settings.OIDC_TIMEOUT,
            verify=settings.OIDC_VERIFY_SSL,
        )
    except requests.RequestException as exc:
        raise IdentityProviderUnavailable(type(exc).__name__) from None
    if response.status_code in (400, 401) and _oauth_error(response) == "invalid_grant":
        with transaction.atomic():
            oidc_roles_sync(
                user=user, grants=set(), reason="identity provider no longer vouches for the user"
            )
            oidc_identity_confirmed(identity=identity, refresh_token="")
        return
    if response.status_code != 200:
        raise IdentityProviderUnavailable(f"token endpoint answered {response.status_code}")
    try:
        tokens = response.json()
        access_token, id_token = tokens["access_token"], tokens.get("id_token") or ""
        # A refreshed ID token answers no authorization request of ours: its nonce (if any) is the
        # original one, so it is checked against itself; signature, audience and issuer still are.
        nonce = jwt.decode(id_token, options={"verify_signature": False}).get("nonce") if id_token else None
        payload = backend.verify_token(id_token, nonce=nonce) if id_token else {"sub": identity.subject}
        claims = backend.get_userinfo(access_token, id_token, payload)
    except (KeyError, TypeError, ValueError, jwt.InvalidTokenError, SuspiciousOperation) as exc:
        raise IdentityProviderUnavailable(f"unusable refresh response ({type(exc).__name__})") from None
    except requests.RequestException as exc:
        raise IdentityProviderUnavailable(type(exc).__name__) from None
    if claims.get("sub") != identity.subject:
        raise IdentityProviderUnavailable("refresh answered for another subject")
    with transaction.atomic():
        sync_roles_from_claims(user=user, claims=claims, reason="identity provider groups (token refresh)")
        rotated = tokens.get("refresh_token")
        oidc_identity_confirmed(
            identity=identity, refresh_token=rotated if isinstance(rotated, str) else None
        )


def _oauth_error(response: requests.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return ""
    return str(body.get("error", "")) if isinstance(body, dict) else ""


def _email(claims: dict[str, Any]) -> str:
    email = claims.get("email")
    return email[:254] if isinstance(email, str) else ""
