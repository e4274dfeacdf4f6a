"""Portal-driven syncs: after the merge, the portal asks Argo CD to sync (`sync: portal` environments).

For an environment configured `sync: portal` (its Argo CD apps have no automated sync), a merged
change is applied by `POST /api/v1/applications/{name}/sync` for every destination app, with the
merge commit as the revision and the environment's sync options. The AppProject's sync windows are
honoured: while a window holds the app back, the change shows "waiting for window, opens at …" and
the sweeper (beat) syncs once it opens; an approver (never the requester) may override a closed
window with a reason. Argo CD stays the judge: inside a deny window without `manualSync` it refuses
the sync (403 `cannot sync: blocked by sync window`) and the page says so.

`change_sync` is idempotent: an app whose current operation already asks for the revision (or that
runs it) is not synced again, and a change whose sync was requested is left to tracking. Argo CD's
errors are sorted (`sync_error_class`): transient ones are retried with backoff until
PORTAL_SYNC_DEADLINE_MINUTES, a refusal (401/403/404/400) gives the sync up at once; a given-up sync
is retried only by a person (`change_sync_retry`). Every state change writes its ledger event
(`<kind>.sync_waiting`, `.sync_requested`, `.sync_error`, `.sync_given_up`, `.sync_retried`,
`.sync_window_overridden`) in the same transaction.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.contrib.auth.models import User
from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.utils import timezone

from accounts.permissions import ensure_role, has_role
from accounts.roles import Role
from audit.services import audit_event_record
from core.syncwindows import SyncWindowError, next_opening, window_assigned
from integrations.argocd import (
    ArgoCDAuthError,
    ArgoCDClient,
    ArgoCDError,
    ArgoCDNotFound,
    ArgoCDPermissionDenied,
    ArgoCDRequestError,
    ArgoCDResponseError,
    ArgoCDUnavailable,
    SyncWindow,
)
from inventory.clients import argocd_client_for
from inventory.config import argocd_sync_options
from inventory.models import ArgoApplication

from .lifecycle import MERGED, ChangeKind, change_enqueue, change_record
from .pullrequests import PullRequestRetryable

logger = logging.getLogger(__name__)

SYNC_WAITING, SYNC_REQUESTED, SYNC_ERROR = "waiting", "requested", "error"
# Given up: Argo CD refused the sync for good, or transient errors outlasted the deadline. Nothing
# retries it until a person does (`change_sync_retry`).
SYNC_FAILED = "failed"
OVERRIDE_MIN_REASON = 10
# A closed window whose opening cannot be computed is asked again this often; a sync Argo CD
# refused inside a sync window is tried again after ERROR_RETRY (the window opens some time);
# transient errors back off from RECHECK to ERROR_RETRY until PORTAL_SYNC_DEADLINE_MINUTES.
RECHECK = timedelta(seconds=60)
ERROR_RETRY = timedelta(minutes=5)
# How Argo CD errors are sorted (API.md §3): try again soon, wait for the window, or give up.
TRANSIENT, WINDOW, PERMANENT = "transient", "window", "permanent"
# Given up although Argo CD never answered: the portal could not tell what to sync (no merge commit, no app).
UNRESOLVED = "unresolved"


class SyncRetryable(PullRequestRetryable):
    """Argo CD is unavailable or busy with another operation: the task retries with backoff."""


class SyncRefused(ValueError):
    """A request the portal refuses (no reason given, nothing waiting)."""


@dataclass(frozen=True)
class WindowVerdict:
    """Whether the sync windows of a change's apps hold it back now, and until when."""

    closed: bool
    opens_at: datetime | None
    detail: str


# ---------------------------------------------------------------------------------------------
# Reads


def change_portal_syncs(*, kind: ChangeKind, change: Any) -> bool:
    """True when the portal, not Argo CD's auto-sync, applies this change after its merge."""
    environment, _apps = kind.sync_scope(change)
    return environment is not None and environment.portal_syncs


def change_sync_rows(*, kind: ChangeKind, change: Any) -> list[ArgoApplication]:
    """The Argo CD apps the change is synced into (one per cluster and app)."""
    environment, apps = kind.sync_scope(change)
    return list(
        ArgoApplication.objects.live()
        .filter(application__in=apps, environment=environment)
        .select_related("instance", "cluster")
        .order_by("name")
    )


