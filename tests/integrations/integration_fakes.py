"""Helpers for the integrations tests: a real local HTTP server with recorded replies."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

FIXTURES = Path(__file__).parent / "fixtures"


def load_fixture(name: str) -> Any:
    """Return a JSON fixture by relative path."""
    return json.loads((FIXTURES / name).read_text())


@dataclass
class Reply:
    status: int = 200
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    stream: bool = False  # no Content-Length; close the connection after the body


@dataclass
class Route:
    method: str
    path: str
    query: dict[str, str]
    replies: list[Reply]


@dataclass
class Seen:
    method: str
    path: str
    raw_path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class FakeServer:
    """Serve queued replies per (method, path[, query subset]) and record every request."""

    def __init__(self) -> None:
        self.routes: list[Route] = []
        self.requests: list[Seen] = []
        self._lock = threading.Lock()
        handler = _make_handler(self)
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )

    @property
    def url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}"

    def add(
        self,
        method: str,
        path: str,
        status: int = 200,
        body: Any = None,
        *,
        headers: dict[str, str] | None = None,
        query: dict[str, str] | None = None,
        delay: float = 0.0,
        stream: bool = False,
    ) -> None:
        """Queue a reply; the last reply of a route repeats."""
        reply = Reply(status, body, headers or {}, delay, stream)
        for route in self.routes:
            if (route.method, route.path, route.query) == (method, path, query or {}):
                route.replies.append(reply)
                return
        self.routes.append(Route(method, path, query or {}, [reply]))

    def find(self, method: str, path: str, query: dict[str, list[str]]) -> Reply | None:
        # Most specific (longest query) route first.
        for route in sorted(self.routes, key=lambda r: -len(r.query)):
            if route.method != method or route.path != path:
                continue
            if all(query.get(k, [None])[0] == v for k, v in route.query.items()):
                with self._lock:
                    return route.replies.pop(0) if len(route.replies) > 1 else route.replies[0]
        return None

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def _make_handler(server: FakeServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _handle(self) -> None:
            parts = urlsplit(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            query = parse_qs(parts.query, keep_blank_values=True)
            seen = Seen(self.command, parts.path, self.path, query, dict(self.headers.items()), body)
            server.requests.append(seen)
            reply = server.find(self.command, parts.path, query) or Reply(404, {"message": "Not Found"})
            if reply.delay:
                time.sleep(reply.delay)
            payload = _encode(reply.body)
            self.send_response(reply.status)
            content_type = "application/json" if not isinstance(reply.body, (bytes, str)) else "text/plain"
            headers = {"Content-Type": content_type, **reply.headers}
            for key, value in headers.items():
                self.send_header(key, value.replace("{base}", server.url))
            if reply.stream:
                self.send_header("Connection", "close")
                self.close_connection = True
            else:
                self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            try:
                self.wfile.write(payload)
                self.wfile.flush()
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up (size cap, timeout): that is what the test checks

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _handle

    return Handler


def _encode(body: Any) -> bytes:
    if body is None:
        return b""
    if isinstance(body, bytes):
        return body
    if isinstance(body, str):
        return body.encode()
    return json.dumps(body).encode()


@pytest.fixture
def server() -> Iterator[FakeServer]:
    """Start a fake HTTP server on a free port."""
    fake = FakeServer()
    fake.start()
    yield fake
    fake.stop()
