"""CI checks of a change's pull request head, judged against the environment's `required_checks`.

One verdict serves every use: the emergency auto-merge, "ready to merge" on the pages, the lists'
"CI failed" badge and the ledger. `required_checks` names check runs, commit-status contexts or
pipelines (`integrations.forges.Check.name`), or is `any` (or empty): then everything the forge
reports must pass, and at least one check must be reported. "No checks reported" is never success:
the change waits for its checks to appear. A name reported twice (a check run and a status, as
GitHub allows) must pass in both.

- `checks_verdict(checks, required, *, sha) -> ChecksVerdict` (pure).
- `checks_read(repository, sha) -> tuple[Check, ...]` (forge errors sorted retryable/permanent).
- `pull_request_head_checks(repository, number, *, required) -> ChecksVerdict`: the PR's current head
  and its checks, read live (cached CHECKS_CACHE_SECONDS for pages that poll).
- `change_checks_record(kind=, change_id=, verdict=)`: store the verdict on the change row; a change
  of verdict to `checks_failed` or `success` writes `<kind>.checks_failed` / `<kind>.checks_passed`
  in the same transaction (the change record is synced with it).
- `change_checks_refresh(kind=, change=, repository=, required=)`: read and record (tracking).
- `changes_track_head(sha)`: a CI webhook for a commit tracks the open PRs at that head.
- `checks_json(change)` and `CHECKS_SCHEMA`: the stored checks in the JSON API.
- `checks_gate(change)`: the stored verdict as a change record gate (`required_checks`).
- `checks_panel(change, *, live=None)`: the template-ready rows of a page's checks panel.
- `pull_request_merge_when_checks_pass(repository=, number=, head_sha=, required_checks=)`: merge the
  portal's PR at the recorded head once this verdict is success there (an automatic merge never
  merges on "no checks reported").
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Final, Literal, cast

from django.core.cache import cache
from django.db import transaction
from django.db.models import Q
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from integrations.forges import Check, ForgeError, MergeNotAllowed

from .lifecycle import PR_OPEN, ChangeKind, change_enqueue_track, change_kinds, change_record
from .pullrequests import (
    MergeAttempt,
    PullRequestError,
    forge_for,
    forge_login,
    pull_request_distrust,
    pull_request_error,
)

if TYPE_CHECKING:
    from inventory.models import GitRepository

logger = logging.getLogger(__name__)

ANY_CHECK = "any"
CHECKS_CACHE_SECONDS = 3
Verdict = Literal["success", "waiting", "checks_failed"]
FAILED: Final = "checks_failed"
WAITING: Final = "waiting"
SUCCESS: Final = "success"

# How a check's state reads on a page: (icon, words, badge colour); never by colour alone.
STATE_DISPLAY: dict[str, tuple[str, str, str]] = {
    "success": ("✓", "passed", "ok"),
    "neutral": ("✓", "neutral", "ok"),
    "skipped": ("↷", "skipped", "idle"),
    "pending": ("…", "running", "info"),
    "expected": ("○", "not reported yet", "info"),
    "failure": ("✗", "failed", "bad"),
    "error": ("✗", "error", "bad"),
    "cancelled": ("✗", "cancelled", "bad"),
    "timed_out": ("✗", "timed out", "bad"),
    "action_required": ("✗", "action required", "bad"),
    "stale": ("✗", "stale", "bad"),
    "warning": ("!", "warning", "bad"),
}
VERDICT_DISPLAY: dict[str, tuple[str, str]] = {
    SUCCESS: ("Checks passed", "ok"),
    WAITING: ("Waiting for checks", "info"),
    FAILED: ("CI failed", "bad"),
    "": ("Checks not read yet", "idle"),
}


@dataclass(frozen=True)
class CheckRow:
    """One check as stored on the change and shown on its pages (`state` "expected": not reported)."""

    name: str
    state: str
    source: str
    url: str
    updated_at: str
    required: bool

    @property
    def failed(self) -> bool:
        """True when the check finished without passing."""
        return self.state not in ("success", "neutral", "skipped", "pending", "expected")

    @property
    def icon(self) -> str:
        """The state's icon."""
        return STATE_DISPLAY.get(self.state, ("?", self.state, "idle"))[0]

    @property
    def words(self) -> str:
        """The state in words."""
        return STATE_DISPLAY.get(self.state, ("?", self.state, "idle"))[1]

    @property
    def badge(self) -> str:
        """The badge colour of the state."""
        return STATE_DISPLAY.get(self.state, ("?", self.state, "idle"))[2]

    @property
    def source_label(self) -> str:
        """What kind of check it is, as people read it."""
        return {"check_run": "check run", "status": "commit status", "pipeline": "pipeline"}.get(
            self.source, self.source
        )

    @property
    def updated(self) -> datetime | None:
        """When the forge last changed the check."""
        return parse_datetime(self.updated_at) if self.updated_at else None

    def as_json(self) -> dict[str, Any]:
        """Return the row as stored (JSON)."""
        return asdict(self)


