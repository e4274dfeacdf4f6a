"""Shared, defensive HTTP plumbing for every remote client in `integrations`.

Everything that talks HTTP goes through `HttpClient`, which enforces the house rules in one place:
timeouts always, no redirects to another origin, a response size cap, https unless explicitly
allowed, no link-local/metadata targets, and credentials only for the origin they belong to.
It also holds `JsonReader`, the typed accessor used to parse JSON at the boundary.

Rooms: `client` (the session and `HttpClient`), `urls` (URL policy), `scrub` (credentials kept
out of text), `jsonreader` (parsing at the boundary), `errors`.
"""

from integrations.http.client import (
    DEFAULT_MAX_BYTES,
    DEFAULT_TIMEOUT,
    MAX_LINE_BYTES,
    MAX_SAME_ORIGIN_REDIRECTS,
    USER_AGENT,
    HttpClient,
    HttpResponse,
    Timeout,
    new_session,
)
from integrations.http.errors import HttpError, ResponseTooLarge, TransportError, UnsafeURL
from integrations.http.jsonreader import JsonReader, ParseError, parse_time
from integrations.http.scrub import MIN_SCRUB_LENGTH, REDACTED, Scrubber, Secret
from integrations.http.urls import check_url, same_origin

__all__ = [
    "DEFAULT_MAX_BYTES",
    "DEFAULT_TIMEOUT",
    "MAX_LINE_BYTES",
    "MAX_SAME_ORIGIN_REDIRECTS",
    "MIN_SCRUB_LENGTH",
    "REDACTED",
    "USER_AGENT",
    "HttpClient",
    "HttpError",
    "HttpResponse",
    "JsonReader",
    "ParseError",
    "ResponseTooLarge",
    "Scrubber",
    "Secret",
    "Timeout",
    "TransportError",
    "UnsafeURL",
    "check_url",
    "new_session",
    "parse_time",
    "same_origin",
]
