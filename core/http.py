"""Request types for views: what django-htmx's middleware and the login checks add to an HttpRequest.

Annotations only: mypy reads `request.htmx` and `request.user` through them; at run time a view still
receives Django's HttpRequest (django-htmx's middleware sets `htmx` on every request).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from django.http import HttpRequest
from django_htmx.middleware import HtmxDetails

if TYPE_CHECKING:
    # Only for the annotation: the auth models need the app registry, and core loads before it.
    from django.contrib.auth.models import User


class HtmxHttpRequest(HttpRequest):
    """Type a request past django-htmx's middleware: `request.htmx` says whether htmx sent it."""

    htmx: HtmxDetails


class AuthenticatedHttpRequest(HtmxHttpRequest):
    """Type a request to a view behind a login or role check (or an API view): `request.user` is a User."""

    user: User
