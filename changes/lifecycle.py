"""One change-request lifecycle; promotions and rollbacks are two kinds of it.

A change request gets a plan, passes gates and approvals (the kind's business), then this module
takes over: a task claims the row (conditional UPDATE with a lease), the kind builds its pull
request through `changes.pullrequests.pull_request_ensure`, the PR is recorded, and tracking moves
the row merged → deployed → healthy, or fails it (`changes.tracking`); the sweeper re-enqueues
work whose message was lost (`changes.sweeper`). Every transition writes the kind's audit event
(`<kind>.<action>`) in the same transaction.

A kind is a `ChangeKind` registered with `change_kind_register` (AppConfig.ready). It names its
model, states and Celery tasks, and supplies hooks: `load`, `snapshot`, `record` (audit event
and change record) and optional `on_final`, `close_pr` and `audit_fields`. Tasks are sent by
name, so this package imports no kind.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from celery import current_app
from django.conf import settings
from django.contrib.auth.models import User
from django.db import models, transaction
from django.db.models import F, Q
from django.utils import timezone

from audit.services import audit_event_record
from core.requestid import current_request_id

from .pullrequests import (
    BranchMoved,
    BranchResult,
    BranchTrust,
    PullRequestPermanent,
    PullRequestResult,
    PullRequestRetryable,
    branch_name_unguessable,
)

logger = logging.getLogger(__name__)

# PR-opening attempts (claims) before the lifecycle gives up on transient errors.
MAX_PR_ATTEMPTS = 8
# States every kind shares (the tail of the lifecycle).
PR_OPEN, MERGED, DEPLOYED, FAILED = "pr_open", "merged", "deployed", "failed"
TRACKED_STATES = (PR_OPEN, MERGED, DEPLOYED)


class ChangeFailed(Exception):
    """A kind's permanent, readable reason to fail the change (with extra fields and audit data)."""

    def __init__(
        self, reason: str, *, fields: Mapping[str, Any] | None = None, extra: dict[str, Any] | None = None
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.fields = dict(fields or {})
        self.extra = dict(extra or {})


@dataclass(frozen=True)
class ChangeKind:
    """What one kind of change request supplies to the lifecycle."""

    name: str  # audit prefix and target type: "promotion", "rollback"
    system_name: str  # audit system actor for unattended transitions
    model: type[models.Model]
    claim_states: tuple[str, ...]  # states a PR-opening task may claim the row from
    failable_states: tuple[str, ...]  # states `change_fail` may end (before the merge)
    final_states: tuple[str, ...]
    opening_since: str  # timestamp the sweeper's grace counts from for unclaimed rows
    pr_open_task: str  # Celery task names (kept stable: messages may be in flight)
    track_task: str
    load: Callable[[int], Any]
    snapshot: Callable[[Any], dict[str, Any]]
    event_after: Callable[[Any, dict[str, Any]], dict[str, Any]]  # the kind's fields in `after`
    audit_fields: Callable[[Any], dict[str, Any]]  # target_label, app, environment, shas
    claiming_state: str | None = None  # the state a claim moves the row to (None: unchanged)
    claim_fields: Callable[[Any], dict[str, Any]] = lambda now: {}
    pr_open_fields: Mapping[str, Any] = field(default_factory=dict)
    retry_fields: Callable[[str], dict[str, Any]] = lambda error: {}
    retry_not_before: str = ""  # field holding "not before" for the sweeper (empty: none)
    branch_field: str = ""  # field holding the PR branch name (for `change_branch_trust`)
    pr_poll_seconds: int = 300
    open_grace_seconds: int = 30
    records_sync: Callable[[Any], None] = lambda change: None  # audit change record(s)
    on_final: Callable[[Any], None] = lambda change: None
    close_pr: Callable[[Any], None] = lambda change: None
    track_args: Callable[[PullRequestResult], tuple[Any, ...]] = lambda result: ()
    # Unfinished changes of an app in an environment: (application, environment) -> rows.
    in_flight: Callable[[Any, Any], list[Any]] = lambda application, environment: []
    # The request-time branch push (empty: the PR-opening task pushes): its task, the states it
    # may claim the row in, and when the sweeper's grace for unclaimed rows counts from.
    push_task: str = ""
    push_states: tuple[str, ...] = ()
    # The branch moved off the pushed head (inside the transaction that records it): invalidate
    # what was given on the old head; returns (how many approvals were invalidated, row updates
    # that put the change back to awaiting approval on a new head of the portal's).
    on_head_moved: Callable[[Any, str], tuple[int, dict[str, Any]]] = lambda change, old: (0, {})
    # Portal-driven syncs (changes.syncs): the task, and the environment and apps a change deploys.
    sync_task: str = ""
    sync_scope: Callable[[Any], tuple[Any, list[Any]]] = lambda change: (None, [])
    # The change's GitRepository (None: unknown), and the task that checks its pushed branch with
    # the forge (changes.branchcheck), sent when a push webhook says the branch moved.
    repository: Callable[[Any], Any] = lambda change: None
    verify_task: str = ""
    # The portal's commit status on the change's head (changes.portalstatus): the kind's verdict
    # (a `PortalStatus`, or None: nothing to post), the change page's path, and the task that
    # posts it (sent after every ledger event of the change).
    status_verdict: Callable[[Any], Any] = lambda change: None
    page_url: Callable[[Any], str] = lambda change: ""
    status_task: str = ""

    def rows(self) -> models.QuerySet[Any]:
        """All rows of this kind (the model's default manager)."""
        return self.model._default_manager.all()


_KINDS: dict[str, ChangeKind] = {}


def change_kind_register(kind: ChangeKind) -> ChangeKind:
    """Register a kind (idempotent: AppConfig.ready may run more than once in tests)."""
    _KINDS[kind.name] = kind
    return kind


def change_kinds() -> list[ChangeKind]:
    """Return the registered kinds."""
    return list(_KINDS.values())


def changes_in_flight(*, kind_name: str, application: Any, environment: Any) -> list[Any]:
    """Unfinished changes of one kind for an app in an environment (empty if the kind is unknown)."""
    kind = _KINDS.get(kind_name)
    return kind.in_flight(application, environment) if kind else []


# ---------------------------------------------------------------------------------------------
# Requests and their ledger events


def change_requester_fields(actor: User) -> dict[str, Any]:
    """The requester columns of a new change: who asked, and the correlation id its tasks share."""
    return {
        "requested_by": actor,
        "requested_by_name": actor.get_username(),
        "correlation_id": (current_request_id() or uuid.uuid4().hex)[:64],
    }


def change_record(
    *,
    kind: ChangeKind,
    change: Any,
    action: str,
    actor: User | None = None,
    before: dict[str, Any] | None = None,
    after: dict[str, Any] | None = None,
    message: str = "",
) -> None:
    """Write a change's ledger event (the kind adds its fields to `after`) and sync its change record.

    Without an actor the kind's system acts (unattended transitions: tasks, the sweeper).
    """
    audit_event_record(
        action=action,
        actor=actor,
        target_type=kind.name,
        target_id=change.pk,
        pr_url=change.pr_url,
        before=before,
        after=kind.event_after(change, after or {}),
        message=message,
        correlation_id=change.correlation_id or None,
        system_name=None if actor is not None else kind.system_name,
        **kind.audit_fields(change),
    )
    kind.records_sync(change)
    if kind.status_task:
        # Every event may change the portal's verdict on the head (approval, invalidation, gates,
        # failure): the task posts it only if it changed (changes.portalstatus).
        change_enqueue(task=kind.status_task, args=(change.pk, ""))


# ---------------------------------------------------------------------------------------------
# Claim and lease


def claim_lease() -> timedelta:
    """How long a claim holds a row: longer than a task may run (PROMOTION_PR_LEASE_SECONDS)."""
    return timedelta(seconds=settings.PROMOTION_PR_LEASE_SECONDS)


def change_claim(*, kind: ChangeKind, change_id: int, push: bool = False) -> bool:
    """Claim the PR opening (or, `push`, the request-time branch push) with a conditional UPDATE.

    False when another attempt holds the row, or it is not in a state the work may start from.
    """
    now = timezone.now()
    updates: dict[str, Any] = {"claimed_until": now + claim_lease(), "attempts": F("attempts") + 1}
    if not push:
        updates.update(kind.claim_fields(now))
        if kind.claiming_state:
            updates["state"] = kind.claiming_state
    claimed = (
        kind.rows()
        .filter(pk=change_id, state__in=kind.push_states if push else kind.claim_states)
        .filter(Q(claimed_until__isnull=True) | Q(claimed_until__lt=now))
        .update(**updates)
    )
    return claimed == 1


def change_release(*, kind: ChangeKind, change_id: int, push: bool = False, **fields: Any) -> None:
    """Give the claim back (a transient failure: the task's retry or the sweeper takes it again).

    A push claim is released only while the change is still in a push state: once approved, the
    claim belongs to the PR opening.
    """
    rows = kind.rows().filter(pk=change_id)
    if push:
        rows = rows.filter(state__in=kind.push_states)
    rows.update(claimed_until=None, **fields)


# ---------------------------------------------------------------------------------------------
# Enqueueing (after commit: the row is the truth, the sweeper re-sends lost messages)


def change_enqueue(
    *,
    task: str,
    args: Sequence[Any],
    countdown: float | None = None,
    expires: float | None = None,
    after_commit: bool = True,
) -> None:
    """Send a task by name once the current transaction commits (or at once: `after_commit=False`)."""

    def send() -> None:
        current_app.send_task(task, args=tuple(args), countdown=countdown, expires=expires)

    if after_commit:
        transaction.on_commit(send)
    else:
        send()


def change_enqueue_pr_open(*, kind: ChangeKind, change_id: int, after_commit: bool = True) -> None:
    """Enqueue the kind's PR-opening task."""
    change_enqueue(task=kind.pr_open_task, args=(change_id,), after_commit=after_commit)


def change_enqueue_push(*, kind: ChangeKind, change_id: int, after_commit: bool = True) -> None:
    """Enqueue the kind's request-time branch push (its PR-opening task when it has none)."""
    change_enqueue(task=kind.push_task or kind.pr_open_task, args=(change_id,), after_commit=after_commit)


def change_enqueue_track(
    *,
    kind: ChangeKind,
    change_id: int,
    args: Sequence[Any] = (),
    countdown: float | None = None,
    expires: float | None = None,
    after_commit: bool = True,
) -> None:
    """Enqueue the kind's tracking task (extra `args` after the id, e.g. a promotion's follow count)."""
    change_enqueue(
        task=kind.track_task,
        args=(change_id, *args),
        countdown=countdown,
        expires=expires,
        after_commit=after_commit,
    )


# ---------------------------------------------------------------------------------------------
# Transitions


def change_transition(
    *,
    kind: ChangeKind,
    change_id: int,
    from_states: Sequence[str],
    to: str,
    action: str,
    actor: User | None = None,
    message: str = "",
    extra: dict[str, Any] | Callable[[Any], dict[str, Any]] | None = None,
    **fields: Any,
) -> bool:
    """Move a change from one of `from_states` to `to` and write `<kind>.<action>`; False if it moved on.

    `fields` are stored with the state (expressions allowed); a final state releases the claim and
    calls the kind's `on_final`. `extra` (or a function of the updated change) joins the audit payload.
    """
    with transaction.atomic():
        locked = kind.rows().select_for_update().filter(pk=change_id, state__in=from_states).first()
        if locked is None:
            return False
        before = kind.snapshot(kind.load(change_id))
        if to in kind.final_states:
            fields.setdefault("claimed_until", None)
        kind.rows().filter(pk=change_id).update(state=to, **fields)
        change = kind.load(change_id)
        if to in kind.final_states:
            kind.on_final(change)
        payload = extra(change) if callable(extra) else extra
        change_record(
            kind=kind,
            change=change,
            action=f"{kind.name}.{action}",
            actor=actor,
            before=before,
            after=payload,
            message=message,
        )
    return True


def change_fail(
    *,
    kind: ChangeKind,
    change_id: int,
    reason: str,
    extra: dict[str, Any] | None = None,
    **fields: Any,
) -> bool:
    """Mark a change failed before its merge, with a readable reason (`<kind>.failed`)."""
    return change_transition(
        kind=kind,
        change_id=change_id,
        from_states=kind.failable_states,
        to=FAILED,
        action="failed",
        message=reason[:2000],
        extra={"reason": reason[:2000], **(extra or {})},
        failed_at=timezone.now(),
        failure_reason=reason[:4000],
        **fields,
    )


# ---------------------------------------------------------------------------------------------
# Opening the pull request


def change_pr_open(*, kind: ChangeKind, change_id: int, build: Callable[[Any], PullRequestResult]) -> str:
    """Claim a change, build and ensure its PR (`build`), record it; returns what happened.

    Transient errors release the claim and propagate (the task retries with backoff; after
    MAX_PR_ATTEMPTS claims the change fails); `PullRequestPermanent` and `ChangeFailed` fail it;
    a branch that moved off the pushed head goes to `change_head_moved`.
    """
    if not change_claim(kind=kind, change_id=change_id):
        return "not-claimed"
    result = _claimed_run(kind=kind, change_id=change_id, build=build, push=False)
    if isinstance(result, str):
        return result
    return change_pr_record(kind=kind, change_id=change_id, result=result)


def change_branch_push(*, kind: ChangeKind, change_id: int, build: Callable[[Any], BranchResult]) -> str:
    """Push a requested change's branch before any approval (`build`: `branch_ensure`); idempotent.

    Claimed like the PR opening (in the kind's `push_states`), with the same retries and failures.
    The push is recorded by the trust's `confirm_push` (`<kind>.branch_pushed`); a change
    cancelled or rejected meanwhile gets its branch deleted again.
    """
    if not change_claim(kind=kind, change_id=change_id, push=True):
        return "not-claimed"
    result = _claimed_run(kind=kind, change_id=change_id, build=build, push=True)
    if isinstance(result, str):
        return result
    change_release(kind=kind, change_id=change_id, push=True)
    change = kind.load(change_id)
    if change.state in kind.final_states:
        kind.close_pr(change)
        return "closed"
    return "pushed" if result.pushed else "found"


def _claimed_run(*, kind: ChangeKind, change_id: int, build: Callable[[Any], Any], push: bool) -> Any:
    """Run a claimed build; sort its errors (retry, schedule, fail, branch moved) into an outcome."""
    change = kind.load(change_id)
    try:
        return build(change)
    except BranchMoved as exc:
        change_release(kind=kind, change_id=change_id, push=push)
        return change_head_moved(kind=kind, change_id=change_id, moved=exc)
    except PullRequestRetryable as exc:
        retry = kind.retry_fields(str(exc))
        wait = exc.retry_after or 0
        if kind.retry_not_before and wait > settings.CELERY_RETRY_BACKOFF_MAX:
            # Longer than a task may wait: schedule the retry on the row for the sweeper instead of
            # holding (or re-sending) a broker message past its visibility timeout.
            retry[kind.retry_not_before] = timezone.now() + timedelta(seconds=wait)
            change_release(kind=kind, change_id=change_id, push=push, **retry)
            return "scheduled"
        change_release(kind=kind, change_id=change_id, push=push, **retry)
        if change.attempts >= MAX_PR_ATTEMPTS:
            change_fail(
                kind=kind, change_id=change_id, reason=f"gave up after {change.attempts} attempts: {exc}"
            )
            return "failed"
        raise
    except PullRequestPermanent as exc:
        change_fail(kind=kind, change_id=change_id, reason=str(exc))
        return "failed"
    except ChangeFailed as exc:
        change_fail(kind=kind, change_id=change_id, reason=exc.reason, extra=exc.extra, **exc.fields)
        return "failed"


def change_head_moved(*, kind: ChangeKind, change_id: int, moved: BranchMoved) -> str:
    """The branch left the head the portal pushed: invalidate what was given on it, then go on.

    Writes `<kind>.branch_moved` ("approvals invalidated, branch moved from X to Y") with the
    kind's approval invalidation in one transaction. A commit the portal did not make (`foreign`)
    blocks the change as tampered: it fails and its PR and branch are taken down. The portal's own
    different rebuild of a lost branch sends the change back to awaiting approval: the branch is
    pushed afresh and reviewed (and approved) on its new head.
    """
    old, new = moved.old, moved.new
    with transaction.atomic():
        locked = kind.rows().select_for_update().filter(pk=change_id).first()
        if locked is None or locked.state in kind.final_states:
            return "moved-on"
        change = kind.load(change_id)
        before = kind.snapshot(change)
        invalidated, back = kind.on_head_moved(change, old)
        fields: dict[str, Any] = {"claimed_until": None}
        if not moved.foreign:
            fields.update(pushed_head_sha="", pushed_base_sha="", branch_pushed_at=None, **back)
        kind.rows().filter(pk=change_id).update(**fields)
        change = kind.load(change_id)
        what = f"{invalidated} approval(s) invalidated, " if invalidated else "approvals invalidated, "
        change_record(
            kind=kind,
            change=change,
            action=f"{kind.name}.branch_moved",
            before=before,
            after={
                "from_sha": old,
                "to_sha": new,
                "tampered": moved.foreign,
                "approvals_invalidated": invalidated,
                "branch": getattr(change, kind.branch_field, "") if kind.branch_field else "",
            },
            message=f"{what}branch moved from {old[:12]} to {new[:12]}: {moved}"[:2000],
        )
        if not moved.foreign and change.state in kind.push_states:
            change_enqueue_push(kind=kind, change_id=change_id)
        elif not moved.foreign:
            change_enqueue_pr_open(kind=kind, change_id=change_id)
    if moved.foreign:
        change_fail(
            kind=kind,
            change_id=change_id,
            reason=f"blocked as tampered: {moved}",
            extra={"tampered": True, "from_sha": old, "to_sha": new},
        )
        kind.close_pr(kind.load(change_id))
        if kind.status_task:
            # The foreign head is what the forge would merge: the portal's failure goes on it too.
            change_enqueue(task=kind.status_task, args=(change_id, new))
        return "tampered"
    return "invalidated"


def change_branch_trust(*, kind: ChangeKind, change: Any) -> BranchTrust:
    """What the portal made on a change's PR branch: the recorded head, and how to record and move it."""

    def record_push(sha: str, base: str) -> None:
        # Autocommit, before the push: a crash after the push still leaves the row knowing its head.
        rows = kind.rows().filter(pk=change.pk)
        rows.exclude(pushed_head_sha=sha).update(branch_pushed_at=None)
        rows.update(pushed_head_sha=sha, pushed_base_sha=base)
        change.pushed_head_sha, change.pushed_base_sha = sha, base

    def confirm_push(sha: str, pushed: bool) -> None:
        change_branch_pushed(kind=kind, change_id=change.pk, head_sha=sha, pushed=pushed)

    def replace_branch(old: str, reason: str) -> str:
        return change_branch_replace(kind=kind, change_id=change.pk, old=old, reason=reason)

    return BranchTrust(
        pushed_head_sha=change.pushed_head_sha,
        pushed_base_sha=change.pushed_base_sha,
        commit_date=change.requested_at,
        record_push=record_push,
        confirm_push=confirm_push,
        replace_branch=replace_branch,
    )


def change_branch_pushed(*, kind: ChangeKind, change_id: int, head_sha: str, pushed: bool) -> bool:
    """Record that the forge has the change's branch at `head_sha` (`<kind>.branch_pushed`).

    One event per push the portal made (`pushed`), or for a push an earlier, crashed attempt made
    and never confirmed; a reused branch already confirmed writes nothing. Returns True if recorded.
    """
    with transaction.atomic():
        rows = kind.rows().filter(pk=change_id, pushed_head_sha=head_sha)
        if not pushed:
            rows = rows.filter(branch_pushed_at__isnull=True)
        if not rows.update(branch_pushed_at=timezone.now()):
            return False
        change = kind.load(change_id)
        branch = getattr(change, kind.branch_field, "") if kind.branch_field else ""
        change_record(
            kind=kind,
            change=change,
            action=f"{kind.name}.branch_pushed",
            after={
                "branch": branch,
                "head_sha": head_sha,
                "base_sha": change.pushed_base_sha,
                "pushed_now": pushed,
            },
            message=f"branch {branch} pushed at {head_sha[:12]}",
        )
    return True


def change_branch_replace(*, kind: ChangeKind, change_id: int, old: str, reason: str) -> str:
    """Move a change to a fresh, unguessable PR branch and write `<kind>.branch_replaced`; return it."""
    new = branch_name_unguessable(old)
    with transaction.atomic():
        kind.rows().filter(pk=change_id).update(
            **{kind.branch_field: new, "pushed_head_sha": "", "branch_pushed_at": None}
        )
        change = kind.load(change_id)
        change_record(
            kind=kind,
            change=change,
            action=f"{kind.name}.branch_replaced",
            before={"branch": old},
            after={"branch": new, "reason": reason[:500]},
            message=f"{reason}; the portal continues on {new}",
        )
    logger.warning("%s %s: %s; moved to %s", kind.name, change_id, reason, new)
    return new


def change_pr_record(*, kind: ChangeKind, change_id: int, result: PullRequestResult) -> str:
    """Record an opened (or found) PR: `<kind>.pr_opened`, then tracking; a cancelled change closes it."""
    opened = change_transition(
        kind=kind,
        change_id=change_id,
        from_states=kind.claim_states if kind.claiming_state is None else (kind.claiming_state,),
        to=PR_OPEN,
        action="pr_opened",
        message=f"PR #{result.number} "
        + ("opened" if result.created else "found (opened by an earlier attempt)"),
        extra={
            "pr_number": result.number,
            "created": result.created,
            "head_sha": result.head_sha,
            "warnings": list(result.warnings),
        },
        pr_number=result.number,
        pr_url=result.url[:500],
        pr_head_sha=result.head_sha,
        pr_opened_at=timezone.now(),
        claimed_until=None,
        **kind.pr_open_fields,
    )
    if not opened:
        change = kind.load(change_id)
        if change.state not in kind.final_states:
            return "moved-on"
        # Cancelled while we were opening it: take the PR down again.
        kind.rows().filter(pk=change_id).update(pr_number=result.number, pr_url=result.url[:500])
        kind.close_pr(kind.load(change_id))
        return "cancelled"
    change_enqueue_track(kind=kind, change_id=change_id, args=kind.track_args(result))
    return "opened" if result.created else "found"
