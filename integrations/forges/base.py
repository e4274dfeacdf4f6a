"""Forge-neutral types, exceptions and the shared REST plumbing of the forge clients."""

from __future__ import annotations

import abc
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, TypeVar
from urllib.parse import quote

import requests

from integrations.http import (
    DEFAULT_TIMEOUT,
    HttpClient,
    HttpError,
    HttpResponse,
    JsonReader,
    ParseError,
    ResponseTooLarge,
    Secret,
    Timeout,
    TransportError,
    UnsafeURL,
)

PullRequestState = Literal["open", "closed", "merged"]
# The states a commit status is posted in (GitHub's words; GitLab's are mapped to them).
CommitStatusState = Literal["pending", "success", "failure", "error"]
# GitHub refuses a status description over 140 characters (422); the clients cut it there.
STATUS_DESCRIPTION_LIMIT = 140
MergeMethod = Literal["merge", "squash", "rebase"]
MAX_PAGES = 50  # 5000 items at per_page=100: more means a filter is wrong, not a big repo
DEFAULT_SECONDARY_WAIT = 60.0  # GitHub: "if retry-after is absent, wait at least one minute"

T = TypeVar("T")


# ---------------------------------------------------------------------------------------------
# Exceptions


class ForgeError(Exception):
    """Base class for forge failures; carries the HTTP status when there was one."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class ForgeUnavailable(ForgeError):
    """Transient: 5xx, timeout, connection error or rate limit; wait `retry_after` seconds if set."""

    def __init__(self, message: str, *, status: int | None = None, retry_after: float | None = None) -> None:
        super().__init__(message, status=status)
        self.retry_after = retry_after


class ForgeValidationError(ForgeError):
    """Permanent rejection of the request (422 and friends); do not retry."""


class PullRequestAlreadyExists(ForgeValidationError):
    """An open PR for this head/base exists already: look it up instead of creating it."""


class BranchAlreadyExists(ForgeValidationError):
    """The branch exists and points at a different commit than requested."""

    def __init__(self, message: str, *, sha: str | None = None) -> None:
        super().__init__(message, status=None)
        self.sha = sha


class ForgeAuthError(ForgeError):
    """401, or 403 that is not a rate limit: the token is invalid or lacks rights."""


class ForgeNotFound(ForgeError):
    """404: missing, or hidden from this token."""


class MergeNotAllowed(ForgeError):
    """405/409 (406 on GitLab): not mergeable now, or the head moved."""


class ForgeResponseError(ForgeError):
    """The forge answered with a body we cannot parse."""


# ---------------------------------------------------------------------------------------------
# Dataclasses


@dataclass(frozen=True)
class PullRequest:
    """A pull request (merge request on GitLab) in forge-neutral form."""

    number: int
    url: str
    api_url: str
    state: PullRequestState
    merged: bool
    merge_commit_sha: str | None
    head_ref: str
    head_sha: str
    base_ref: str
    title: str
    body: str
    author: str | None
    merged_by: str | None
    merged_at: datetime | None
    created_at: datetime | None
    draft: bool = False
    labels: tuple[str, ...] = ()
    # "owner/name" of the repository the head branch lives in; another value (or None: a deleted
    # fork) means the PR comes from outside the target repository.
    head_repo: str | None = None


@dataclass(frozen=True)
class StatusContext:
    """One commit status (CI check) entry."""

    context: str
    state: str
    description: str | None
    target_url: str | None


@dataclass(frozen=True)
class CommitStatusSummary:
    """Combined commit status: state is success, pending, failure or error."""

    state: str
    contexts: tuple[StatusContext, ...]


# The portal's vocabulary for one CI check (GitHub's words; the other forges' are mapped to it).
CheckState = Literal[
    "pending", "success", "failure", "error", "neutral", "skipped", "cancelled", "timed_out",
    "action_required", "stale", "warning",
]  # fmt: skip
CheckSource = Literal["check_run", "status", "pipeline"]
# A required check passes in one of these states (GitHub: neutral and skipped satisfy it).
CHECK_PASSING: frozenset[str] = frozenset({"success", "neutral", "skipped"})


@dataclass(frozen=True)
class Check:
    """One check reported at a commit: a check run, a commit status or a pipeline.

    `name` is what `required_checks` names (check-run name, status context, pipeline name);
    `url` is the run's page (html_url/details_url, target_url, web_url).
    """

    name: str
    state: CheckState
    source: CheckSource
    url: str | None = None
    description: str | None = None
    updated_at: datetime | None = None

    @property
    def passed(self) -> bool:
        """True when the check finished in a passing state."""
        return self.state in CHECK_PASSING

    @property
    def pending(self) -> bool:
        """True while the check has not finished."""
        return self.state == "pending"

    @property
    def failed(self) -> bool:
        """True when the check finished in any state that does not pass."""
        return not self.passed and not self.pending


@dataclass(frozen=True)
class Comparison:
    """What `head` has that `base` lacks (behind_by is None where the forge does not say)."""

    status: str | None
    ahead_by: int
    behind_by: int | None
    commit_shas: tuple[str, ...]
    files: tuple[str, ...]


# ---------------------------------------------------------------------------------------------
# Protocol


class ForgeClient(abc.ABC):
    """Operations the promotion workflow needs from a forge."""

    repo_full_name: str

    def current_login(self) -> str:
        """Return the login of the user the token authenticates as (the portal's forge identity)."""
        raise ForgeError(f"{type(self).__name__} cannot tell who its token belongs to")

    @abc.abstractmethod
    def get_branch_sha(self, branch: str) -> str | None:
        """Return the branch head SHA, or None if the branch does not exist."""

    @abc.abstractmethod
    def create_branch(self, branch: str, sha: str) -> None:
        """Create a branch at `sha`; an existing branch at the same SHA is success."""

    @abc.abstractmethod
    def delete_branch(self, branch: str) -> None:
        """Delete a branch; a missing branch is success."""

    @abc.abstractmethod
    def find_pull_request(self, *, head: str, base: str, state: str = "open") -> PullRequest | None:
        """Return the newest PR from `head` into `base` in `state` (open/closed/merged/all)."""

    @abc.abstractmethod
    def create_pull_request(
        self, *, head: str, base: str, title: str, body: str, draft: bool = False
    ) -> PullRequest:
        """Open a PR; raise PullRequestAlreadyExists on the forge's duplicate answer."""

    @abc.abstractmethod
    def get_pull_request(self, number: int) -> PullRequest:
        """Return one PR by number."""

    @abc.abstractmethod
    def update_pull_request(
        self, number: int, *, title: str | None = None, body: str | None = None, state: str | None = None
    ) -> PullRequest:
        """Change title, body or state (open/closed) of a PR."""

    def close_pull_request(self, number: int) -> PullRequest:
        """Close a PR without merging."""
        return self.update_pull_request(number, state="closed")

    @abc.abstractmethod
    def add_labels(self, number: int, labels: Sequence[str]) -> None:
        """Add labels (by name) to a PR."""

    @abc.abstractmethod
    def request_reviewers(self, number: int, reviewers: Sequence[str]) -> None:
        """Request reviews from users (by login)."""

    @abc.abstractmethod
    def comment(self, number: int, body: str) -> None:
        """Add a comment to a PR."""

    @abc.abstractmethod
    def merge_pull_request(
        self, number: int, *, sha: str | None = None, method: MergeMethod = "merge"
    ) -> str:
        """Merge a PR (only if its head is `sha`, when given); return the merge commit SHA."""

    @abc.abstractmethod
    def combined_status(self, sha: str) -> CommitStatusSummary:
        """Return the combined CI status of a commit."""

    @abc.abstractmethod
    def set_commit_status(
        self, sha: str, *, state: CommitStatusState, context: str, description: str, target_url: str
    ) -> StatusContext:
        """Post a commit status for `context` at `sha` (the newest status of a context wins)."""

    @abc.abstractmethod
    def checks(self, sha: str) -> tuple[Check, ...]:
        """Return every check the forge reports at commit `sha` (the newest of each name and kind)."""

    @abc.abstractmethod
    def compare(self, base: str, head: str) -> Comparison:
        """Compare two refs or SHAs."""


# ---------------------------------------------------------------------------------------------
# Shared REST plumbing


def seg(value: str) -> str:
    """Quote one URL path segment (branch names may hold '/')."""
    return quote(value, safe="")


def ref_path(value: str) -> str:
    """Quote a ref for APIs that take it as several path segments (refs/heads/a/b)."""
    return quote(value, safe="/")


def parse_retry_after(value: str | None) -> float | None:
    """Return Retry-After seconds (only the delta-seconds form; forges do not send dates)."""
    if not value:
        return None
    try:
        return max(0.0, float(value.strip()))
    except ValueError:
        return None


def error_message(resp: HttpResponse) -> str:
    """Extract a readable message from a forge error body (string, list or object forms)."""
    try:
        body = resp.json()
    except ValueError:
        return resp.text(300).strip()
    if not isinstance(body, dict):
        return ""
    parts: list[str] = []
    for key in ("message", "error"):
        parts.extend(_flatten(body.get(key)))
    # GitHub 422: the useful text is in errors[].message ("A pull request already exists for ...").
    for item in body.get("errors") or []:
        if isinstance(item, dict):
            parts.extend(_flatten(item.get("message") or item.get("code")))
        else:
            parts.extend(_flatten(item))
    return "; ".join(p for p in parts if p)[:500]


def _flatten(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [s for v in value for s in _flatten(v)]
    if isinstance(value, dict):
        return [f"{k}: {s}" for k, v in value.items() for s in _flatten(v)]
    return []


class RestForge(ForgeClient):
    """Common HTTP handling for the forge clients; subclasses add endpoints and parsing."""

    kind = "forge"
    # The longest pull request body the forge accepts, in characters (the caller caps bodies to it).
    BODY_LIMIT = 65_536

    def __init__(
        self,
        api_url: str,
        token: str,
        repo_full_name: str,
        *,
        allow_http: bool = False,
        verify_tls: bool | str = True,
        timeout: Timeout = DEFAULT_TIMEOUT,
        session: requests.Session | None = None,
    ) -> None:
        if repo_full_name.count("/") < 1 or repo_full_name.startswith("/") or ".." in repo_full_name:
            raise ForgeError(f"invalid repository name {repo_full_name!r}")
        self.repo_full_name = repo_full_name
        try:
            self._http = HttpClient(
                api_url,
                auth_headers=self.auth_headers(token),
                default_headers=self.default_headers(),
                allow_http=allow_http,
                verify_tls=verify_tls,
                timeout=timeout,
                session=session,
            )
        except UnsafeURL as exc:
            raise ForgeError(f"refusing forge URL: {exc}") from None

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._http.base_url!r}, {self.repo_full_name!r})"

    @property
    def api_url(self) -> str:
        """Return the validated API base URL."""
        return self._http.base_url

    def auth_headers(self, token: str) -> dict[str, Secret]:
        """Return the credential headers for this forge."""
        return {"Authorization": Secret(f"Bearer {token}")}

    def default_headers(self) -> dict[str, str]:
        """Return headers sent with every request."""
        return {"Accept": "application/json"}

    # -- transport ------------------------------------------------------------------------------

    def send(
        self,
        method: str,
        path: str,
        *,
        params: Any = None,
        body: Any = None,
        ok_missing: bool = False,
    ) -> HttpResponse | None:
        """Send one request and map failures; return None for 404 when `ok_missing`."""
        try:
            resp = self._http.request(method, path, params=params, json_body=body)
        except ResponseTooLarge as exc:
            raise ForgeResponseError(str(exc)) from None
        except TransportError as exc:
            raise ForgeUnavailable(str(exc)) from None
        except HttpError as exc:
            raise ForgeError(str(exc)) from None
        if resp.status == 404 and ok_missing:
            return None
        if resp.status >= 300:
            raise self.map_error(resp, method, path)
        return resp

    def call(self, method: str, path: str, *, params: Any = None, body: Any = None) -> Any:
        """Send a request and return its decoded JSON body (None for an empty body)."""
        resp = self.send(method, path, params=params, body=body)
        assert resp is not None
        return decode(resp)

    def pages(self, path: str, params: Mapping[str, Any]) -> Iterator[Any]:
        """Yield the decoded body of each page of a list endpoint, following Link rel="next" only."""
        url: str | None = path
        query: Mapping[str, Any] | None = params
        for _ in range(MAX_PAGES):
            if url is None:
                return
            resp = self.send("GET", url, params=query)
            assert resp is not None
            yield decode(resp)
            # The next link already carries the query; never build page URLs ourselves.
            url, query = resp.link("next"), None
        raise ForgeResponseError(f"GET {path}: more than {MAX_PAGES} pages")

    def paginate(self, path: str, params: Mapping[str, Any]) -> Iterator[Any]:
        """Yield items of a list endpoint (a JSON array per page)."""
        for page in self.pages(path, params):
            if not isinstance(page, list):
                raise ForgeResponseError(f"GET {path}: expected a JSON array")
            yield from page

    def map_error(self, resp: HttpResponse, method: str, path: str) -> ForgeError:
        """Translate an error response into the matching ForgeError."""
        # The body was scrubbed as bytes already; this catches credentials spelled with JSON escapes.
        message = self._http.scrub(error_message(resp))
        text = f"{self.kind} {method} {path} answered {resp.status}: {message}"
        status = resp.status
        limited = self.rate_limit_wait(resp, message)
        if limited is not None:
            return ForgeUnavailable(text, status=status, retry_after=limited)
        if status >= 500:
            return ForgeUnavailable(
                text, status=status, retry_after=parse_retry_after(resp.headers.get("Retry-After"))
            )
        if status in (401, 403):
            return ForgeAuthError(text, status=status)
        if status == 404:
            return ForgeNotFound(text, status=status)
        if 300 <= status < 400:
            return ForgeResponseError(
                f"{text} (redirect to another origin; check the API URL)", status=status
            )
        return ForgeValidationError(text, status=status)

    def rate_limit_wait(self, resp: HttpResponse, message: str) -> float | None:
        """Return seconds to wait if this 403/429 is a rate limit, else None."""
        if resp.status not in (403, 429):
            return None
        retry_after = parse_retry_after(resp.headers.get("Retry-After"))
        if retry_after is not None:
            return retry_after
        for prefix in ("X-RateLimit", "RateLimit"):
            if resp.headers.get(f"{prefix}-Remaining") == "0":
                reset = parse_retry_after(resp.headers.get(f"{prefix}-Reset"))
                return max(0.0, reset - time.time()) if reset is not None else DEFAULT_SECONDARY_WAIT
        if resp.status == 429 or "rate limit" in message.lower():
            return DEFAULT_SECONDARY_WAIT
        return None

    def parse(self, what: str, parser: Callable[[JsonReader], T], data: Any) -> T:
        """Run a parser over decoded JSON, turning shape errors into ForgeResponseError."""
        try:
            return parser(JsonReader(data))
        except ParseError as exc:
            raise ForgeResponseError(self._http.scrub(f"malformed {self.kind} {what}: {exc}")) from None

    def parse_many(self, what: str, parser: Callable[[JsonReader], T], items: Any) -> list[T]:
        """Parse a list of objects."""
        if not isinstance(items, list):
            raise ForgeResponseError(f"malformed {self.kind} {what}: expected an array")
        return [self.parse(what, parser, item) for item in items]


