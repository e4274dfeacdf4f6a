"""The application watch stream: SSE/NDJSON framing and event parsing (API.md watch §6)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from integrations.argocd.errors import ArgoCDError, error_for
from integrations.argocd.models import WatchEvent
from integrations.argocd.parse import parse_application
from integrations.http import (
    JsonReader,
    Timeout,
)

WATCH_TYPES = frozenset({"ADDED", "MODIFIED", "DELETED"})


# A watch stream gets a keep-alive line every 15 s, so a read this long without bytes means it died.
WATCH_TIMEOUT: Timeout = (3.05, 60)


def parse_watch_payload(data: Any) -> WatchEvent:
    """Parse one decoded stream payload into a WatchEvent, raising an in-stream error object."""
    r = JsonReader(data)
    if r.has("error"):
        raise _stream_error(r.req_obj("error"))
    result = r.req_obj("result")
    event_type = result.enum("type", WATCH_TYPES)
    if event_type is None:
        result.fail("type", "missing")
    app = result.req_obj("application")
    return WatchEvent(type=event_type, application=parse_application(app.raw_dict(), app.path))


def _stream_error(r: JsonReader) -> ArgoCDError:
    status = r.integer("http_code")
    return error_for(status or 500, r.text("message") or r.text("http_status"), r.integer("grpc_code"))


def iter_stream_payloads(lines: Iterable[bytes]) -> Iterator[bytes]:
    """Turn SSE (`data: {...} ` + blank line) or NDJSON lines into JSON payloads."""
    data: list[bytes] = []
    for raw in lines:
        # Argo CD writes "data: {...} \n": strip the trailing space as well as CR.
        line = raw.rstrip()
        if not line:
            if data:
                yield b"\n".join(data)
                data = []
            continue
        if line.startswith(b":"):
            continue  # SSE comment / keep-alive
        if line.startswith(b"data:"):
            data.append(line[5:].lstrip(b" "))
        elif line.startswith((b"{", b"[")):
            yield line  # NDJSON
        # other SSE fields (event:, id:, retry:) carry nothing we need
    # Per the SSE spec an event without its terminating blank line is incomplete: drop it.