def _window_dict(window: SyncWindow) -> dict[str, Any]:
    return {
        "kind": window.kind,
        "schedule": window.schedule,
        "duration": window.duration,
        "applications": list(window.applications),
        "namespaces": list(window.namespaces),
        "clusters": list(window.clusters),
        "manualSync": window.manual_sync,
        "timeZone": window.time_zone or "",
    }


def _app_windows(client: ArgoCDClient, row: ArgoApplication, assigned: tuple[SyncWindow, ...]) -> list[Any]:
    """The app's windows in full (the AppProject's, with time zones), else the app endpoint's."""
    try:
        project = client.get_project(row.project)
    except ArgoCDError:
        # A project-role token may not read the AppProject: the app's own view (no time zone: UTC).
        return [_window_dict(w) for w in assigned]
    cluster = row.cluster.name if row.cluster else ""
    server = row.cluster.server if row.cluster else ""
    return [
        w
        for w in map(_window_dict, project.sync_windows)
        if window_assigned(w, app=row.name, namespace=row.namespace, cluster=cluster, server=server)
    ]


def change_sync_windows(rows: list[ArgoApplication], *, now: datetime | None = None) -> WindowVerdict:
    """Ask Argo CD whether the windows of `rows` allow a sync now; compute when a closed one opens.

    A sync is held back while a deny window is active (even one allowing manual syncs: that is
    for overrides) or while allow windows are assigned but none is active.
    """
    now = now or timezone.now()
    clients: dict[int, ArgoCDClient] = {}
    closed: list[str] = []
    openings: list[datetime | None] = []
    for row in rows:
        client = clients.setdefault(row.instance_id, argocd_client_for(row.instance))
        try:
            state = client.application_sync_windows(row.name)
        except ArgoCDUnavailable as exc:
            raise SyncRetryable(f"cannot read the sync windows of {row.name}: {exc}") from None
        denying = [w for w in state.active if w.kind == "deny"]
        allows = [w for w in state.assigned if w.kind == "allow"]
        if not denying and (not allows or any(w.kind == "allow" for w in state.active)):
            continue
        held = denying or allows
        closed.append(f"{row.name}: " + ", ".join(f"{w.kind} {w.schedule} for {w.duration}" for w in held))
        try:
            openings.append(next_opening(_app_windows(client, row, state.assigned), now))
        except SyncWindowError as exc:
            logger.warning("sync windows of %s: %s", row.name, exc)
            openings.append(None)
    if not closed:
        return WindowVerdict(False, None, "sync windows allow a sync now")
    known = [o for o in openings if o is not None]
    opens_at = max(known) if known and len(known) == len(openings) else None
    return WindowVerdict(True, opens_at, "; ".join(closed))


def sync_error_class(exc: ArgoCDError) -> str:
    """Sort an Argo CD error of a sync: TRANSIENT, WINDOW or PERMANENT (API.md §3).

    Transient: unreachable, timeouts, 5xx and 429 (`ArgoCDUnavailable`), a garbled answer, and the
    one 400 that passes (FailedPrecondition "another operation is already in progress"). WINDOW: a
    403 "blocked by sync window", which ends when the window opens. Everything else Argo CD says
    is its final word for this request: 401 (token), 403 (RBAC, or an app not visible), 404 (app
    gone), 400 (invalid argument, the app auto-syncs or is being deleted), 415.
    """
    message = str(exc)
    if isinstance(exc, ArgoCDUnavailable | ArgoCDResponseError):
        return TRANSIENT
    if isinstance(exc, ArgoCDRequestError) and "another operation is already in progress" in message:
        return TRANSIENT
    if isinstance(exc, ArgoCDPermissionDenied) and "sync window" in message:
        return WINDOW
    return PERMANENT


def _explain(name: str, exc: ArgoCDError) -> str:
    """Argo CD's answer for one app, with what a person can do about it."""
    message = str(exc)
    if isinstance(exc, ArgoCDRequestError) and "auto-sync" in message:
        hint = "the app auto-syncs: turn its automated sync off, or configure the environment `sync: argocd`"
        return f"{name}: {message} ({hint})"
    if isinstance(exc, ArgoCDPermissionDenied):
        if "sync window" in message:
            return f"{name}: Argo CD refused the sync inside a sync window ({message})"
        return f"{name}: {message} (the token needs `applications, sync` on the project)"
    if isinstance(exc, ArgoCDNotFound):
        return f"{name}: {message} (the application is gone from Argo CD)"
    if isinstance(exc, ArgoCDAuthError):
        return f"{name}: {message} (the portal's Argo CD token is missing, expired or invalid)"
    return f"{name}: {message}"


