"""Tell the ledger receivers (accounts.signals) that a service records its own role changes."""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator
from typing import Any

_service_recording: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "accounts_service_recording", default=False
)
_acting_user: contextvars.ContextVar[Any] = contextvars.ContextVar("accounts_acting_user", default=None)


@contextlib.contextmanager
def recorded_by_service() -> Iterator[None]:
    """Mark role changes made inside this block as recorded by the calling service (no second event)."""
    token = _service_recording.set(True)
    try:
        yield
    finally:
        _service_recording.reset(token)


def service_is_recording() -> bool:
    """Tell whether the current change is inside ``recorded_by_service()``."""
    return _service_recording.get()


@contextlib.contextmanager
def acting_user(user: Any) -> Iterator[None]:
    """Name ``user`` as the actor of direct role changes made in this block (set per request)."""
    token = _acting_user.set(user)
    try:
        yield
    finally:
        _acting_user.reset(token)


def current_acting_user() -> Any | None:
    """Return the signed-in user of the current request, or None outside requests."""
    user = _acting_user.get()
    return user if user is not None and getattr(user, "is_authenticated", False) else None
