"""Silent SSO session refresh (pages, htmx and session API calls) and the actor of direct role changes."""

from __future__ import annotations

import time
from collections.abc import Callable

from django.contrib.auth import BACKEND_SESSION_KEY
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.utils.module_loading import import_string
from mozilla_django_oidc.auth import OIDCAuthenticationBackend
from mozilla_django_oidc.middleware import SessionRefresh

from .recording import acting_user


class ActingUserMiddleware:
    """Name the signed-in user as the actor of role changes the ledger receivers see (Django admin)."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        with acting_user(request.user):
            return self.get_response(request)


class PortalSessionRefresh(SessionRefresh):
    """Re-check the user with the identity provider once the ID token's lifetime in the portal ends.

    A plain page view is redirected to the provider (``prompt=none``) and comes back with fresh
    claims, which re-derive the user's roles. An htmx request cannot follow a cross-origin redirect,
    so it gets ``HX-Redirect``: htmx then navigates the whole page to the provider instead. A
    session-authenticated API call (any method) cannot follow the provider either: past the ID
    token's lifetime it gets a JSON 401 asking for a page reload, instead of acting on roles the
    provider may have withdrawn. Bearer-token calls are re-checked in ``authenticate_bearer``.
    """

    def process_request(self, request: HttpRequest) -> HttpResponse | None:
        if request.path.startswith("/api/"):
            return self._api_request(request)
        response = super().process_request(request)
        if (
            response is not None
            and response.status_code == 302
            and request.headers.get("HX-Request") == "true"
        ):
            htmx_response = HttpResponse(status=200)
            htmx_response["HX-Redirect"] = response["Location"]
            return htmx_response
        return response

    def _api_request(self, request: HttpRequest) -> HttpResponse | None:
        if request.headers.get("Authorization", "").lower().startswith("bearer "):
            return None
        backend: str = request.session.get(BACKEND_SESSION_KEY) or ""
        signed_in_by_sso = bool(backend) and issubclass(import_string(backend), OIDCAuthenticationBackend)
        if not (request.user.is_authenticated and signed_in_by_sso):
            return None
        if request.session.get("oidc_id_token_expiration", 0) > time.time():
            return None
        return JsonResponse(
            {"error": "the single sign-on session needs a refresh: reload the portal in the browser"},
            status=401,
        )
