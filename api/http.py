"""JSON API plumbing for every app's api.py: bearer-token or session auth, role checks, JSON errors.

Apps import it; it imports accounts (who may do what, API tokens) and audit's request context.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from typing import Any

from django.core.exceptions import PermissionDenied, ValidationError
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.middleware.csrf import CsrfViewMiddleware
from django.views.decorators.csrf import csrf_exempt
from django.views.defaults import page_not_found

from accounts.oidc import IdentityProviderUnavailable, oidc_roles_ensure_fresh
from accounts.permissions import ensure_role, has_role
from accounts.tokens import InvalidApiToken, bearer_token_user
from audit.context import ActorContext, current_actor_context, set_actor_context


class ApiError(Exception):
    """An error the API reports as JSON with an HTTP status."""

    def __init__(self, status: int, message: str, **details: Any) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.details = details


def json_error(status: int, message: str, **details: Any) -> JsonResponse:
    """Return the API's JSON error body with an HTTP status."""
    return JsonResponse({"error": message, **details}, status=status)


def authenticate_bearer(request: HttpRequest) -> Any | None:
    """Return the user of a valid `Authorization: Bearer` API token; a 401 ApiError for a bad one.

    A token is only as good as its user: an inactive user's token is refused, and an SSO user's roles
    are re-checked with the identity provider once they are older than the session refresh interval
    (a provider that cannot be reached fails the request closed with 503).
    """
    try:
        user = bearer_token_user(request)
    except InvalidApiToken as exc:
        raise ApiError(401, str(exc)) from None
    if user is not None:
        try:
            oidc_roles_ensure_fresh(user=user)
        except IdentityProviderUnavailable:
            raise ApiError(
                503, "the identity provider could not confirm this user's roles; try again"
            ) from None
    return user


def read_json(request: HttpRequest) -> dict[str, Any]:
    """Parse a JSON object body, or raise a 400 ApiError."""
    if not request.body:
        return {}
    if not (request.content_type or "").startswith("application/json"):
        raise ApiError(415, "send Content-Type: application/json")
    try:
        payload = json.loads(request.body)
    except (ValueError, UnicodeDecodeError):
        raise ApiError(400, "the body is not valid JSON") from None
    if not isinstance(payload, dict):
        raise ApiError(400, "the body must be a JSON object")
    return payload


def api_view(
    methods: tuple[str, ...] = ("GET",), role: str | None = None
) -> Callable[[Callable[..., Any]], Callable[..., HttpResponse]]:
    """Wrap an API view: authenticate, check the role, turn errors into JSON.

    Session-authenticated unsafe requests still need a CSRF token; bearer-token requests do not
    (they carry no ambient credentials).
    """

    def decorator(view: Callable[..., Any]) -> Callable[..., HttpResponse]:
        @csrf_exempt
        @functools.wraps(view)
        def wrapped(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
            if request.method not in methods:
                response = json_error(405, f"method {request.method} not allowed")
                response["Allow"] = ", ".join(methods)
                return response
            try:
                _refuse_nul_bytes(request)
                bearer_user = authenticate_bearer(request)
                if bearer_user is not None:
                    request.user = bearer_user
                    _mark_token_auth()
                elif not request.user.is_authenticated:
                    raise ApiError(401, "authentication required (session or Authorization: Bearer token)")
                elif request.method not in ("GET", "HEAD", "OPTIONS"):
                    # The view itself, not `wrapped`: the wrapper is csrf_exempt and would skip the check.
                    check = CsrfViewMiddleware(lambda r: HttpResponse())
                    reason = check.process_view(request, view, (), {})
                    if reason is not None:
                        raise ApiError(403, "CSRF check failed")
                if role is not None and not has_role(request.user, role):
                    ensure_role(request.user, role, request=request)
                result = view(request, *args, **kwargs)
            except ApiError as exc:
                return json_error(exc.status, exc.message, **exc.details)
            except PermissionDenied as exc:
                return json_error(403, str(exc) or "permission denied")
            except Http404 as exc:
                return json_error(404, str(exc) or "not found")
            except ValidationError as exc:
                return json_error(400, "; ".join(exc.messages))
            if isinstance(result, HttpResponse):
                return result
            status = 200
            if isinstance(result, tuple):
                result, status = result
            return JsonResponse(result, status=status, safe=False)

        wrapped.api_role = role  # type: ignore[attr-defined]
        return wrapped

    return decorator


def _refuse_nul_bytes(request: HttpRequest) -> None:
    """Refuse NUL bytes early: PostgreSQL cannot store them and would answer with a 500."""
    if any("\x00" in key or "\x00" in value for key, values in request.GET.lists() for value in values):
        raise ApiError(400, "query parameters must not contain NUL bytes")
    if b"\x00" in request.body or b"\\u0000" in request.body:
        raise ApiError(400, "the body must not contain NUL characters")


def api_not_found(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    """Answer unknown /api/ URLs with JSON, every other URL with the HTML 404 page."""
    if request.path.startswith("/api/"):
        return json_error(404, "not found")
    return page_not_found(request, exception)


def _mark_token_auth() -> None:
    context = current_actor_context()
    set_actor_context(ActorContext(context.ip_address, context.user_agent, "token", context.system_name))


__all__ = ["ApiError", "api_not_found", "api_view", "authenticate_bearer", "json_error", "read_json"]
