"""The approval inbox badge in the header: how many promotions wait for this user's approval."""

from __future__ import annotations

from django.http import HttpRequest

from .selectors import approval_inbox_count


def approval_inbox(request: HttpRequest) -> dict[str, int]:
    """Expose ``approval_inbox_count`` (one COUNT query; none for users who approve nothing)."""
    user = getattr(request, "user", None)
    return {"approval_inbox_count": approval_inbox_count(user=user) if user is not None else 0}
