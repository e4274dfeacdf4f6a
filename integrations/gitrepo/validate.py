"""Validators for refs, SHAs, repository paths and remote URLs, applied before anything reaches argv."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from integrations.gitrepo.errors import InvalidRef, UnsafeRemote
from integrations.http import UnsafeURL, check_url

_SHA_RE = re.compile(r"[0-9a-f]{7,40}|[0-9a-f]{64}")
_FULL_SHA_RE = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")
_REF_FORBIDDEN = re.compile(r"[\x00-\x20\x7f~^:?*\[\\]")
_TRAILER_KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]*")


def validate_sha(value: str, *, full: bool = False) -> str:
    """Return a lowercase hex object name (7-40 hex, or exactly 40/64 when `full`)."""
    candidate = value.strip().lower() if isinstance(value, str) else ""
    pattern = _FULL_SHA_RE if full else _SHA_RE
    if not pattern.fullmatch(candidate):
        raise InvalidRef(f"not a commit SHA: {value!r:.80}")
    return candidate


def validate_ref_name(name: str) -> str:
    """Return `name` if it is a safe branch/ref name (git check-ref-format --branch rules)."""
    problem = _ref_problem(name) if isinstance(name, str) else "not a string"
    if problem:
        raise InvalidRef(f"invalid ref name {name!r:.80}: {problem}")
    return name


def _ref_problem(name: str) -> str | None:
    if not name or name == "@":
        return "empty or '@'"
    if name.startswith("-"):
        return "starts with '-'"
    if ".." in name or "@{" in name or "//" in name:
        return "contains '..', '@{' or '//'"
    if _REF_FORBIDDEN.search(name):
        return "contains a space, control character or one of ~^:?*[\\"
    if name.startswith("/") or name.endswith(("/", ".")):
        return "starts with '/' or ends with '/' or '.'"
    for component in name.split("/"):
        if component.startswith(".") or component.endswith(".lock"):
            return "a component starts with '.' or ends with '.lock'"
    return None


def validate_rev(value: str) -> str:
    """Return a SHA or a valid ref name; anything else (ranges, options) is refused."""
    try:
        return validate_sha(value)
    except InvalidRef:
        return validate_ref_name(value)


def validate_repo_path(path: str) -> str:
    """Return a safe repository-relative path.

    Refused: empty, absolute or option-like paths, control characters (NUL included), and `..`,
    `.`, empty or `.git` components (`.git` in any case, with trailing dots or spaces, as
    case-insensitive or Windows filesystems read it). A trailing '/' is dropped.
    """
    if not isinstance(path, str) or not path or path.startswith(("/", "-")):
        raise InvalidRef(f"invalid repository path {path!r:.80}")
    if "\x00" in path or any(ord(c) < 0x20 or c == "\x7f" for c in path):
        raise InvalidRef(f"invalid repository path {path!r:.80}: control character")
    stripped = path.rstrip("/")
    parts = stripped.split("/")
    if any(p in ("", ".", "..") for p in parts):
        raise InvalidRef(f"invalid repository path {path!r:.80}: empty, '.' or '..' component")
    if any(p.rstrip(". ").lower() == ".git" for p in parts):
        raise InvalidRef(f"invalid repository path {path!r:.80}: '.git' component")
    return stripped


def check_remote_url(url: str, *, allow_file: bool = False, allow_http: bool = False) -> str:
    """Return `url` if git may fetch from it: https (http/file only when allowed), no helpers."""
    if not isinstance(url, str) or not url or url.startswith("-") or any(ord(c) < 0x20 for c in url):
        raise UnsafeRemote(f"refusing remote URL {url!r:.80}")
    if "::" in url.split("/", 1)[0]:  # transport helpers: ext::cmd, fd::0, anything::...
        raise UnsafeRemote("remote helper URLs (ext::, fd::, ...) are refused")
    scheme = urlsplit(url).scheme.lower()
    if scheme in ("http", "https"):
        try:
            check_url(url, allow_http=allow_http, resolve=False)
        except UnsafeURL as exc:
            raise UnsafeRemote(str(exc)) from None
        return url
    if scheme == "file" or (not scheme and url.startswith("/")):
        if not allow_file:
            raise UnsafeRemote("local (file) remotes are only allowed for the configured sandbox")
        return url
    raise UnsafeRemote(f"unsupported remote transport {scheme or 'scp-like'!r}")
