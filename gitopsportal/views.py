"""Health endpoints and the landing redirect."""

from __future__ import annotations

import logging

from django.conf import settings
from django.db import connection
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect
from django.views.decorators.http import require_GET

from accounts.permissions import is_admin
from gitopsportal.celery import app

logger = logging.getLogger(__name__)


@require_GET
def healthz(request: HttpRequest) -> HttpResponse:
    """Answer 200 while the process is up (liveness)."""
    return JsonResponse({"status": "ok"})


def _check_database() -> str | None:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    except Exception as exc:  # any driver error means not ready
        return f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:300]
    return None


def _check_broker() -> str | None:
    try:
        with app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=2)
    except Exception as exc:  # any transport error means not ready
        return f"{type(exc).__name__}: {exc}"[:300]
    return None


@require_GET
def readyz(request: HttpRequest) -> HttpResponse:
    """Answer 200 when the database and the broker answer, else 503 naming what failed.

    The error texts (hosts, ports, driver messages) go to the log, and to the body only for an
    administrator: probes and anonymous callers learn which check failed, not how.
    """
    checks = {"database": _check_database(), "broker": _check_broker()}
    failed = {name: error for name, error in checks.items() if error}
    for name, error in failed.items():
        logger.warning("readyz: %s failed: %s", name, error)
    body: dict[str, object] = {
        "status": "ready" if not failed else "unavailable",
        "checks": {name: ("ok" if not error else "failed") for name, error in checks.items()},
        "broker": "embedded" if settings.BROKER_IS_EMBEDDED else "redis",
    }
    if failed and is_admin(getattr(request, "user", None)):
        body["errors"] = failed
    return JsonResponse(body, status=200 if not failed else 503)


@require_GET
def home(request: HttpRequest) -> HttpResponse:
    """Send visitors to the matrix."""
    return redirect("inventory:matrix")