def decode(resp: HttpResponse) -> Any:
    """Decode a JSON body; empty bodies (204, Gitea's empty 200) decode to None."""
    if not resp.body.strip():
        return None
    try:
        return resp.json()
    except ValueError:
        raise ForgeResponseError(f"{resp.status} answer is not valid JSON (truncated?)") from None


def parse_status_check(r: JsonReader, *, state_key: str, states: Mapping[str, CheckState]) -> Check:
    """Parse one commit status (GitHub names its state `state`, Gitea `status`); unknown states are errors."""
    return Check(
        name=r.text("context") or "default",
        state=states.get(r.req_text(state_key), "error"),
        source="status",
        url=r.opt_text("target_url"),
        description=r.opt_text("description"),
        updated_at=r.time("updated_at") or r.time("created_at"),
    )


def status_description(text: str) -> str:
    """Cut a status description to the forge limit (140 characters), on one line."""
    flat = " ".join(text.split())
    if len(flat) <= STATUS_DESCRIPTION_LIMIT:
        return flat
    return flat[: STATUS_DESCRIPTION_LIMIT - 1].rstrip() + "…"


def commit_status_body(*, state: str, context: str, description: str, target_url: str) -> dict[str, str]:
    """The body of GitHub's "create a commit status" (Gitea's CreateStatusOption is the same)."""
    return {
        "state": state,
        "context": context,
        "description": status_description(description),
        "target_url": target_url,
    }


def newest_per_name(checks: Iterable[Check]) -> tuple[Check, ...]:
    """Keep the first check of each (source, name) in the forge's newest-first order."""
    seen: dict[tuple[str, str], Check] = {}
    for check in checks:
        seen.setdefault((check.source, check.name), check)
    return tuple(seen.values())


def combine_states(states: Sequence[str]) -> str:
    """Combine per-context states the way GitHub's combined status does."""
    if any(s in ("failure", "error") for s in states):
        return "failure" if "failure" in states else "error"
    if not states or any(s != "success" for s in states):
        return "pending"
    return "success"