def _deadline() -> timedelta:
    return timedelta(minutes=settings.PORTAL_SYNC_DEADLINE_MINUTES)


def _already(client: ArgoCDClient, name: str, revision: str) -> bool:
    """True when the app's pending or current operation asks for `revision`, or it runs it."""
    live = client.get_application(name)
    if live.operation_revision == revision:
        return True
    return live.sync_status == "Synced" and revision in (live.sync_revision, *live.sync_revisions)


# ---------------------------------------------------------------------------------------------
# The sync


def change_sync(*, kind: ChangeKind, change_id: int, now: datetime | None = None) -> str:
    """Sync a merged change's Argo CD apps to its merge commit, in their sync windows.

    Returns what happened: "skipped" (not a portal sync, not merged), "requested" (now or
    before), "waiting" (a window is closed) or "error" (Argo CD refused; shown on the page).
    Raises SyncRetryable on transient errors (the task retries with backoff).
    """
    now = now or timezone.now()
    change = kind.load(change_id)
    environment, _apps = kind.sync_scope(change)
    if change.state != MERGED or environment is None or not environment.portal_syncs:
        return "skipped"
    if change.sync_state == SYNC_REQUESTED:
        return "requested"
    if change.sync_state == SYNC_FAILED:
        return "failed"  # given up: only a person's retry (`change_sync_retry`) starts it again
    revision = change.merge_commit_sha
    rows = change_sync_rows(kind=kind, change=change)
    if not revision or not rows:
        missing = "the merge commit is unknown" if not revision else "no Argo CD application is known"
        return _unresolved(kind=kind, change=change, detail=f"cannot sync: {missing}", now=now)
    overridden = change.sync_override_at is not None or bool(getattr(change, "override_sync_window", False))
    if not overridden:
        try:
            verdict = change_sync_windows(rows, now=now)
        except SyncRetryable as exc:
            return _transient(kind=kind, change=change, detail=str(exc), now=now)
        except ArgoCDError as exc:
            detail = f"Argo CD refused to show the sync windows: {exc}"
            if sync_error_class(exc) == TRANSIENT:
                return _transient(kind=kind, change=change, detail=detail, now=now)
            _record_given_up(kind=kind, change=change, detail=detail, now=now, reason=PERMANENT)
            return "failed"
        if verdict.closed:
            _record_waiting(kind=kind, change=change, verdict=verdict, now=now)
            return "waiting"
    options = dict(environment.sync_options or {})
    sync_options = argocd_sync_options(options)
    clients: dict[int, ArgoCDClient] = {}
    outcomes = dict(change.sync_apps or {})
    errors: list[str] = []  # refused inside a sync window: tried again when it may have opened
    transient: list[str] = []
    permanent: list[str] = []
    for row in rows:
        if outcomes.get(row.name, {}).get("revision") == revision:
            continue
        client = clients.setdefault(row.instance_id, argocd_client_for(row.instance))
        try:
            if _already(client, row.name, revision):
                outcome = "already"
            else:
                client.sync(
                    row.name,
                    revision=revision,
                    prune=bool(options.get("prune")),
                    project=row.project or None,
                    sync_options=sync_options,
                )
                outcome = "requested"
        except ArgoCDError as exc:
            sorted_into = {TRANSIENT: transient, WINDOW: errors, PERMANENT: permanent}
            sorted_into[sync_error_class(exc)].append(_explain(row.name, exc))
            continue
        outcomes[row.name] = {"revision": revision, "requested_at": now.isoformat(), "outcome": outcome}
        # Recorded per app at once (autocommit): a retry after a crash does not sync it twice.
        kind.rows().filter(pk=change.pk).update(sync_apps=outcomes)
    if permanent:
        # Retrying cannot help (apps already accepted are recorded in sync_apps: a person's retry
        # does not sync them twice).
        detail = "Argo CD refused the sync: " + "; ".join(permanent + errors + transient)
        _record_given_up(kind=kind, change=change, detail=detail, now=now, reason=PERMANENT)
        return "failed"
    if transient:
        return _transient(
            kind=kind,
            change=change,
            detail="Argo CD did not accept the sync: " + "; ".join(errors + transient),
            now=now,
        )
    if errors:
        detail = "Argo CD did not accept the sync: " + "; ".join(errors)
        _record_error(kind=kind, change=change, detail=detail, now=now)
        return "error"
    _record_requested(kind=kind, change=change, revision=revision, outcomes=outcomes, now=now)
    return "requested"


