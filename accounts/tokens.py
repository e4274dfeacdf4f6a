"""Authenticate a request by its `Authorization: Bearer` API token."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest
from django.utils import timezone

from .models import ApiToken, hash_token

# Recording every use would write a row per API call; a minute is precise enough for "last used".
LAST_USED_PRECISION_SECONDS = 60


class InvalidApiToken(Exception):
    """A bearer token was sent but is unknown, expired, revoked or belongs to an inactive user."""


def bearer_token_user(request: HttpRequest) -> Any | None:
    """Return the user of the request's bearer API token (None without one), recording its use.

    Raises InvalidApiToken when a token is sent that does not authenticate anybody.
    """
    header = request.headers.get("Authorization", "")
    if not header.lower().startswith("bearer "):
        return None
    raw = header[7:].strip()
    token = ApiToken.objects.active().select_related("user").filter(token_hash=hash_token(raw)).first()
    if token is None or not token.user.is_active:
        raise InvalidApiToken("invalid or expired API token")
    now = timezone.now()
    if token.last_used_at is None or (now - token.last_used_at).total_seconds() > LAST_USED_PRECISION_SECONDS:
        ApiToken.objects.filter(pk=token.pk).update(last_used_at=now)
    return token.user
