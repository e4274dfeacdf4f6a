"""The shared session and `HttpClient`: timeouts, same-origin redirects, size caps, streams."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urljoin, urlsplit

import requests
import requests.utils

from core.gcscope import json_loads_bulk
from integrations.http.errors import ResponseTooLarge, TransportError, UnsafeURL
from integrations.http.scrub import Scrubber, Secret
from integrations.http.urls import check_url, same_origin

USER_AGENT = "gitops-portal/0.1 (+https://github.com/gitops-portal)"
DEFAULT_TIMEOUT: tuple[float, float] = (3.05, 30)
DEFAULT_MAX_BYTES = 64 * 1024 * 1024  # Argo CD lists of thousands of apps reach tens of MB (#4868).
MAX_LINE_BYTES = 16 * 1024 * 1024  # one watch event carries a whole Application
MAX_SAME_ORIGIN_REDIRECTS = 3

Timeout = tuple[float, float]


def new_session(*, user_agent: str = USER_AGENT) -> requests.Session:
    """Create the shared session: fixed User-Agent and no ambient credentials."""
    session = requests.Session()
    session.headers["User-Agent"] = user_agent
    # trust_env would let ~/.netrc override our Authorization header and pick up proxy variables
    # that are not part of the portal's configuration.
    session.trust_env = False
    return session


@dataclass(frozen=True)
class HttpResponse:
    """A fully read, size-capped response; the only response type clients see."""

    status: int
    headers: Mapping[str, str]
    body: bytes
    url: str

    def json(self) -> Any:
        """Decode the body as JSON, raising ValueError on malformed content.

        The cyclic collector is paused while it decodes (core.gcscope: a fleet's list would set off
        full collections of the process in the middle of it).
        """
        return json_loads_bulk(self.body.decode("utf-8"))

    def text(self, limit: int = 2000) -> str:
        """Return the start of the body as text, for error messages."""
        return self.body[:limit].decode("utf-8", "replace")

    def link(self, rel: str) -> str | None:
        """Return the URL of the Link header entry with this `rel`, resolved against the request."""
        raw = self.headers.get("Link") or self.headers.get("link")
        if not raw:
            return None
        for entry in requests.utils.parse_header_links(raw):
            if entry.get("rel") == rel and entry.get("url"):
                return urljoin(self.url, entry["url"])
        return None


@dataclass
class HttpClient:
    """Send requests to one origin with the portal's safety rules applied."""

    base_url: str
    auth_headers: Mapping[str, Secret] = field(default_factory=dict, repr=False)
    default_headers: Mapping[str, str] = field(default_factory=dict)
    allow_http: bool = False
    verify_tls: bool | str = True
    timeout: Timeout = DEFAULT_TIMEOUT
    max_bytes: int = DEFAULT_MAX_BYTES
    session: requests.Session | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self.base_url = check_url(self.base_url, allow_http=self.allow_http)
        if self.session is None:
            self.session = new_session()
        self._scrubber = Scrubber.for_headers(self.auth_headers)
        self._streams: set[requests.Response] = set()
        self._streams_lock = threading.Lock()

    def scrub(self, text: str) -> str:
        """Remove this client's credentials (every form we send) from a message."""
        return self._scrubber(text)

    def close(self) -> None:
        """Abort open streams (unblocking their readers in other threads) and close the session."""
        with self._streams_lock:
            streams = list(self._streams)
        for resp in streams:
            _abort(resp)
        if self.session is not None:
            self.session.close()

    def url_for(self, path_or_url: str) -> str:
        """Join a path onto the base URL; absolute URLs must stay on the same origin."""
        absolute = path_or_url.startswith(("http://", "https://"))
        url = path_or_url if absolute else self.base_url + "/" + path_or_url.lstrip("/")
        if not same_origin(url, self.base_url):
            raise UnsafeURL("refusing to send credentials to another origin")
        return url

    def _headers(self, extra: Mapping[str, str] | None) -> dict[str, str]:
        headers = dict(self.default_headers)
        headers.update({k: v.reveal() for k, v in self.auth_headers.items()})
        if extra:
            headers.update(extra)
        return headers

    def request(
        self,
        method: str,
        path_or_url: str,
        *,
        params: Mapping[str, Any] | list[tuple[str, Any]] | None = None,
        json_body: Any = None,
        headers: Mapping[str, str] | None = None,
        timeout: Timeout | None = None,
    ) -> HttpResponse:
        """Send one request, follow same-origin GET redirects, and read the capped body."""
        url = self.url_for(path_or_url)
        for _ in range(MAX_SAME_ORIGIN_REDIRECTS + 1):
            with self._open(method, url, params, json_body, headers, timeout) as resp:
                location = resp.headers.get("Location")
                if resp.status_code in (301, 302, 303, 307, 308) and location and method == "GET":
                    target = urljoin(url, location)
                    if same_origin(target, self.base_url):
                        url, params = target, None
                        continue
                body = self._scrubber.scrub_bytes(_read_capped(resp, self.max_bytes))
                return HttpResponse(resp.status_code, resp.headers, body, url)
        raise TransportError("too many redirects")

    @contextmanager
    def stream_lines(
        self,
        path_or_url: str,
        *,
        params: Mapping[str, Any] | list[tuple[str, Any]] | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: Timeout | None = None,
    ) -> Iterator[tuple[HttpResponse, Iterator[bytes]]]:
        """Open a streaming GET; yield the status/headers and an iterator over raw lines.

        `close()` from another thread aborts the stream: its reader then sees a TransportError.
        """
        url = self.url_for(path_or_url)
        with self._open("GET", url, params, None, headers, timeout) as resp:
            head = HttpResponse(resp.status_code, resp.headers, b"", url)
            if resp.status_code >= 300:
                body = self._scrubber.scrub_bytes(_read_capped(resp, 1024 * 1024))
                yield HttpResponse(resp.status_code, resp.headers, body, url), iter(())
                return
            with self._streams_lock:
                self._streams.add(resp)
            try:
                lines = _iter_lines(resp)
                yield head, (map(self._scrubber.scrub_bytes, lines) if self._scrubber else lines)
            finally:
                with self._streams_lock:
                    self._streams.discard(resp)

    @contextmanager
    def _open(
        self,
        method: str,
        url: str,
        params: Mapping[str, Any] | list[tuple[str, Any]] | None,
        json_body: Any,
        headers: Mapping[str, str] | None,
        timeout: Timeout | None,
    ) -> Iterator[requests.Response]:
        assert self.session is not None
        all_headers = self._headers(headers)
        data = None
        if json_body is not None:
            data = json.dumps(json_body).encode()
            all_headers["Content-Type"] = "application/json"
        try:
            resp = self.session.request(
                method,
                url,
                params=params,
                data=data,
                headers=all_headers,
                timeout=timeout or self.timeout,
                allow_redirects=False,
                stream=True,
                verify=self.verify_tls,
            )
        except requests.exceptions.RequestException as exc:
            # The requests message can include the URL but never our headers; keep only the type
            # and the URL path so that nothing secret-shaped travels further.
            raise TransportError(f"{type(exc).__name__} calling {method} {_redact(url)}") from None
        try:
            yield resp
        except requests.exceptions.RequestException as exc:
            raise TransportError(f"{type(exc).__name__} reading {method} {_redact(url)}") from None
        finally:
            resp.close()


