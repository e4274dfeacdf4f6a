"""Request ids shared by a request, its log lines, its audit events and the tasks it starts."""

from __future__ import annotations

import contextvars
import uuid

_request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)


def new_request_id() -> str:
    """Return a fresh request id (32 hex characters)."""
    return uuid.uuid4().hex


def current_request_id() -> str | None:
    """Return the id of the request or task being served (None outside one)."""
    return _request_id.get()


def set_request_id(value: str | None) -> None:
    """Make `value` the current request id of this thread or task."""
    _request_id.set(value)