def _transient(*, kind: ChangeKind, change: Any, detail: str, now: datetime) -> str:
    """A transient failure: record it and raise SyncRetryable (the task backs off), unless the
    transient errors have lasted past PORTAL_SYNC_DEADLINE_MINUTES: then give up like a refusal."""
    since = change.sync_error_since
    if since is not None and now - since >= _deadline():
        minutes = settings.PORTAL_SYNC_DEADLINE_MINUTES
        given_up = f"gave up after {minutes} min of transient errors: {detail}"
        _record_given_up(kind=kind, change=change, detail=given_up, now=now, reason=TRANSIENT)
        return "failed"
    _record_error(kind=kind, change=change, detail=detail, now=now, transient=True)
    raise SyncRetryable(detail)


def _unresolved(*, kind: ChangeKind, change: Any, detail: str, now: datetime) -> str:
    """Nothing to ask Argo CD yet (no merge commit, no Argo CD app observed): not an Argo CD error,
    but no retry forever either. Asked again with backoff (the poller may observe the app) and given
    up like a transient error once PORTAL_SYNC_DEADLINE_MINUTES have passed since the first time."""
    since = change.sync_error_since
    if since is not None and now - since >= _deadline():
        given_up = f"gave up after {settings.PORTAL_SYNC_DEADLINE_MINUTES} min: {detail}"
        _record_given_up(kind=kind, change=change, detail=given_up, now=now, reason=UNRESOLVED)
        return "failed"
    _record_error(kind=kind, change=change, detail=detail, now=now, transient=True)
    return "error"


def _transition(kind: ChangeKind, change_id: int) -> Any | None:
    """Lock a merged change for a sync bookkeeping update (None once it moved on)."""
    locked = kind.rows().select_for_update().filter(pk=change_id, state=MERGED).first()
    return kind.load(change_id) if locked is not None else None


def _record_waiting(*, kind: ChangeKind, change: Any, verdict: WindowVerdict, now: datetime) -> None:
    opens = f"opens at {verdict.opens_at:%Y-%m-%d %H:%M} UTC" if verdict.opens_at else "opening time unknown"
    message = f"waiting for window, {opens} (closed by {verdict.detail})"
    with transaction.atomic():
        current = _transition(kind, change.pk)
        if current is None:
            return
        news = current.sync_state != SYNC_WAITING or current.sync_opens_at != verdict.opens_at
        next_at = verdict.opens_at if verdict.opens_at and verdict.opens_at > now else now + RECHECK
        kind.rows().filter(pk=change.pk).update(
            sync_state=SYNC_WAITING,
            sync_opens_at=verdict.opens_at,
            sync_next_at=next_at,
            sync_detail=f"closed by {verdict.detail}"[:2000],
            sync_revision=current.merge_commit_sha,
            sync_error_since=None,  # Argo CD answered: a later transient error starts a new deadline
        )
        if news:
            change_record(
                kind=kind,
                change=kind.load(change.pk),
                action=f"{kind.name}.sync_waiting",
                before={"sync_state": current.sync_state},
                after={
                    "opens_at": verdict.opens_at.isoformat() if verdict.opens_at else None,
                    "windows": verdict.detail[:1000],
                },
                message=message[:2000],
            )
    _enqueue_at(kind=kind, change_id=change.pk, at=next_at, now=now)


def _record_error(
    *, kind: ChangeKind, change: Any, detail: str, now: datetime, transient: bool = False
) -> None:
    with transaction.atomic():
        current = _transition(kind, change.pk)
        if current is None or current.sync_state == SYNC_FAILED:
            return
        news = current.sync_detail != detail[:2000]
        since = current.sync_error_since
        if transient:
            since = since or now
            # Backoff for the sweeper: as long again as the errors have lasted, RECHECK to ERROR_RETRY.
            wait = min(max(now - since, RECHECK), ERROR_RETRY)
        else:
            wait = ERROR_RETRY
        kind.rows().filter(pk=change.pk).update(
            sync_state=SYNC_ERROR,
            sync_detail=detail[:2000],
            sync_attempts=current.sync_attempts + 1,
            sync_next_at=now + wait,
            sync_error_since=since,
        )
        if news:
            change_record(
                kind=kind,
                change=kind.load(change.pk),
                action=f"{kind.name}.sync_error",
                after={"error": detail[:2000]},
                message=detail[:2000],
            )