def _abort(resp: requests.Response) -> None:
    # urllib3 >= 2.3 can shut the socket down under a blocked reader; older ones only close it.
    shutdown: Callable[[], None] | None = getattr(resp.raw, "shutdown", None)
    try:
        if shutdown is not None:
            shutdown()
            return
    except (OSError, ValueError, RuntimeError):
        pass  # the body was read to the end meanwhile and the connection went back to the pool
    with suppress(OSError):
        resp.close()


def _redact(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname}{':' + str(parts.port) if parts.port else ''}{parts.path}"


def _read_capped(resp: requests.Response, max_bytes: int) -> bytes:
    declared = resp.headers.get("Content-Length")
    if declared and declared.isdigit() and int(declared) > max_bytes:
        raise ResponseTooLarge(f"response of {declared} bytes exceeds the {max_bytes} byte cap")
    chunks: list[bytes] = []
    size = 0
    for chunk in resp.iter_content(64 * 1024):
        size += len(chunk)
        if size > max_bytes:
            raise ResponseTooLarge(f"response exceeds the {max_bytes} byte cap")
        chunks.append(chunk)
    return b"".join(chunks)


def _iter_lines(resp: requests.Response) -> Iterator[bytes]:
    # requests' iter_lines splits on any line ending and buffers without a bound; do our own so a
    # server that never sends a newline cannot exhaust memory.
    buffer = b""
    for chunk in resp.iter_content(8192):
        buffer += chunk
        while True:
            newline = buffer.find(b"\n")
            if newline < 0:
                break
            line, buffer = buffer[:newline], buffer[newline + 1 :]
            yield line.rstrip(b"\r")
        if len(buffer) > MAX_LINE_BYTES:
            raise ResponseTooLarge(f"stream line exceeds the {MAX_LINE_BYTES} byte cap")
    if buffer:
        yield buffer.rstrip(b"\r")
