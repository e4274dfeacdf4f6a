"""A fault-injecting HTTP proxy in front of a sandbox emulator (forge or Argo CD).

The emulators inject the faults they know (status codes, latency, rate limits, expired tokens);
this proxy adds what only a man in the middle can do, for real traffic from the portal:

- ``hold(method, pattern)``: stop a matching request on arrival and signal it, so a test can
  SIGKILL the client at exactly that step; ``release()`` then forwards it anyway (the server does
  the work although its client is gone, the nastiest case for idempotency);
- ``mangle(pattern, fn)``: rewrite a matching response (truncated JSON, wrong types, unknown enum
  values) before the portal parses it.

Bodies are read whole (chunked uploads from git decoded) and answered with Content-Length and
``Connection: close``; fine for the sandbox repo sizes.
"""

from __future__ import annotations

import http.client
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "te",
    "trailer",
    "upgrade",
    "content-length",
    "host",
}

Mangler = Callable[[int, dict[str, str], bytes], tuple[int, dict[str, str], bytes]]


@dataclass
class Hold:
    method: str
    pattern: re.Pattern[str]
    arrived: threading.Event = field(default_factory=threading.Event)
    released: threading.Event = field(default_factory=threading.Event)
    path: str = ""
    used: bool = False
    skip: int = 0  # matching requests let through before the one held

    def matches(self, method: str, path: str) -> bool:
        if self.used or method != self.method or not self.pattern.search(path):
            return False
        if self.skip > 0:
            self.skip -= 1
            return False
        return True

    def wait_arrival(self, timeout: float = 60) -> str:
        if not self.arrived.wait(timeout):
            raise TimeoutError(f"no {self.method} {self.pattern.pattern} within {timeout}s")
        return self.path

    def release(self) -> None:
        self.released.set()


class FaultProxy:
    def __init__(self, upstream: str) -> None:
        parts = urlsplit(upstream)
        self.upstream_host = parts.hostname or "127.0.0.1"
        self.upstream_port = parts.port or 80
        self._lock = threading.Lock()
        self._holds: list[Hold] = []
        self._manglers: list[tuple[re.Pattern[str], Mangler]] = []
        self.seen: list[tuple[float, str, str]] = []  # (monotonic time, method, path)
        self._server: ThreadingHTTPServer | None = None
        self.base_url = ""

    # -- control --------------------------------------------------------------------------------
    def hold(self, method: str, pattern: str, *, skip: int = 0) -> Hold:
        hold = Hold(method.upper(), re.compile(pattern), skip=skip)
        with self._lock:
            self._holds.append(hold)
        return hold

    def mangle(self, pattern: str, fn: Mangler) -> None:
        with self._lock:
            self._manglers.append((re.compile(pattern), fn))

    def reset(self) -> None:
        with self._lock:
            for hold in self._holds:
                hold.release()
            self._holds.clear()
            self._manglers.clear()

    # -- lifecycle ------------------------------------------------------------------------------
    def start(self) -> str:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                proxy._handle(self)

            do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_GET

            def log_message(self, *args: object) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        self._server = server
        threading.Thread(target=server.serve_forever, name="fault-proxy", daemon=True).start()
        self.base_url = f"http://127.0.0.1:{server.server_address[1]}"
        return self.base_url

    def stop(self) -> None:
        self.reset()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    # -- proxying -------------------------------------------------------------------------------
    def _handle(self, handler: BaseHTTPRequestHandler) -> None:
        method, path = handler.command, handler.path
        body = _read_body(handler)
        with self._lock:
            self.seen.append((time.monotonic(), method, path))
            hold = next((h for h in self._holds if h.matches(method, path)), None)
            if hold is not None:
                hold.used = True
                hold.path = path
        if hold is not None:
            hold.arrived.set()
            hold.released.wait(120)
        headers = {k: v for k, v in handler.headers.items() if k.lower() not in HOP_BY_HOP}
        headers["Host"] = f"{self.upstream_host}:{self.upstream_port}"
        headers["Content-Length"] = str(len(body))
        try:
            conn = http.client.HTTPConnection(self.upstream_host, self.upstream_port, timeout=120)
            conn.request(method, path, body=body, headers=headers)
            upstream = conn.getresponse()
            status, data = upstream.status, upstream.read()
            out_headers = {k: v for k, v in upstream.getheaders() if k.lower() not in HOP_BY_HOP}
            conn.close()
        except OSError as exc:
            status, data, out_headers = 502, f"proxy: upstream failed: {exc}".encode(), {}
        with self._lock:
            manglers = [fn for pattern, fn in self._manglers if pattern.search(path)]
        for fn in manglers:
            status, out_headers, data = fn(status, out_headers, data)
        try:
            handler.send_response(status)
            for key, value in out_headers.items():
                handler.send_header(key, value)
            handler.send_header("Content-Length", str(len(data)))
            handler.send_header("Connection", "close")
            handler.end_headers()
            if method != "HEAD":
                handler.wfile.write(data)
        except OSError:
            pass  # the client is gone (killed on purpose)
        handler.close_connection = True


def _read_body(handler: BaseHTTPRequestHandler) -> bytes:
    if handler.headers.get("Transfer-Encoding", "").lower() == "chunked":
        chunks = []
        while True:
            size = int(handler.rfile.readline().split(b";", 1)[0].strip() or b"0", 16)
            if size == 0:
                while handler.rfile.readline() not in (b"\r\n", b"\n", b""):
                    pass
                return b"".join(chunks)
            chunks.append(handler.rfile.read(size))
            handler.rfile.readline()
    length = int(handler.headers.get("Content-Length") or 0)
    return handler.rfile.read(length) if length else b""