def _record_given_up(*, kind: ChangeKind, change: Any, detail: str, now: datetime, reason: str) -> None:
    """Stop retrying: the sync is failed with Argo CD's message (`<kind>.sync_given_up`, same
    transaction); the change stays merged and its page offers a retry to who may ask for it."""
    with transaction.atomic():
        current = _transition(kind, change.pk)
        if current is None or current.sync_state in (SYNC_FAILED, SYNC_REQUESTED):
            return
        kind.rows().filter(pk=change.pk).update(
            sync_state=SYNC_FAILED,
            sync_detail=detail[:2000],
            sync_attempts=current.sync_attempts + 1,
            sync_next_at=None,
            sync_error_since=None,
        )
        change_record(
            kind=kind,
            change=kind.load(change.pk),
            action=f"{kind.name}.sync_given_up",
            before={"sync_state": current.sync_state},
            after={"error": detail[:2000], "reason": reason, "attempts": current.sync_attempts + 1},
            message=detail[:2000],
        )
    logger.warning("%s %s: sync given up (%s): %s", kind.name, change.pk, reason, detail[:300])


def _record_requested(
    *, kind: ChangeKind, change: Any, revision: str, outcomes: dict[str, Any], now: datetime
) -> None:
    environment, _apps = kind.sync_scope(change)
    options = dict(environment.sync_options or {})
    with transaction.atomic():
        current = _transition(kind, change.pk)
        if current is None or current.sync_state == SYNC_REQUESTED:
            return
        kind.rows().filter(pk=change.pk).update(
            sync_state=SYNC_REQUESTED,
            sync_revision=revision,
            sync_requested_at=now,
            sync_next_at=None,
            sync_detail="",
            sync_apps=outcomes,
            sync_error_since=None,
        )
        apps = [{"app": name, **value} for name, value in sorted(outcomes.items())]
        change_record(
            kind=kind,
            change=kind.load(change.pk),
            action=f"{kind.name}.sync_requested",
            before={"sync_state": current.sync_state},
            after={
                "revision": revision,
                "apps": apps,
                "prune": bool(options.get("prune")),
                "sync_options": list(argocd_sync_options(options)),
                "override": current.sync_override_reason
                or getattr(current, "override_justification", "")
                or None,
            },
            message=f"sync of {revision[:12]} requested for {', '.join(sorted(outcomes))}",
        )
    change_enqueue(task=kind.track_task, args=(change.pk,))


def _enqueue_at(*, kind: ChangeKind, change_id: int, at: datetime, now: datetime) -> None:
    """Send the sync task when the window opens, if that is soon (the sweeper covers the rest)."""
    wait = (at - now).total_seconds()
    if kind.sync_task and 0 < wait <= settings.CELERY_RETRY_BACKOFF_MAX:
        change_enqueue(task=kind.sync_task, args=(change_id,), countdown=wait + 1)


# ---------------------------------------------------------------------------------------------
# Tracking, sweeping and overrides


def change_sync_hold(*, kind: ChangeKind, change: Any) -> bool:
    """Called by tracking for a merged change: True while the portal has not requested its sync yet
    (tracking then neither judges the deployment nor times it out); starts the sync on first sight."""
    if change.state != MERGED or not change_portal_syncs(kind=kind, change=change):
        return False
    if change.sync_state == SYNC_REQUESTED:
        return False
    if not change.sync_state and kind.sync_task:
        change_enqueue(task=kind.sync_task, args=(change.pk,))
    return True


def change_syncs_due(*, kind: ChangeKind, now: datetime | None = None) -> int:
    """Enqueue the sync of merged changes whose window opened or whose retry is due (beat)."""
    if not kind.sync_task:
        return 0
    now = now or timezone.now()
    due = list(
        kind.rows()
        .filter(state=MERGED, sync_state__in=(SYNC_WAITING, SYNC_ERROR), sync_next_at__lte=now)
        .values_list("pk", flat=True)[:200]
    )
    for pk in due:
        change_enqueue(
            task=kind.sync_task, args=(pk,), expires=settings.SWEEP_EXPIRES_SECONDS, after_commit=False
        )
    return len(due)


def change_sync_may_override(*, kind: ChangeKind, change: Any, actor: User) -> bool:
    """Tell whether `actor` may override the closed window of this change (approver, not requester)."""
    try:
        _check_override(kind=kind, change=change, actor=actor, record=False)
    except PermissionDenied:
        return False
    return True