@dataclass(frozen=True)
class ChecksVerdict:
    """The checks at `sha` judged against a requirement: rows, verdict, readable detail."""

    verdict: Verdict
    detail: str
    rows: tuple[CheckRow, ...]
    sha: str = ""

    @property
    def failing(self) -> tuple[CheckRow, ...]:
        """The required checks that failed."""
        return tuple(r for r in self.rows if r.required and r.failed)

    @property
    def pending(self) -> bool:
        """True while the verdict may still change by itself (checks running or not reported)."""
        return self.verdict == WAITING

    def rows_json(self) -> list[dict[str, Any]]:
        """Return the rows as stored on the change."""
        return [r.as_json() for r in self.rows]

    def event_payload(self, required: Sequence[str]) -> dict[str, Any]:
        """The ledger payload of a checks event: head, requirement, verdict and every check."""
        return {
            "sha": self.sha,
            "required_checks": list(required) or [ANY_CHECK],
            "verdict": self.verdict,
            "failing": [{"name": r.name, "state": r.state, "url": r.url} for r in self.failing],
            "checks": [
                {"name": r.name, "state": r.state, "source": r.source, "url": r.url, "required": r.required}
                for r in self.rows
            ],
        }


def _row(check: Check, required: bool) -> CheckRow:
    return CheckRow(
        name=check.name,
        state=check.state,
        source=check.source,
        url=check.url or "",
        updated_at=check.updated_at.isoformat() if check.updated_at else "",
        required=required,
    )


def checks_verdict(checks: Sequence[Check], required: Sequence[str], *, sha: str = "") -> ChecksVerdict:
    """Judge the checks reported at a head against what the environment requires.

    `required`: check names, or `any` / nothing named: everything reported must pass and at least
    one check must be reported. Names listed beside `any` must be reported too.
    """
    names = list(dict.fromkeys(n for n in required if n and n != ANY_CHECK))
    every = ANY_CHECK in required or not names
    rows = [_row(c, every or c.name in names) for c in checks]
    rows.sort(key=lambda r: (not r.required, r.name, r.source))
    reported = {r.name for r in rows}
    missing = [n for n in names if n not in reported]
    rows += [CheckRow(n, "expected", "", "", "", True) for n in missing]
    judged = [r for r in rows if r.required and r.state != "expected"]
    failing = sorted({r.name for r in judged if r.failed})
    if failing:
        return ChecksVerdict(FAILED, "CI failed: " + ", ".join(failing), tuple(rows), sha)
    if every and not rows:
        return ChecksVerdict(WAITING, "waiting for checks: none reported at the head yet", (), sha)
    if missing:
        return ChecksVerdict(WAITING, "waiting for required checks: " + ", ".join(missing), tuple(rows), sha)
    running = sorted({r.name for r in judged if r.state == "pending"})
    if running:
        return ChecksVerdict(WAITING, "checks are still running: " + ", ".join(running), tuple(rows), sha)
    return ChecksVerdict(SUCCESS, "required checks passed", tuple(rows), sha)


def checks_read(repository: GitRepository, sha: str) -> tuple[Check, ...]:
    """Return the checks the repository's forge reports at `sha`."""
    try:
        return forge_for(repository).checks(sha)
    except ForgeError as exc:
        raise pull_request_error(exc, f"reading the checks of {sha[:12]}") from None


def pull_request_head_checks(
    repository: GitRepository, number: int, *, required: Sequence[str], cached: bool = True
) -> ChecksVerdict:
    """Read the PR's current head and judge its checks (cached briefly: pages poll this)."""
    key = f"changes:checks:{repository.pk}:{int(number)}"
    found = cache.get(key) if cached else None
    if found is None:
        forge = forge_for(repository)
        try:
            head = forge.get_pull_request(int(number)).head_sha
            found = (head, forge.checks(head))
        except ForgeError as exc:
            raise pull_request_error(exc, f"reading the checks of PR #{number}") from None
        cache.set(key, found, CHECKS_CACHE_SECONDS)
    head, checks = found
    return checks_verdict(checks, required, sha=head)


