"""Give every request an id, and log one line per request."""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable

from django.http import HttpRequest, HttpResponse

from audit.context import ActorContext, reset_actor_context, set_actor_context
from core.requestid import new_request_id, set_request_id

logger = logging.getLogger("gitopsportal.request")
_VALID_INCOMING_ID = re.compile(r"^[A-Za-z0-9._-]{8,64}$")


class RequestIdMiddleware:
    """Adopt a sane X-Request-ID from the proxy or make one; echo it back; log the request."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        incoming = request.headers.get("X-Request-ID", "")
        request_id = incoming if _VALID_INCOMING_ID.match(incoming) else new_request_id()
        request.request_id = request_id  # type: ignore[attr-defined]
        set_request_id(request_id)
        started = time.perf_counter()
        try:
            response = self.get_response(request)
        finally:
            set_request_id(request_id)
        response["X-Request-ID"] = request_id
        user = getattr(request, "user", None)
        logger.info(
            "%s %s %s",
            request.method,
            request.path,
            response.status_code,
            extra={
                "method": request.method,
                "path": request.path,
                "status": response.status_code,
                "duration_ms": round((time.perf_counter() - started) * 1000, 1),
                "user": user.get_username() if user is not None and user.is_authenticated else None,
            },
        )
        set_request_id(None)
        return response


def client_ip(request: HttpRequest) -> str:
    """Return the client address (REMOTE_ADDR; a trusted proxy is expected to set it)."""
    return request.META.get("REMOTE_ADDR", "")[:64]


class AuditContextMiddleware:
    """Expose the client's address and user agent to audit events written during this request."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        token = set_actor_context(
            ActorContext(
                ip_address=client_ip(request),
                user_agent=request.headers.get("User-Agent", "")[:300],
                auth_method="session",
            )
        )
        try:
            return self.get_response(request)
        finally:
            reset_actor_context(token)