def _check_override(*, kind: ChangeKind, change: Any, actor: User, record: bool) -> None:
    environment, apps = kind.sync_scope(change)
    for project in sorted({a.project for a in apps}):
        ensure_role(actor, Role.APPROVER, project=project, environment=environment.name)
    if change.requested_by_id is not None and actor.pk == change.requested_by_id:
        message = f"four-eyes: the requester cannot override the sync window of their own {kind.name}"
        if record:
            audit_event_record(
                action="auth.denied",
                actor=actor,
                target_type=kind.name,
                target_id=change.pk,
                environment=environment.name,
                message=message,
                correlation_id=change.correlation_id or None,
            )
        raise PermissionDenied(message)


def change_sync_override(*, kind: ChangeKind, change_id: int, actor: User, reason: str) -> Any:
    """Override a closed sync window: an approver (never the requester) with a written reason.

    Writes `<kind>.sync_window_overridden` and sends the sync; Argo CD may still refuse it inside a
    deny window that does not allow manual syncs (the page then shows its answer).
    """
    change = kind.load(change_id)
    _check_override(kind=kind, change=change, actor=actor, record=True)
    reason = (reason or "").strip()
    if len(reason) < OVERRIDE_MIN_REASON:
        raise SyncRefused(f"an override needs a written reason (at least {OVERRIDE_MIN_REASON} characters)")
    now = timezone.now()
    with transaction.atomic():
        current = _transition(kind, change_id)
        if current is None or current.sync_state not in (SYNC_WAITING, SYNC_ERROR):
            raise SyncRefused("no sync is waiting for a window")
        kind.rows().filter(pk=change_id).update(
            sync_override_by=actor.get_username()[:150],
            sync_override_reason=reason[:2000],
            sync_override_at=now,
            sync_next_at=now,
        )
        change_record(
            kind=kind,
            change=kind.load(change_id),
            action=f"{kind.name}.sync_window_overridden",
            actor=actor,
            before={"sync_state": current.sync_state},
            after={
                "reason": reason[:2000],
                "opens_at": current.sync_opens_at.isoformat() if current.sync_opens_at else None,
            },
            message=f"sync window overridden: {reason[:500]}",
        )
        if kind.sync_task:
            change_enqueue(task=kind.sync_task, args=(change_id,))
    return kind.load(change_id)


def change_sync_may_retry(*, kind: ChangeKind, change: Any, actor: User, roles: tuple[str, ...]) -> bool:
    """Tell whether `actor` may retry this change's failed sync (one of `roles` for every app)."""
    environment, apps = kind.sync_scope(change)
    if environment is None or not getattr(actor, "is_authenticated", False):
        return False
    return all(
        any(has_role(actor, role, project=project, environment=environment.name) for role in roles)
        for project in {a.project for a in apps}
    )


def change_sync_retry(*, kind: ChangeKind, change_id: int, actor: User, roles: tuple[str, ...]) -> Any:
    """A person asks for a failed sync again: one of `roles` (the kind's own requesters and
    approvers) for the change's projects and environment. Writes `<kind>.sync_retried` with the
    error it follows and sends the sync at once; a new deadline starts."""
    change = kind.load(change_id)
    if not change_sync_may_retry(kind=kind, change=change, actor=actor, roles=roles):
        environment, apps = kind.sync_scope(change)
        for project in sorted({a.project for a in apps}):
            ensure_role(
                actor, roles[0], project=project, environment=environment.name if environment else None
            )
        raise PermissionDenied("you may not retry this sync")
    now = timezone.now()
    with transaction.atomic():
        current = _transition(kind, change_id)
        if current is None or current.sync_state != SYNC_FAILED:
            raise SyncRefused("the sync has not failed: nothing to retry")
        kind.rows().filter(pk=change_id).update(
            sync_state=SYNC_ERROR, sync_next_at=now, sync_error_since=None
        )
        change_record(
            kind=kind,
            change=kind.load(change_id),
            action=f"{kind.name}.sync_retried",
            actor=actor,
            before={"sync_state": SYNC_FAILED, "error": current.sync_detail[:2000]},
            after={"sync_state": SYNC_ERROR},
            message=f"sync retried after: {current.sync_detail[:500]}",
        )
        if kind.sync_task:
            change_enqueue(task=kind.sync_task, args=(change_id,))
    return kind.load(change_id)
