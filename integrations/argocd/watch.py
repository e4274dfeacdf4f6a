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


def iter_stream_payloads(lines: Iterable[bytes], *, keepalives: bool = False) -> Iterator[bytes]:
    """Turn SSE (`data: {...} ` + blank line) or NDJSON lines into JSON payloads.

    With `keepalives`, each `:` keep-alive line yields an empty payload: a reader with a time
    budget gets control back every 15 s even when no event comes.
    """
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
            if keepalives:
                yield b""
            continue  # SSE comment / keep-alive
        if line.startswith(b"data:"):
            data.append(line[5:].lstrip(b" "))
        elif line.startswith((b"{", b"[")):
            yield line  # NDJSON
        # other SSE fields (event:, id:, retry:) carry nothing we need
    # Per the SSE spec an event without its terminating blank line is incomplete: drop it.


class InitialBurst:
    """Follow a stream opened without resourceVersion until its initial burst has delivered `expected`.

    Argo CD first sends one ADDED per matching app sorted by name, then live changes (API.md §6).
    So an expected name that the sorted burst has gone past was not sent (deleted since the list, or
    not visible), and any other event (MODIFIED, DELETED, an ADDED out of order) means the burst is
    over. `offer` says whether to keep an event's app; `done` when nothing more is to be awaited.
    """

    def __init__(self, expected: Iterable[str]) -> None:
        self.pending = set(expected)
        self.received: set[str] = set()
        self._last = max(self.pending) if self.pending else ""
        self._passed = ""  # the last name of the burst so far
        self.over = False

    def offer(self, event_type: str, name: str) -> bool:
        """Account for one event; True when its app is one to store (it replaces an earlier copy)."""
        wanted = name in self.pending or name in self.received
        if event_type == "ADDED" and not self.over and name > self._passed:
            self._passed = name
        else:
            self.over = True  # live changes follow the burst
        if event_type == "DELETED":
            self.pending.discard(name)
            self.received.discard(name)
            return False
        if wanted:
            self.pending.discard(name)
            self.received.add(name)
        return wanted

    @property
    def done(self) -> bool:
        return not self.pending or self.over or self._passed >= self._last

    def missing(self) -> tuple[str, ...]:
        """The expected names not delivered (so far)."""
        return tuple(sorted(self.pending))
