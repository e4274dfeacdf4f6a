"""URL policy: allowed schemes, same-origin checks and the link-local/metadata block list."""

from __future__ import annotations

import ipaddress
import socket
from urllib.parse import urlsplit

from integrations.http.errors import UnsafeURL

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
