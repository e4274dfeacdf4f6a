"""Shared, defensive HTTP plumbing for every remote client in `integrations`.

Everything that talks HTTP goes through `HttpClient`, which enforces the house rules in one place:
timeouts always, no redirects to another origin, a response size cap, https unless explicitly
allowed, no link-local/metadata targets, and credentials only for the origin they belong to.
It also holds `JsonReader`, the typed accessor used to parse JSON at the boundary.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import json
import socket
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, NoReturn
from urllib.parse import quote, urljoin, urlsplit

import requests
import requests.utils

USER_AGENT = "gitops-portal/0.1 (+https://github.com/gitops-portal)"
DEFAULT_TIMEOUT: tuple[float, float] = (3.05, 30)
DEFAULT_MAX_BYTES = 64 * 1024 * 1024  # Argo CD lists of thousands of apps reach tens of MB (#4868).
MAX_LINE_BYTES = 16 * 1024 * 1024  # one watch event carries a whole Application
MAX_SAME_ORIGIN_REDIRECTS = 3

Timeout = tuple[float, float]

# Link-local covers the AWS/GCP/Azure/OpenStack metadata address 169.254.169.254; the others are
# provider-specific metadata endpoints reachable without link-local addressing.
_BLOCKED_NETWORKS = tuple(
    ipaddress.ip_network(n)
    for n in (
        "169.254.0.0/16",
        "fe80::/10",
        "fd00:ec2::254/128",
        "100.100.100.200/32",  # Alibaba Cloud metadata
        "0.0.0.0/8",
        "::/128",
    )
)
_BLOCKED_HOSTNAMES = frozenset({"metadata.google.internal", "metadata", "instance-data"})


class HttpError(Exception):
    """Base class for transport-level failures raised by this module."""


class UnsafeURL(HttpError, ValueError):
    """A URL that policy forbids: wrong scheme, metadata address, other origin, credentials."""


class TransportError(HttpError):
    """Connection failure, timeout or broken stream: transient by nature."""


class ResponseTooLarge(HttpError):
    """The body exceeded the configured size cap."""


class Secret:
    """Hold a credential so that it never shows up in a repr, str or traceback."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        """Return the raw credential; only for building an outgoing header."""
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __bool__(self) -> bool:
        return bool(self._value)


REDACTED = "***"
MIN_SCRUB_LENGTH = 8  # shorter strings would mangle ordinary text; no real credential is that short
_AUTH_SCHEMES = ("bearer ", "token ", "basic ")


class Scrubber:
    """Replace known credentials in text that may reach exceptions or logs.

    A server that echoes the request (a hostile one, a debugging proxy, a misconfigured gateway)
    can put our Authorization header into its error message. Every form we might have sent is
    removed: the raw credential, `Bearer <token>` / `token <token>`, the Basic base64 blob and its
    decoded `user:password`, and their JSON- and URL-escaped spellings.
    """

    __slots__ = ("_bytes", "_probes", "_texts")

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        forms: set[str] = set()
        for secret in secrets:
            forms |= _secret_forms(secret)
        # Longest first: "Bearer <token>" is replaced whole before the bare token is looked for.
        self._texts = tuple(sorted((f for f in forms if len(f) >= MIN_SCRUB_LENGTH), key=len, reverse=True))
        self._bytes = tuple(f.encode("utf-8", "surrogatepass") for f in self._texts)
        # A body holds a long form only if it holds a form inside it: probe the minimal ones first
        # (usually just the bare token), so a clean 50 MB list costs one or two scans.
        self._probes = tuple(b for b in self._bytes if not any(o != b and o in b for o in self._bytes))

    @classmethod
    def for_headers(cls, headers: Mapping[str, Secret]) -> Scrubber:
        """Build a scrubber for every credential header value."""
        return cls(v.reveal() for v in headers.values() if v)

    def __bool__(self) -> bool:
        return bool(self._texts)

    def __repr__(self) -> str:
        return f"Scrubber({len(self._texts)} forms)"

    def __call__(self, text: str) -> str:
        """Return `text` with every known credential form replaced by `***`."""
        for form in self._texts:
            if form in text:
                text = text.replace(form, REDACTED)
        return text

    def scrub_bytes(self, data: bytes) -> bytes:
        """Return `data` with every known credential form replaced by `***`."""
        if not any(probe in data for probe in self._probes):
            return data
        for form in self._bytes:
            if form in data:
                data = data.replace(form, REDACTED.encode())
        return data


def _secret_forms(value: str) -> set[str]:
    raw = value.strip()
    if not raw:
        return set()
    credentials = {raw}
    lowered = raw.lower()
    for scheme in _AUTH_SCHEMES:
        if lowered.startswith(scheme):
            credential = raw[len(scheme) :].strip()
            credentials.add(credential)
            if scheme == "basic ":
                credentials |= _basic_forms(credential)
    forms: set[str] = set()
    for item in credentials:
        forms.add(item)
        forms.add(json.dumps(item)[1:-1])  # as it appears inside a JSON string
        forms.add(json.dumps(item)[1:-1].replace("/", "\\/"))  # Go and PHP also escape '/'
        forms.add(quote(item, safe=""))  # echoed in a query string or a redirect URL
    return forms


def _basic_forms(blob: str) -> set[str]:
    try:
        decoded = base64.b64decode(blob, validate=True).decode("utf-8")
    except (binascii.Error, ValueError):
        return set()
    _user, _, password = decoded.partition(":")
    return {decoded, password} if password else {decoded}


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    port = parts.port or {"http": 80, "https": 443}.get(parts.scheme)
    return parts.scheme, (parts.hostname or "").lower(), port


def same_origin(a: str, b: str) -> bool:
    """Return True when both URLs share scheme, host and port."""
    return _origin(a) == _origin(b)


def _blocked_ip(value: str) -> bool:
    try:
        ip = ipaddress.ip_address(value.split("%", 1)[0])
    except ValueError:
        return False
    # An IPv4-mapped IPv6 address (::ffff:169.254.169.254) must be judged as the IPv4 it wraps.
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return any(ip in net for net in _BLOCKED_NETWORKS if net.version == ip.version)


def check_url(url: str, *, allow_http: bool = False, resolve: bool = True) -> str:
    """Validate a configured base URL and return it without a trailing slash.

    Refuses non-http(s) schemes, plain http unless `allow_http`, embedded credentials and hosts that
    are (or resolve to) link-local or cloud metadata addresses.
    """
    parts = urlsplit(url)
    if parts.scheme not in ("https", "http"):
        raise UnsafeURL(f"unsupported URL scheme {parts.scheme!r}")
    if parts.scheme == "http" and not allow_http:
        raise UnsafeURL("plain http is not allowed for this endpoint (https required)")
    if parts.username or parts.password:
        raise UnsafeURL("credentials must not be embedded in the URL")
    host = (parts.hostname or "").lower()
    if not host:
        raise UnsafeURL("URL has no host")
    if host in _BLOCKED_HOSTNAMES or _blocked_ip(host):
        raise UnsafeURL(f"host {host!r} is a link-local or metadata address")
    if resolve:
        _check_resolved(host, parts.port or 443)
    return url.rstrip("/")


def _check_resolved(host: str, port: int) -> None:
    # Best effort against names pointing at metadata services; an unresolvable name is left for
    # the request itself to fail on (it may resolve later, e.g. inside the cluster).
    try:
        infos = socket.getaddrinfo(host, port, proto=socket.IPPROTO_TCP)
    except (OSError, UnicodeError):
        return
    for info in infos:
        if _blocked_ip(str(info[4][0])):
            raise UnsafeURL(f"host {host!r} resolves to a link-local or metadata address")


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
        """Decode the body as JSON, raising ValueError on malformed content."""
        return json.loads(self.body.decode("utf-8"))

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


# ---------------------------------------------------------------------------------------------
# Parsing at the boundary


class ParseError(ValueError):
    """A JSON document did not have the expected shape; the message names the field."""


def parse_time(value: str, where: str) -> datetime:
    """Parse an RFC 3339 timestamp into an aware datetime."""
    text = value.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise ParseError(f"{where}: not an RFC 3339 timestamp: {value[:40]!r}") from None
    if parsed.tzinfo is None:
        raise ParseError(f"{where}: timestamp has no UTC offset: {value[:40]!r}")
    return parsed


class JsonReader:
    """Typed, path-aware access to a decoded JSON object; every mismatch raises ParseError."""

    __slots__ = ("_data", "path")

    def __init__(self, data: Any, path: str = "$") -> None:
        if not isinstance(data, dict):
            raise ParseError(f"{path}: expected an object, got {_type_name(data)}")
        self._data: dict[str, Any] = data
        self.path = path

    def _where(self, key: str) -> str:
        return f"{self.path}.{key}"

    def fail(self, key: str, message: str) -> NoReturn:
        """Raise ParseError for `key` with a message."""
        raise ParseError(f"{self._where(key)}: {message}")

    def raw_dict(self) -> dict[str, Any]:
        """Return the underlying decoded object."""
        return self._data

    def has(self, key: str) -> bool:
        """Return True when the key is present and not null."""
        return self._data.get(key) is not None

    def raw(self, key: str) -> Any:
        """Return the raw value (None when absent)."""
        return self._data.get(key)

    def _typed(self, key: str, kind: type | tuple[type, ...], label: str, required: bool) -> Any:
        value = self._data.get(key)
        if value is None:
            if required:
                self.fail(key, "missing")
            return None
        if isinstance(value, bool) and kind is not bool:
            self.fail(key, f"expected {label}, got boolean")
        if not isinstance(value, kind):
            self.fail(key, f"expected {label}, got {_type_name(value)}")
        return value

    def text(self, key: str, default: str = "") -> str:
        """Return an optional string, `default` when absent."""
        value = self._typed(key, str, "string", False)
        return default if value is None else value

    def opt_text(self, key: str) -> str | None:
        """Return a string or None when absent or empty."""
        return self._typed(key, str, "string", False) or None

    def req_text(self, key: str) -> str:
        """Return a required non-empty string."""
        value: str = self._typed(key, str, "string", True)
        if not value:
            self.fail(key, "empty")
        return value

    def integer(self, key: str, default: int | None = None) -> int | None:
        """Return an int (grpc-gateway may encode int64 as a string)."""
        value = self._data.get(key)
        if isinstance(value, str) and value.lstrip("-").isdigit():
            return int(value)
        result = self._typed(key, int, "integer", False)
        return default if result is None else result

    def req_integer(self, key: str) -> int:
        """Return a required int."""
        value = self.integer(key)
        if value is None:
            self.fail(key, "missing")
        return value

    def flag(self, key: str, default: bool = False) -> bool:
        """Return a boolean, `default` when absent."""
        value = self._typed(key, bool, "boolean", False)
        return default if value is None else value

    def opt_flag(self, key: str) -> bool | None:
        """Return a boolean or None when absent."""
        value: bool | None = self._typed(key, bool, "boolean", False)
        return value

    def num(self, key: str) -> float | None:
        """Return a number or None."""
        value = self._typed(key, (int, float), "number", False)
        return None if value is None else float(value)

    def time(self, key: str) -> datetime | None:
        """Return an aware datetime or None when absent."""
        value = self.opt_text(key)
        return None if value is None else parse_time(value, self._where(key))

    def obj(self, key: str) -> JsonReader:
        """Return a nested object reader; an absent key reads as an empty object."""
        value = self._typed(key, dict, "object", False)
        return JsonReader(value or {}, self._where(key))

    def req_obj(self, key: str) -> JsonReader:
        """Return a required nested object reader."""
        return JsonReader(self._typed(key, dict, "object", True), self._where(key))

    def opt_obj(self, key: str) -> JsonReader | None:
        """Return a nested object reader or None when absent."""
        value = self._typed(key, dict, "object", False)
        return None if value is None else JsonReader(value, self._where(key))

    def array(self, key: str) -> list[Any]:
        """Return a list (empty when absent)."""
        return list(self._typed(key, list, "array", False) or [])

    def objs(self, key: str) -> list[JsonReader]:
        """Return readers for a list of objects."""
        return [JsonReader(item, f"{self._where(key)}[{i}]") for i, item in enumerate(self.array(key))]

    def strs(self, key: str) -> tuple[str, ...]:
        """Return a tuple of strings."""
        items = self.array(key)
        for i, item in enumerate(items):
            if not isinstance(item, str):
                raise ParseError(f"{self._where(key)}[{i}]: expected string, got {_type_name(item)}")
        return tuple(items)

    def str_map(self, key: str) -> dict[str, str]:
        """Return a string-to-string map (labels, annotations)."""
        value = self._typed(key, dict, "object", False) or {}
        for k, v in value.items():
            if not isinstance(v, str):
                raise ParseError(f"{self._where(key)}.{k}: expected string, got {_type_name(v)}")
        return dict(value)

    def enum(self, key: str, allowed: frozenset[str]) -> str | None:
        """Return a string restricted to `allowed`, or None when absent."""
        value = self.opt_text(key)
        if value is not None and value not in allowed:
            self.fail(key, f"unknown value {value[:60]!r} (expected one of {', '.join(sorted(allowed))})")
        return value


def _type_name(value: Any) -> str:
    return {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null"}.get(
        type(value), type(value).__name__
    )
