"""Silent SSO session refresh that also works for htmx requests."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from mozilla_django_oidc.middleware import SessionRefresh


class PortalSessionRefresh(SessionRefresh):
    """Re-check the user with the identity provider once the ID token's lifetime in the portal ends.

    A plain page view is redirected to the provider (``prompt=none``) and comes back with fresh
    claims, which re-derive the user's roles. An htmx request cannot follow a cross-origin redirect,
    so it gets ``HX-Redirect``: htmx then navigates the whole page to the provider instead.
    """

    def process_request(self, request: HttpRequest) -> HttpResponse | None:
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
