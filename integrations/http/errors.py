"""Transport-level exceptions raised by the shared HTTP plumbing."""

from __future__ import annotations


class HttpError(Exception):
    """Base class for transport-level failures raised by this module."""


class UnsafeURL(HttpError, ValueError):
    """A URL that policy forbids: wrong scheme, metadata address, other origin, credentials."""


class TransportError(HttpError):
    """Connection failure, timeout or broken stream: transient by nature."""


class ResponseTooLarge(HttpError):
    """The body exceeded the configured size cap."""
