"""Argo CD domain exceptions and the mapping from an HTTP answer to one (API.md errors §3)."""

from __future__ import annotations

from collections.abc import Callable

from integrations.http import (
    HttpResponse,
)


class ArgoCDError(Exception):
    """Base class for Argo CD failures; carries the HTTP status and gRPC code when known."""

    def __init__(self, message: str, *, status: int | None = None, grpc_code: int | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.grpc_code = grpc_code


class ArgoCDUnavailable(ArgoCDError):
    """Transient: connection error, timeout, 5xx or 429. Retry later."""


class ArgoCDAuthError(ArgoCDError):
    """401: missing, expired or invalid token."""


class ArgoCDPermissionDenied(ArgoCDError):
    """403: RBAC denies it, a sync window blocks it, or the app is not visible."""


class ArgoCDNotFound(ArgoCDError):
    """404: the object does not exist (only reported when a project is given, see API.md §3)."""


class ArgoCDRequestError(ArgoCDError):
    """400/409/415: invalid argument or failed precondition (e.g. an operation already running)."""


class ArgoCDResponseError(ArgoCDError):
    """The server answered with something we cannot parse into the expected shape."""


def error_for(status: int, message: str, grpc_code: int | None) -> ArgoCDError:
    """Return the domain exception for an HTTP status and the server's message."""
    text = f"Argo CD answered {status}: {message[:300]}" if message else f"Argo CD answered {status}"
    cls: type[ArgoCDError]
    if status == 401:
        cls = ArgoCDAuthError
    elif status == 403:
        cls = ArgoCDPermissionDenied
    elif status == 404:
        cls = ArgoCDNotFound
    elif status == 429 or status >= 500:
        cls = ArgoCDUnavailable
    elif 300 <= status < 400:
        cls = ArgoCDResponseError
        text = f"Argo CD answered with a redirect ({status}); check the base URL"
    else:
        cls = ArgoCDRequestError
    return cls(text, status=status, grpc_code=grpc_code)


def raise_for_status(resp: HttpResponse, scrub: Callable[[str], str] = str) -> None:
    """Raise the mapped ArgoCDError for a non-2xx answer; `scrub` removes our credentials."""
    if resp.status < 300:
        return
    message, grpc_code = "", None
    try:
        body = resp.json()
    except ValueError:
        body = None
    if isinstance(body, dict):
        raw_message = body.get("message") or body.get("error")
        message = raw_message if isinstance(raw_message, str) else ""
        grpc_code = body.get("code") if isinstance(body.get("code"), int) else None
    elif resp.status < 500:
        message = resp.text(300).strip()  # e.g. plain-text "415 Invalid content type"
    # The body was scrubbed as bytes already; this catches credentials spelled with JSON escapes.
    raise error_for(resp.status, scrub(message), grpc_code)


class RenderError(ArgoCDError):
    """Argo CD could not render an app's manifests at a revision; the message is Argo CD's.

    `transient` marks what a later try may not meet again: the repo-server timed out, Argo CD was
    unreachable or answered 5xx/429 without a manifest-generation message.
    """

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        grpc_code: int | None = None,
        transient: bool = False,
    ) -> None:
        super().__init__(message, status=status, grpc_code=grpc_code)
        self.transient = transient


# Words of Argo CD / repo-server messages that say "try again": timeouts, not a broken manifest.
_TRANSIENT_WORDS = ("deadline exceeded", "timeout", "timed out", "connection refused", "unavailable")


def render_error_from(exc: ArgoCDError) -> RenderError:
    """Return the RenderError for a failed manifests call (Argo CD's message kept)."""
    message = str(exc)
    lowered = message.lower()
    generation = "manifest generation error" in lowered or "error generating manifests" in lowered
    timeout = any(word in lowered for word in _TRANSIENT_WORDS) or exc.grpc_code == 4  # DeadlineExceeded
    transient = timeout or (isinstance(exc, ArgoCDUnavailable) and not generation)
    return RenderError(message, status=exc.status, grpc_code=exc.grpc_code, transient=transient)
