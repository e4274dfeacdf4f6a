"""Credential holding and scrubbing: keep every form of a secret out of reprs, errors and logs."""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterable, Mapping
from urllib.parse import quote


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