def change_checks_record(
    *, kind: ChangeKind, change_id: int, verdict: ChecksVerdict, required: Sequence[str]
) -> bool:
    """Store the verdict on the change; a new failure or pass writes its ledger event. True if it changed."""
    rows = verdict.rows_json()
    with transaction.atomic():
        locked = kind.rows().select_for_update().filter(pk=change_id).first()
        if locked is None:
            return False
        previous = (locked.checks_verdict, locked.checks_sha)
        if previous == (verdict.verdict, verdict.sha) and locked.checks == rows:
            return False
        kind.rows().filter(pk=change_id).update(
            checks=rows,
            checks_verdict=verdict.verdict,
            checks_detail=verdict.detail[:500],
            checks_sha=verdict.sha[:64],
            checks_at=timezone.now(),
        )
        if verdict.verdict in (FAILED, SUCCESS) and previous != (verdict.verdict, verdict.sha):
            change = kind.load(change_id)
            change_record(
                kind=kind,
                change=change,
                action=f"{kind.name}.checks_failed"
                if verdict.verdict == FAILED
                else f"{kind.name}.checks_passed",
                before={"checks_verdict": previous[0], "checks_sha": previous[1]},
                after=verdict.event_payload(required),
                message=verdict.detail,
            )
    return True


def change_checks_refresh(
    *, kind: ChangeKind, change: Any, repository: GitRepository, required: Sequence[str]
) -> ChecksVerdict | None:
    """Read the PR head's checks and record them (tracking); a forge error leaves the stored verdict."""
    try:
        verdict = pull_request_head_checks(repository, change.pr_number, required=required, cached=False)
    except PullRequestError as exc:
        logger.warning("%s %s: checks not read: %s", kind.name, change.pk, exc)
        return None
    change_checks_record(kind=kind, change_id=change.pk, verdict=verdict, required=required)
    return verdict


def stored_verdict(change: Any) -> ChecksVerdict:
    """The verdict as tracking last stored it on the change."""
    rows = tuple(CheckRow(**row) for row in (change.checks or []) if isinstance(row, dict))
    stored = cast(Verdict, change.checks_verdict or WAITING)
    return ChecksVerdict(stored, change.checks_detail, rows, change.checks_sha)


def checks_json(change: Any) -> dict[str, Any]:
    """The stored checks of a change as the JSON API returns them (`CHECKS_SCHEMA`)."""
    return {
        "verdict": change.checks_verdict or None,
        "detail": change.checks_detail or None,
        "sha": change.checks_sha or None,
        "read_at": change.checks_at,
        "items": [row for row in (change.checks or []) if isinstance(row, dict)],
    }


_NULLABLE_TEXT = {"type": ["string", "null"]}
CHECKS_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "the CI checks of the PR head as tracking last read them, judged against the "
    "environment's required_checks",
    "properties": {
        "verdict": {"type": ["string", "null"], "enum": [SUCCESS, WAITING, FAILED, None]},
        "detail": _NULLABLE_TEXT,
        "sha": _NULLABLE_TEXT,
        "read_at": {"type": ["string", "null"], "format": "date-time"},
        "items": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "name": {"type": "string"},
                    "state": {
                        "type": "string",
                        "description": "pending, success, failure, error, "
                        "neutral, skipped, cancelled, timed_out, action_required, stale, warning, or "
                        "expected (required, not reported yet)",
                    },
                    "source": {"type": "string", "description": "check_run, status or pipeline"},
                    "url": {"type": "string"},
                    "updated_at": {"type": "string"},
                    "required": {"type": "boolean"},
                },
            },
        },
    },
}


def checks_gate(change: Any) -> list[dict[str, Any]]:
    """The checks as a change record gate (`required_checks`), once tracking read them: [] or one gate."""
    if not change.checks_verdict:
        return []
    verdict = stored_verdict(change)
    listed = "; ".join(
        f"{r.name}: {r.words}" + (f" ({r.url})" if r.url else "") for r in verdict.rows if r.required
    )
    detail = f"{verdict.detail} at {verdict.sha[:12]}" + (f" — {listed}" if listed else "")
    return [{"name": "required_checks", "passed": verdict.verdict == SUCCESS, "detail": detail[:2000]}]


@dataclass(frozen=True)
class ChecksPanel:
    """What a change page shows about its checks (live when read now, else as stored).

    `pr_open`: the PR can still be merged, so the panel keeps polling (quickly while `pending`);
    `ready_to_merge`: the PR is open, the approvals are in and every required check passed.
    """

    verdict: ChecksVerdict
    label: str
    badge: str
    live: bool
    error: str = ""
    pr_open: bool = False
    approved: bool = True
    awaiting_pr: bool = False  # in flight, no pull request yet: the panel waits for it

    @property
    def pending(self) -> bool:
        """True while the verdict may still change by itself."""
        return self.verdict.pending

    @property
    def ready_to_merge(self) -> bool:
        """True when approvals and required checks allow the merge."""
        return self.pr_open and self.approved and self.passed

    @property
    def poll_seconds(self) -> int:
        """How often the page re-reads the checks (0: not at all)."""
        if self.awaiting_pr:
            return 5
        if not self.pr_open:
            return 0
        return 3 if self.pending or self.error else 10

    @property
    def failed(self) -> bool:
        """True when a required check failed."""
        return self.verdict.verdict == FAILED

    @property
    def passed(self) -> bool:
        """True when the required checks passed."""
        return self.verdict.verdict == SUCCESS


