"""Read API: what runs where, and an app's deployment history."""

from __future__ import annotations

from typing import Any

from accounts.permissions import project_visible
from accounts.roles import Role
from api.http import ApiError, api_view
from core.http import AuthenticatedHttpRequest

from . import selectors
from .models import Application

MAX_HISTORY = 1000


@api_view(("GET",), role=Role.VIEWER)
def deployments(request: AuthenticatedHttpRequest) -> dict[str, Any]:
    """GET /api/v1/deployments: the current state per app, environment and cluster."""
    params = request.GET
    rows = selectors.deployment_rows(
        user=request.user,
        app=params.get("app", ""),
        environment=params.get("environment", ""),
        cluster=params.get("cluster", ""),
        project=params.get("project", ""),
    )
    return {"deployments": rows, "count": len(rows)}


@api_view(("GET",), role=Role.VIEWER)
def application_history(request: AuthenticatedHttpRequest, name: str) -> dict[str, Any]:
    """GET /api/v1/applications/{name}/history: deployments of an app, newest first."""
    app = Application.objects.filter(name=name).first()
    # Apps of other projects are reported as missing, not forbidden: existence is not leaked.
    if app is None or not project_visible(request.user, app.project):
        raise ApiError(404, f"application {name!r} not found")
    try:
        limit = int(request.GET.get("limit") or 100)
    except ValueError:
        raise ApiError(400, "limit: expected an integer") from None
    if not 1 <= limit <= MAX_HISTORY:
        raise ApiError(400, f"limit: between 1 and {MAX_HISTORY}")
    history = selectors.application_history(
        application=app, environment=request.GET.get("environment", ""), limit=limit
    )
    return {"application": app.name, "project": app.project, "history": history}
