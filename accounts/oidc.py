"""OpenID Connect sign-in: map the identity provider's groups claim to portal roles at every login.

mozilla-django-oidc does the code flow (state, nonce, PKCE, RS256 signature against the JWKS). This
backend adds what the portal needs on top:

- the ID token's audience and issuer are checked (the library skips the audience check);
- the ID token's claims and the userinfo claims are merged (Entra ID puts ``groups`` only in the ID
  token, Keycloak and Okta usually in both), after checking both describe the same ``sub``;
- users are matched by a stable username claim (``preferred_username`` by default), not by e-mail;
- on every sign-in and every silent refresh the grants with source="oidc" are replaced by the ones
  the current groups confer, so a user removed from a group loses the role at the next refresh.
"""

from __future__ import annotations

import logging
import re
from typing import Any

import jwt
import requests
from django.conf import settings
from django.core.exceptions import SuspiciousOperation
from mozilla_django_oidc.auth import OIDCAuthenticationBackend

from .rolemap import grants_for_groups
from .services import oidc_roles_sync

logger = logging.getLogger(__name__)

_USERNAME_OK = re.compile(r"^[\w.@+-]{1,150}$")


def _audiences(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [v for v in value if isinstance(v, str)]
    return []


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

    def verify_claims(self, claims: dict[str, Any]) -> bool:
        try:
            self._username(claims)
        except SuspiciousOperation:
            return False
        return True

    def filter_users_by_claims(self, claims: dict[str, Any]):
        return self.UserModel.objects.filter(username=self._username(claims))

    def get_user(self, user_id: Any):
        user = super().get_user(user_id)
        return user if user is not None and self.user_can_authenticate(user) else None

    def describe_user_by_claims(self, claims: dict[str, Any]) -> str:
        return f"username {claims.get(settings.OIDC_USERNAME_CLAIM)!r}"

    def create_user(self, claims: dict[str, Any]):
        user = self.UserModel.objects.create_user(self._username(claims), email=_email(claims))
        user.set_unusable_password()
        user.save(update_fields=["password"])
        return self.update_user(user, claims)

    def update_user(self, user, claims: dict[str, Any]):
        """Refresh profile fields and re-derive the user's identity-provider roles."""
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
        return user


def sync_roles_from_claims(*, user: Any, claims: dict[str, Any]) -> bool:
    """Apply OIDC_ROLE_MAP to the groups claim of ``claims``; return whether the grants changed."""
    groups = claims.get(settings.OIDC_GROUPS_CLAIM, [])
    grants = grants_for_groups(groups, settings.OIDC_ROLE_MAPPINGS)
    changed = oidc_roles_sync(user=user, grants=grants)
    if changed:
        logger.info("roles of %s re-derived from identity provider groups", user.get_username())
    return changed


def _email(claims: dict[str, Any]) -> str:
    email = claims.get("email")
    return email[:254] if isinstance(email, str) else ""