def checks_panel(
    change: Any,
    *,
    kind: ChangeKind,
    live: ChecksVerdict | None = None,
    error: str = "",
    approved: bool = True,
) -> ChecksPanel:
    """Return the checks panel of a change page: the live verdict when given, else the stored one."""
    verdict = live or stored_verdict(change)
    key = verdict.verdict if (live or change.checks_verdict) else ""
    label, badge = VERDICT_DISPLAY[key]
    return ChecksPanel(
        verdict=verdict,
        label=label,
        badge=badge,
        live=live is not None,
        error=error,
        pr_open=change.state == PR_OPEN and bool(change.pr_number),
        approved=approved,
        awaiting_pr=not change.pr_number and change.state not in kind.final_states,
    )


def changes_track_head(sha: str) -> int:
    """A forge reported a CI result for commit `sha` (webhook): track the open PRs at that head."""
    if not sha:
        return 0
    count = 0
    for kind in change_kinds():
        ids = list(
            kind.rows()
            .filter(state=PR_OPEN)
            .filter(Q(pr_head_sha=sha) | Q(checks_sha=sha) | Q(pushed_head_sha=sha))
            .values_list("pk", flat=True)[:50]
        )
        for pk in ids:
            change_enqueue_track(kind=kind, change_id=pk)
        count += len(ids)
    return count


def change_checks_live(
    *,
    kind: ChangeKind,
    change: Any,
    repository: GitRepository | None,
    required: Sequence[str],
    approved: bool = True,
) -> ChecksPanel:
    """Read the open PR's checks now for a page; a verdict tracking has not stored yet enqueues tracking.

    The page never writes: the tracking task records the new verdict and its ledger event.
    """
    if change.state != PR_OPEN or not change.pr_number or repository is None:
        return checks_panel(change, kind=kind, approved=approved)
    try:
        live = pull_request_head_checks(repository, change.pr_number, required=required)
    except PullRequestError as exc:
        return checks_panel(change, kind=kind, error=f"checks not read: {exc}", approved=approved)
    stored = (change.checks_verdict, change.checks_sha, change.checks)
    if (live.verdict, live.sha, live.rows_json()) != stored and cache.add(
        f"changes:checks-track:{kind.name}:{change.pk}", 1, CHECKS_CACHE_SECONDS * 3
    ):
        change_enqueue_track(kind=kind, change_id=change.pk, after_commit=False)
    return checks_panel(change, kind=kind, live=live, approved=approved)


def pull_request_merge_when_checks_pass(
    *,
    repository: GitRepository,
    number: int,
    head_sha: str,
    required_checks: Sequence[str] = (),
    method: Any = "merge",
) -> tuple[MergeAttempt, ChecksVerdict | None]:
    """Merge the portal's PR at `head_sha` once the required checks succeeded there.

    Returns the attempt and the checks verdict it was based on (None when it was not read). A PR
    whose head moved, or that is not the portal's own, is "refused" (never merged).
    """
    forge = forge_for(repository)
    login = forge_login(repository, forge)
    try:
        pr = forge.get_pull_request(int(number))
        if pr.merged:
            return MergeAttempt("merged", pr.merge_commit_sha, "already merged", pr.merged_by or ""), None
        if pr.state != "open":
            return MergeAttempt("closed", None, "the pull request was closed without merging"), None
        distrust = pull_request_distrust(pr, repository=repository, login=login, head_sha=head_sha)
        if distrust:
            return MergeAttempt("refused", None, f"not merging: {distrust}"), None
        verdict = checks_verdict(forge.checks(head_sha), required_checks, sha=head_sha)
        if verdict.verdict == FAILED:
            return MergeAttempt(FAILED, None, verdict.detail), verdict
        if verdict.verdict == WAITING:
            return MergeAttempt(WAITING, None, verdict.detail), verdict
        try:
            sha = forge.merge_pull_request(pr.number, sha=head_sha, method=method)
        except MergeNotAllowed as exc:
            again = forge.get_pull_request(pr.number)
            if again.merged:
                return MergeAttempt(
                    "merged", again.merge_commit_sha, "merged concurrently", again.merged_by or ""
                ), verdict
            if again.head_sha != head_sha:
                return MergeAttempt(
                    "refused", None, f"not merging: the head moved to {again.head_sha[:12]}"
                ), verdict
            return MergeAttempt("waiting", None, f"not mergeable yet: {exc}"), verdict
        # The forge records the token's user as `merged_by` (GitHub, Gitea and GitLab alike).
        return MergeAttempt("merged", sha, "merged", login or ""), verdict
    except ForgeError as exc:
        raise pull_request_error(exc, f"merging PR #{number}") from None
