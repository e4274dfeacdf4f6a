"""Personal API tokens: create (shown once), list with expiry and last use, revoke."""

from __future__ import annotations

from django.conf import settings
from django.contrib import messages
from django.http import Http404, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_POST

from core.http import AuthenticatedHttpRequest

from .models import ApiToken
from .permissions import is_admin, require_role
from .roles import Role
from .services import api_token_create, api_token_revoke

EXPIRY_CHOICES = (7, 30, 90, 180, 365)
DEFAULT_EXPIRY_DAYS = 90


def _expiry_choices() -> tuple[int, ...]:
    """Offer the usual periods up to API_TOKEN_MAX_AGE_DAYS (the maximum itself is always offered)."""
    limit = settings.API_TOKEN_MAX_AGE_DAYS
    return tuple(sorted({d for d in EXPIRY_CHOICES if d <= limit} | {limit}))


def _visible_tokens(request: AuthenticatedHttpRequest):
    """Return the tokens this user may see: their own; an admin sees everyone's."""
    tokens = ApiToken.objects.select_related("user").order_by("-created_at")
    return tokens if is_admin(request.user) else tokens.filter(user=request.user)


def _page(
    request: AuthenticatedHttpRequest,
    *,
    new_token: str | None = None,
    new_row: ApiToken | None = None,
    errors=None,
):
    response = render(
        request,
        "accounts/tokens.html",
        {
            "tokens": _visible_tokens(request),
            "show_owner": is_admin(request.user),
            "expiry_choices": _expiry_choices(),
            "default_expiry": min(DEFAULT_EXPIRY_DAYS, settings.API_TOKEN_MAX_AGE_DAYS),
            "new_token": new_token,
            "new_row": new_row,
            "errors": errors or [],
            "nav": "tokens",
        },
        status=400 if errors else 200,
    )
    return response


@require_GET
@never_cache
@require_role(Role.VIEWER)
def token_list(request: AuthenticatedHttpRequest) -> HttpResponse:
    """List the user's API tokens with their expiry and last use."""
    return _page(request)


@require_POST
@never_cache
@require_role(Role.VIEWER)
def token_create(request: AuthenticatedHttpRequest) -> HttpResponse:
    """Create a token for the signed-in user and show it once (never stored, never redirected)."""
    name = request.POST.get("name", "").strip()
    errors = []
    if not name or len(name) > 100:
        errors.append("Give the token a name of 1 to 100 characters (what uses it, e.g. ci-deploy).")
    try:
        days = int(request.POST.get("expires_in_days", DEFAULT_EXPIRY_DAYS))
    except ValueError:
        days = -1
    if days not in _expiry_choices():
        errors.append("Choose one of the offered expiry periods.")
    if errors:
        return _page(request, errors=errors)
    row, raw = api_token_create(user=request.user, name=name, expires_in_days=days, actor=request.user)
    return _page(request, new_token=raw, new_row=row)


@require_POST
@require_role(Role.VIEWER)
def token_revoke(request: AuthenticatedHttpRequest, pk: int) -> HttpResponse:
    """Revoke one of the user's tokens (an admin may revoke anyone's)."""
    token = _visible_tokens(request).filter(pk=pk).first()
    if token is None:
        raise Http404("no such token")
    api_token_revoke(token=token, actor=request.user)
    messages.success(request, f"Token {token.name} (…{token.last_four}) revoked.")
    return redirect("accounts:tokens")
