"""Template context for the sign-in page."""

from __future__ import annotations

from django.conf import settings
from django.http import HttpRequest


def sso(request: HttpRequest) -> dict[str, bool]:
    """Tell templates whether to offer single sign-on."""
    return {"oidc_enabled": settings.OIDC_ENABLED}
