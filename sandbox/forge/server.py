"""`ForgeEmulator`: a stdlib threaded HTTP server wrapping the forge app (no Django involved)."""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from .app import ForgeApp
from .core import ForgeCore
from .faults import FaultInjector
from .routing import Request, Response, parse_query
from .state import ForgeState
from .webhooks import WebhookDispatcher

logger = logging.getLogger(__name__)
DEFAULT_TOKEN = "sandbox-forge-token"
DEFAULT_LOGIN = "portal-bot"
MAX_BODY = 512 * 1024 * 1024


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    app: ForgeApp

    def server_activate(self) -> None:
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().server_activate()

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        with self._connections_lock:
            self._connections.add(request)
        try:
            super().process_request_thread(request, client_address)
        finally:
            with self._connections_lock:
                self._connections.discard(request)

    def close_connections(self) -> None:
        """Drop idle keep-alive connections, or their threads would keep serving after stop()."""
        with self._connections_lock:
            for conn in list(self._connections):
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out in two writes; without TCP_NODELAY each keep-alive request waits
    # ~40 ms for the client's delayed ACK, which a real Argo CD or GitHub does not add.
    disable_nagle_algorithm = True
    timeout = 120  # idle keep-alive connections give their thread back eventually
    server: _Server

    def do_GET(self) -> None:
        self._handle()

    do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_GET

    def _handle(self) -> None:
        try:
            body = self._read_body()
        except ValueError as exc:
            self._send(Response(400, {"message": f"Bad request body: {exc}"}))
            return
        path, _, query_string = self.path.partition("?")
        req = Request(
            method=self.command,
            path=path,
            query=parse_query(query_string),
            headers={k.lower(): v for k, v in self.headers.items()},
            body=body,
        )
        app = self.server.app
        try:
            if app.is_git(path):
                response = app.handle_git(req, query_string, self.client_address[0])
            else:
                response = app.handle(req)
        except Exception:  # keep serving; the emulator must never die on one bad request
            logger.exception("unhandled error for %s %s", self.command, self.path)
            response = Response(500, {"message": "Server Error"})
        self._send(response)

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            return self._read_chunked()
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY:
            raise ValueError("too large")
        return self.rfile.read(length) if length else b""

    def _read_chunked(self) -> bytes:
        """git sends large pushes chunked; BaseHTTPRequestHandler does not decode that itself."""
        chunks: list[bytes] = []
        total = 0
        while True:
            size_line = self.rfile.readline(1024).split(b";", 1)[0].strip()
            size = int(size_line or b"0", 16)
            if size == 0:
                while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                    pass  # trailers
                return b"".join(chunks)
            total += size
            if total > MAX_BODY:
                raise ValueError("too large")
            chunks.append(self.rfile.read(size))
            self.rfile.readline(8)  # CRLF after each chunk

    def _send(self, response: Response) -> None:
        payload = response.encoded()
        try:
            reason = HTTPStatus(response.status).phrase
        except ValueError:
            reason = ""
        self.send_response(response.status, reason)
        headers = {k.lower(): (k, v) for k, v in response.headers.items()}
        if (
            response.body is not None
            and not isinstance(response.body, bytes)
            and "content-type" not in headers
        ):
            self.send_header("Content-Type", "application/json; charset=utf-8")
        for name, value in headers.values():
            if name.lower() not in ("content-length", "transfer-encoding", "connection"):
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if self.command != "HEAD" and payload:
            self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("%s " + format, self.address_string(), *args)


class ForgeEmulator:
    """A GitHub-compatible forge over bare repos at `repos_dir/<owner>/<repo>.git`.

    `start()` binds (port 0 = a free port) and returns the base URL; the REST API is served at the
    root like api.github.com, and repos clone from `<base>/<owner>/<repo>.git`.
    """

    def __init__(
        self,
        repos_dir: str | Path,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        token: str = DEFAULT_TOKEN,
        users: dict[str, str] | None = None,
        webhook_url: str | None = None,
        webhook_secret: str | None = None,
        state_file: str | Path | None = None,
        public_url: str | None = None,
        fault_seed: int | None = None,
        ci: dict[str, object] | None = None,
    ) -> None:
        self.repos_dir = Path(repos_dir)
        self.host, self.port = host, port
        self.public_url = public_url.rstrip("/") if public_url else None
        self.users = {token: DEFAULT_LOGIN, **(users or {})}
        self.state = ForgeState(Path(state_file) if state_file else None)
        self.webhooks = WebhookDispatcher(self.state, webhook_url, webhook_secret)
        self.faults = FaultInjector(seed=fault_seed)
        self.core = ForgeCore(self.repos_dir, self.users, self.state, self.webhooks)
        self.app = ForgeApp(self.core, self.faults)
        if ci:
            self.app.ci.config.update(dict(ci))
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self.base_url = ""

    def start(self) -> str:
        if self._server is not None:
            return self.base_url
        self.repos_dir.mkdir(parents=True, exist_ok=True)
        server = _Server((self.host, self.port), _Handler)
        server.app = self.app
        self.port = server.server_address[1]
        shown_host = "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host
        self.base_url = self.public_url or f"http://{shown_host}:{self.port}"
        self.core.base_url = self.base_url
        self.webhooks.start()
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, name="forge-emulator", daemon=True)
        self._thread.start()
        logger.info("forge emulator serving %s at %s", self.repos_dir, self.base_url)
        return self.base_url

    def stop(self) -> None:
        if self._server is None:
            return
        self._server.shutdown()
        self._server.close_connections()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self.webhooks.stop()
        self.app.ci.stop()
        self.state.save()
        self._server = self._thread = None

    def wait_for_webhooks(self, timeout: float = 5.0) -> bool:
        """Block until queued webhook deliveries finished; True when the queue drained."""
        return self.webhooks.wait_idle(timeout)

    def __enter__(self) -> ForgeEmulator:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
