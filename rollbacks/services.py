"""Rollback services: request, open the revert PR, auto-merge in emergencies, track, cancel.

State machine (every transition writes its `rollback.*` audit event in the same transaction, and for
production-like environments updates the change record):

    requested ─PR→ pr_open ─merge→ merged ─Argo CD runs it→ deployed ─Healthy→ healthy
        │              │ └→ (emergency: auto_merged once checks pass)
        └→ failed      └→ cancelled (by a user, or the PR was closed on the forge)
    merged → failed: the Argo CD sync of the revert failed, or it is not deployed after
    PROMOTION_DEPLOY_TIMEOUT_MINUTES; deployed → failed: not Healthy after that long.

Network work (git, forge) never runs inside a database transaction: a task claims the row with a
conditional update, does the remote work, then records the outcome atomically.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import transaction
from django.db.models import F, Q
from django.urls import reverse
from django.utils import timezone

from accounts.permissions import ensure_role
from accounts.roles import Role
from audit.services import audit_event_record, change_record_sync
from gitopsportal.durations import format_duration
from gitopsportal.logging import current_request_id
from integrations.gitrepo import GitError, GitWorkspace, InvalidRef, RevertConflict
from inventory.models import Application, Environment
from promotions.pullrequests import (
    PullRequestError,
    PullRequestPermanent,
    PullRequestRetryable,
    PullRequestSpec,
    pull_request_close_and_delete_branch,
    pull_request_ensure,
    pull_request_merge_when_checks_pass,
    pull_request_refresh,
)

from . import history
from .models import RollbackRequest
from .selectors import RollbackPlan, degraded_since, env_argo_apps, moved_on_warnings, rollback_plan

logger = logging.getLogger(__name__)

State = RollbackRequest.State
MAX_REASON = 4000
MAX_INCIDENT = 500
MAX_TITLE = 200


class RollbackRefused(ValidationError):
    """The rollback cannot be requested (bad input, not in history, conflicting request...)."""


class RollbackNeedsConfirmation(ValidationError):
    """The environment moved on since the form was opened (or a promotion is in flight)."""

    def __init__(self, warnings: list[str], plan: RollbackPlan) -> None:
        super().__init__(warnings, code="confirm")
        self.warnings = warnings
        self.plan = plan


# ---------------------------------------------------------------------------------------------
# Permissions


def rollback_check_permission(
    *, user: Any, application: Application, environment: Environment, request: Any = None
) -> None:
    """Raise PermissionDenied unless the user is on call for this app's project and environment."""
    ensure_role(user, Role.ONCALL, project=application.project, environment=environment.name, request=request)


# ---------------------------------------------------------------------------------------------
# Audit


def _record(
    rollback: RollbackRequest,
    action: str,
    *,
    actor: Any = None,
    message: str = "",
    before: Any = None,
    after: Any = None,
) -> None:
    """Write the audit event of a transition, and the change record for production-like envs."""
    audit_event_record(
        action=f"rollback.{action}",
        actor=actor,
        target_type="rollback",
        target_id=rollback.pk,
        target_label=f"rollback #{rollback.pk} of {rollback.application.name} in {rollback.environment.name}",
        app=rollback.application.name,
        environment=rollback.environment.name,
        shas=list(rollback.revert_shas),
        pr_url=rollback.pr_url,
        before=before,
        after=after,
        message=message,
        correlation_id=rollback.correlation_id or None,
        system_name=None if actor is not None else "rollbacks",
    )
    if rollback.environment.production_like:
        _change_record(rollback)


def _change_record(rollback: RollbackRequest) -> None:
    outcome = {
        State.HEALTHY: "succeeded",
        State.FAILED: "failed",
        State.CANCELLED: "abandoned",
    }.get(rollback.state, "pending")
    clusters = [
        a.cluster.name for a in env_argo_apps(rollback.application, rollback.environment) if a.cluster
    ]
    change_record_sync(
        kind="rollback",
        source_type="rollback",
        source_id=rollback.pk,
        app=rollback.application.name,
        environment=rollback.environment.name,
        project=rollback.application.project,
        title=_pr_title(rollback),
        requester_name=rollback.requested_by_name,
        pr_number=rollback.pr_number,
        pr_url=rollback.pr_url,
        revision_before=rollback.current_revision,
        revision_after=rollback.merge_commit_sha,
        versions_before={"image": rollback.current_version} if rollback.current_version else {},
        versions_after={"image": rollback.expected_version} if rollback.expected_version else {},
        requested_at=rollback.requested_at,
        pr_opened_at=rollback.pr_opened_at,
        merged_at=rollback.merged_at,
        deployed_at=rollback.deployed_at,
        healthy_at=rollback.healthy_at,
        outcome=outcome,
        emergency=rollback.emergency,
        justification=rollback.emergency_justification,
        clusters=clusters,
    )


def _snapshot(rollback: RollbackRequest) -> dict[str, Any]:
    return {
        "state": rollback.state,
        "pr_number": rollback.pr_number,
        "merge_commit_sha": rollback.merge_commit_sha,
    }


# ---------------------------------------------------------------------------------------------
# Request


def _clean_text(value: str, *, limit: int, name: str, required: bool) -> str:
    text = (value or "").replace("\r\n", "\n").strip()
    text = "".join(ch for ch in text if ch in "\n\t" or ord(ch) >= 0x20)
    if required and not text:
        raise RollbackRefused(f"{name} is required", code="required")
    if len(text) > limit:
        raise RollbackRefused(f"{name} is too long (at most {limit} characters)", code="too_long")
    return text


def rollback_request_create(
    *,
    actor: Any,
    application: Application,
    environment: Environment,
    mode: str,
    reason: str,
    incident: str = "",
    sha: str = "",
    observed_deployment_id: int | None = None,
    confirm_moved: bool = False,
    emergency: bool = False,
    emergency_justification: str = "",
    request: Any = None,
) -> RollbackRequest:
    """Check, plan and record a rollback request, then enqueue the task that opens its PR.

    The plan reads Git (fetch), so it is computed before the transaction that writes the row.
    """
    rollback_check_permission(user=actor, application=application, environment=environment, request=request)
    reason = _clean_text(reason, limit=MAX_REASON, name="a reason", required=True)
    incident = _clean_text(incident, limit=MAX_INCIDENT, name="the incident reference", required=False)
    if "\n" in incident:
        raise RollbackRefused("the incident reference must be one line", code="invalid")
    justification = _clean_text(
        emergency_justification, limit=MAX_REASON, name="the justification", required=False
    )
    if emergency:
        if not environment.rollback_auto_merge:
            raise RollbackRefused(
                f"automatic merge of rollbacks is not enabled for {environment.name}", code="emergency"
            )
        if not justification:
            raise RollbackRefused("an emergency merge needs a justification", code="required")

    plan = rollback_plan(application=application, environment=environment, mode=mode, sha=sha)
    if plan.errors:
        raise RollbackRefused(plan.errors, code="refused")
    moved = moved_on_warnings(plan, observed_deployment_id)
    if moved and not confirm_moved:
        raise RollbackNeedsConfirmation(moved, plan)
    return _rollback_insert(
        actor=actor,
        plan=plan,
        reason=reason,
        incident=incident,
        emergency=emergency,
        justification=justification if emergency else "",
        confirmed=moved,
    )


@transaction.atomic
def _rollback_insert(
    *,
    actor: Any,
    plan: RollbackPlan,
    reason: str,
    incident: str,
    emergency: bool,
    justification: str,
    confirmed: list[str],
) -> RollbackRequest:
    # Serialise requests for one app and env: the check-then-insert below must not race.
    Application.objects.select_for_update().filter(pk=plan.application.pk).first()
    active = RollbackRequest.objects.active().for_app_env(plan.application.pk, plan.environment.pk).first()
    if active is not None:
        raise RollbackRefused(f"rollback #{active.pk} of this app in this environment is still in progress")
    rollback = RollbackRequest.objects.create(
        application=plan.application,
        environment=plan.environment,
        mode=plan.mode,
        requested_by=actor,
        requested_by_name=actor.get_username(),
        reason=reason,
        incident=incident,
        correlation_id=(current_request_id() or "")[:64],
        base_branch=plan.base_branch,
        current_revision=plan.current_revision,
        current_version=plan.current_version,
        target_revision=plan.target_revision,
        expected_version=plan.expected_version,
        observed_deployment_id=plan.observed_deployment_id,
        revert_shas=plan.revert_shas,
        paths=plan.paths,
        emergency=emergency,
        emergency_justification=justification,
        degraded_since=degraded_since(plan.application, plan.environment),
    )
    rollback.branch = rollback.branch_name
    rollback.save(update_fields=["branch"])
    after = {
        "mode": rollback.mode,
        "reason": reason,
        "incident": incident,
        "current_revision": rollback.current_revision,
        "current_version": rollback.current_version,
        "expected_version": rollback.expected_version,
        "emergency": emergency,
        "justification": justification,
        "confirmed_warnings": confirmed,
    }
    _record(rollback, "requested", actor=actor, after=after, message=reason)
    transaction.on_commit(lambda: _enqueue_pr_open(rollback.pk))
    return rollback


def _enqueue_pr_open(rollback_id: int) -> None:
    from .tasks import rollback_pr_open_task

    rollback_pr_open_task.delay(rollback_id)


def _enqueue_track(rollback_id: int, countdown: float = 0, expires: float | None = None) -> None:
    from .tasks import rollback_track_task

    rollback_track_task.apply_async((rollback_id,), countdown=countdown, expires=expires)


# ---------------------------------------------------------------------------------------------
# PR


def rollback_url(rollback: RollbackRequest) -> str:
    return settings.PORTAL_BASE_URL.rstrip("/") + reverse("rollbacks:detail", args=[rollback.pk])


def _pr_title(rollback: RollbackRequest) -> str:
    app, env = rollback.application.name, rollback.environment.name
    if rollback.mode == RollbackRequest.Mode.PREVIOUS:
        versions = (
            f" ({rollback.current_version} → {rollback.expected_version})"
            if rollback.expected_version
            else ""
        )
        title = f"Revert {app} in {env} to the previous deployment{versions}"
    else:
        sha = rollback.revert_shas[0][:8] if rollback.revert_shas else ""
        title = f"Revert {sha} in {env} for {app}"
    return title[:MAX_TITLE]


def _quote(text: str) -> str:
    return "\n".join(f"> {line}" for line in text.splitlines()) or "> —"


def _pr_body(rollback: RollbackRequest) -> str:
    lines = [
        f"Rollback #{rollback.pk} of **{rollback.application.name}** in **{rollback.environment.name}**, "
        f"requested by {rollback.requested_by_name} through the GitOps Portal.",
        "",
        "**Reason**",
        "",
        _quote(rollback.reason),
        "",
        f"**Incident:** {rollback.incident or '—'}",
        "",
        f"**Runs now:** `{rollback.current_revision[:12]}` ({rollback.current_version or 'unknown version'})",
        f"**After the rollback:** {rollback.expected_version or 'unchanged version'}",
        "",
        "**Reverted commits** (newest first):",
        "",
        *[f"- {sha}" for sha in rollback.revert_shas],
        "",
    ]
    if rollback.emergency:
        lines += [
            "**Emergency:** the portal merges this PR once the required checks pass.",
            "",
            "Justification:",
            "",
            _quote(rollback.emergency_justification),
            "",
        ]
    lines.append(f"Details and live status: {rollback_url(rollback)}")
    return "\n".join(lines)


def _claim(rollback_id: int, state: str) -> bool:
    now = timezone.now()
    lease = now + timedelta(seconds=settings.CELERY_TASK_TIME_LIMIT + 60)
    claimed = (
        RollbackRequest.objects.filter(pk=rollback_id, state=state)
        .filter(Q(claimed_until__isnull=True) | Q(claimed_until__lt=now))
        .update(claimed_until=lease, attempts=F("attempts") + 1)
    )
    return claimed == 1


def _release(rollback_id: int) -> None:
    RollbackRequest.objects.filter(pk=rollback_id).update(claimed_until=None)


def rollback_pr_open(*, rollback_id: int) -> RollbackRequest | None:
    """Revert the commits on the rollback branch, push it and open the PR (idempotent).

    Raises PullRequestRetryable for transient failures (the task retries); permanent failures and
    revert conflicts mark the rollback failed. Returns None when another worker holds the row.
    """
    if not _claim(rollback_id, State.REQUESTED):
        return None
    rollback = RollbackRequest.objects.select_related("application__repository", "environment").get(
        pk=rollback_id
    )
    repository = rollback.application.repository
    if repository is None:
        return _fail(rollback, "the application has no Git repository configured")
    spec = PullRequestSpec(
        repository=repository,
        branch=rollback.branch or rollback.branch_name,
        base=rollback.base_branch,
        title=_pr_title(rollback),
        body=_pr_body(rollback),
        labels=("rollback",),
    )
    trailers = {"Rollback-Id": str(rollback.pk), "Requested-By": rollback.requested_by_name}

    def prepare(ws: GitWorkspace) -> str | None:
        created = ws.revert(rollback.revert_shas, mainline_for_merges=True, trailers=trailers)
        return created[-1] if created else None

    try:
        result = pull_request_ensure(spec=spec, prepare_branch=prepare)
    except RevertConflict as exc:
        return _fail(
            rollback,
            f"reverting {exc.sha[:8]} conflicts with later changes on {rollback.base_branch}; nothing was pushed",
            conflict_files=list(exc.files),
        )
    except (GitError, InvalidRef) as exc:
        # Local revert errors (e.g. "produced no change: already reverted?") are permanent.
        return _fail(rollback, f"the revert failed, nothing was pushed: {exc}")
    except PullRequestPermanent as exc:
        return _fail(rollback, str(exc))
    except PullRequestRetryable:
        _release(rollback_id)
        raise
    return _mark_pr_open(rollback_id, result)


@transaction.atomic
def _mark_pr_open(rollback_id: int, result: Any) -> RollbackRequest:
    rollback = (
        RollbackRequest.objects.select_for_update(of=("self",))
        .select_related("application__repository", "environment")
        .get(pk=rollback_id)
    )
    if rollback.state == State.CANCELLED:
        # Cancelled while the PR was being opened: close what we just opened.
        transaction.on_commit(lambda: _close_quietly(rollback))
        return rollback
    if rollback.state != State.REQUESTED:
        return rollback
    before = _snapshot(rollback)
    rollback.state = State.PR_OPEN
    rollback.pr_number = result.number
    rollback.pr_url = result.url
    rollback.pr_head_sha = result.head_sha
    rollback.pr_opened_at = timezone.now()
    rollback.claimed_until = None
    rollback.tracking_detail = "waiting for the pull request to be merged"
    rollback.save()
    message = "pull request opened" if result.created else "pull request found (opened by an earlier attempt)"
    _record(rollback, "pr_opened", before=before, after=_snapshot(rollback), message=message)
    transaction.on_commit(lambda: _enqueue_track(rollback.pk))
    return rollback


def _close_quietly(rollback: RollbackRequest) -> None:
    try:
        pull_request_close_and_delete_branch(
            repository=rollback.application.repository,
            number=rollback.pr_number,
            branch=rollback.branch,
            comment="This rollback was cancelled in the GitOps Portal.",
        )
    except PullRequestError as exc:
        logger.warning("closing the PR of cancelled rollback %s failed: %s", rollback.pk, exc)


@transaction.atomic
def _fail(
    rollback: RollbackRequest, reason: str, *, conflict_files: list[str] | None = None
) -> RollbackRequest:
    rollback = (
        RollbackRequest.objects.select_for_update(of=("self",))
        .select_related("application", "environment")
        .get(pk=rollback.pk)
    )
    if rollback.is_terminal:
        return rollback
    before = _snapshot(rollback)
    rollback.state = State.FAILED
    rollback.failed_at = timezone.now()
    rollback.failure_reason = reason
    rollback.conflict_files = conflict_files or []
    rollback.claimed_until = None
    rollback.save()
    after = {**_snapshot(rollback), "reason": reason, "conflict_files": rollback.conflict_files}
    _record(rollback, "failed", before=before, after=after, message=reason)
    return rollback


# ---------------------------------------------------------------------------------------------
# Tracking


def rollback_track(*, rollback_id: int) -> RollbackRequest:
    """Move a rollback forward: PR merged (auto-merged in emergencies) → deployed → healthy."""
    rollback = RollbackRequest.objects.select_related("application__repository", "environment").get(
        pk=rollback_id
    )
    RollbackRequest.objects.filter(pk=rollback_id).update(last_tracked_at=timezone.now())
    if rollback.state == State.PR_OPEN:
        try:
            _track_pr(rollback)
        except PullRequestPermanent as exc:
            # Retrying cannot help (PR deleted, token lost access): say so on the page, keep the state.
            _tracking_error(rollback, f"cannot read pull request #{rollback.pr_number}: {exc}")
            rollback.refresh_from_db()
            return rollback
        _tracking_error(rollback, "")
        rollback.refresh_from_db()
    if rollback.state == State.MERGED:
        _track_deployed(rollback)
        rollback.refresh_from_db()
    if rollback.state == State.DEPLOYED:
        _track_healthy(rollback)
        rollback.refresh_from_db()
    return rollback


def _track_pr(rollback: RollbackRequest) -> None:
    repository = rollback.application.repository
    if rollback.emergency and rollback.environment.rollback_auto_merge:
        attempt = pull_request_merge_when_checks_pass(repository=repository, number=rollback.pr_number)
        if attempt.status == "merged":
            _transition_merged(rollback.pk, attempt.merge_commit_sha or "", auto=True, merged_by="portal")
            return
        if attempt.status == "closed":
            _transition_closed(rollback.pk)
            return
        _set_detail(rollback.pk, f"emergency merge: {attempt.detail}")
        return
    pr = pull_request_refresh(repository, rollback.pr_number)
    if pr.merged:
        _transition_merged(rollback.pk, pr.merge_commit_sha or "", auto=False, merged_by=pr.merged_by or "")
    elif pr.state == "closed":
        _transition_closed(rollback.pk)


def _set_detail(rollback_id: int, detail: str) -> None:
    RollbackRequest.objects.filter(pk=rollback_id).update(tracking_detail=detail[:500])


def _tracking_error(rollback: RollbackRequest, error: str) -> None:
    """Show (or clear) a permanent tracking problem on the page; the first report is an audit event."""
    error = error[:2000]
    if rollback.tracking_error == error:
        return
    with transaction.atomic():
        updated = (
            RollbackRequest.objects.filter(pk=rollback.pk)
            .exclude(tracking_error=error)
            .update(tracking_error=error)
        )
        rollback.tracking_error = error
        if updated and error:
            audit_event_record(
                action="rollback.tracking_error",
                target_type="rollback",
                target_id=rollback.pk,
                target_label=f"rollback #{rollback.pk} of {rollback.application.name} in {rollback.environment.name}",
                app=rollback.application.name,
                environment=rollback.environment.name,
                pr_url=rollback.pr_url,
                after={"state": rollback.state, "error": error},
                message=error,
                correlation_id=rollback.correlation_id or None,
                system_name="rollbacks",
            )


def deploy_timeout() -> timedelta:
    """How long a merged rollback may wait for Argo CD (PROMOTION_DEPLOY_TIMEOUT_MINUTES, shared)."""
    return timedelta(minutes=int(getattr(settings, "PROMOTION_DEPLOY_TIMEOUT_MINUTES", 30)))


# A failed sync that started this long before the portal saw the merge belongs to an older revision.
SYNC_FAILURE_SLACK = timedelta(minutes=5)


def _sync_failures(rollback: RollbackRequest, apps: list[Any], mirror: Any) -> list[Any]:
    """Argo CD applications whose sync of the merged revert failed (Argo CD does not retry it)."""
    failed = []
    merged_at = rollback.merged_at or timezone.now()
    merge = rollback.merge_commit_sha
    for app in apps:
        if app.operation_phase not in ("Failed", "Error"):
            continue
        if app.operation_started_at is not None and app.operation_started_at < merged_at - SYNC_FAILURE_SLACK:
            continue
        try:
            if app.deployed_revision and mirror.is_ancestor(merge, app.deployed_revision):
                continue  # it runs the revert already; a later sync failed
            if app.revision and mirror.is_ancestor(merge, app.revision):
                failed.append(app)
        except (GitError, InvalidRef):
            continue
    return failed


def _fail_after_merge(rollback: RollbackRequest, reason: str, *, action: str) -> None:
    """End a merged rollback that Argo CD did not (or could not) deploy: failed, with the reason."""
    with transaction.atomic():
        locked = (
            RollbackRequest.objects.select_for_update(of=("self",))
            .select_related("application", "environment")
            .get(pk=rollback.pk)
        )
        if locked.state not in (State.MERGED, State.DEPLOYED):
            return
        before = _snapshot(locked)
        locked.state = State.FAILED
        locked.failed_at = timezone.now()
        locked.failure_reason = reason[:4000]
        locked.tracking_detail = ""
        locked.save()
        _record(
            locked,
            action,
            before=before,
            after={**_snapshot(locked), "reason": reason[:2000]},
            message=reason[:2000],
        )


@transaction.atomic
def _transition_merged(rollback_id: int, merge_sha: str, *, auto: bool, merged_by: str) -> None:
    rollback = (
        RollbackRequest.objects.select_for_update(of=("self",))
        .select_related("application", "environment")
        .get(pk=rollback_id)
    )
    if rollback.state != State.PR_OPEN:
        return
    before = _snapshot(rollback)
    now = timezone.now()
    rollback.state = State.MERGED
    rollback.merged_at = now
    rollback.merge_commit_sha = merge_sha
    rollback.tracking_detail = f"waiting for Argo CD to run {merge_sha[:8]} in {rollback.environment.name}"
    if auto:
        rollback.auto_merged_at = now
    rollback.save()
    if auto:
        _record(
            rollback,
            "auto_merged",
            before=before,
            after={**_snapshot(rollback), "justification": rollback.emergency_justification},
            message=f"emergency: merged by the portal once the required checks passed. {rollback.emergency_justification}",
        )
    _record(
        rollback,
        "merged",
        before=before,
        after={**_snapshot(rollback), "merged_by": merged_by},
        message="merged",
    )
    _block_reverted_version(rollback)


def _block_reverted_version(rollback: RollbackRequest) -> None:
    """Flag the app and env so the reverted version is not promoted again until cleared."""
    from promotions.services import promotion_block_create

    promotion_block_create(
        application=rollback.application,
        environment=rollback.environment,
        blocked_version=rollback.current_version or rollback.current_revision,
        blocked_revision=rollback.current_revision,
        reason=f"rolled back by rollback #{rollback.pk}: {rollback.reason}"[:2000],
        actor=rollback.requested_by,
        source_type="rollback",
        source_id=str(rollback.pk),
    )


@transaction.atomic
def _transition_closed(rollback_id: int) -> None:
    rollback = (
        RollbackRequest.objects.select_for_update(of=("self",))
        .select_related("application", "environment")
        .get(pk=rollback_id)
    )
    if rollback.state != State.PR_OPEN:
        return
    before = _snapshot(rollback)
    rollback.state = State.CANCELLED
    rollback.cancelled_at = timezone.now()
    rollback.failure_reason = "the pull request was closed without merging"
    rollback.save()
    _record(rollback, "cancelled", before=before, after=_snapshot(rollback), message=rollback.failure_reason)


def _timed_out(since: Any) -> bool:
    return since is not None and timezone.now() - since >= deploy_timeout()


def _running_revision(app: Any) -> str:
    if app.deployed_revision:
        return app.deployed_revision
    return app.revision if app.sync_status == "Synced" else ""


def _track_deployed(rollback: RollbackRequest) -> None:
    apps = env_argo_apps(rollback.application, rollback.environment)
    if not apps:
        _set_detail(
            rollback.pk,
            f"no Argo CD application of {rollback.application.name} in {rollback.environment.name} observed",
        )
        return
    if not rollback.merge_commit_sha:
        _set_detail(rollback.pk, "the forge did not report the merge commit")
        if _timed_out(rollback.merged_at):
            _fail_after_merge(
                rollback,
                f"the forge did not report the merge commit of the revert; {rollback.environment.name} "
                f"cannot be tracked {format_duration(deploy_timeout())} after the merge",
                action="deploy_timed_out",
            )
        return
    mirror = history.repository_mirror(rollback.application.repository)
    fetched = False
    waiting: list[str] = []
    try:
        mirror.rev_parse(rollback.merge_commit_sha)
    except (GitError, InvalidRef):
        mirror = history.mirror_fresh(rollback.application.repository)
        fetched = True
    failed = _sync_failures(rollback, apps, mirror)
    if failed:
        detail = "; ".join(
            f"{a.name}: sync {a.operation_phase.lower()}"
            + (f": {a.operation_message}" if a.operation_message else "")
            for a in failed
        )
        _fail_after_merge(
            rollback,
            f"Argo CD could not sync the revert into {rollback.environment.name}: {detail}",
            action="sync_failed",
        )
        return
    for app in apps:
        revision = _running_revision(app)
        if not revision:
            waiting.append(app.name)
            continue
        try:
            try:
                mirror.rev_parse(revision)
                mirror.rev_parse(rollback.merge_commit_sha)
            except InvalidRef:
                if fetched:
                    raise
                mirror = history.mirror_fresh(rollback.application.repository)
                fetched = True
            if not mirror.is_ancestor(rollback.merge_commit_sha, revision):
                waiting.append(app.name)
        except (GitError, InvalidRef):
            waiting.append(app.name)
    if waiting:
        detail = f"waiting for Argo CD to run {rollback.merge_commit_sha[:8]}: {', '.join(waiting)}"
        if _timed_out(rollback.merged_at):
            _fail_after_merge(
                rollback,
                f"{rollback.environment.name} does not run the revert {format_duration(deploy_timeout())} "
                f"after the merge ({detail})",
                action="deploy_timed_out",
            )
            return
        _set_detail(rollback.pk, detail)
        return
    _transition_simple(
        rollback.pk,
        State.MERGED,
        State.DEPLOYED,
        "deployed",
        "deployed_at",
        detail=f"waiting for {rollback.environment.name} to be Healthy",
        message=f"Argo CD runs {rollback.merge_commit_sha[:8]} in {', '.join(a.name for a in apps)}",
    )


def _track_healthy(rollback: RollbackRequest) -> None:
    apps = env_argo_apps(rollback.application, rollback.environment)
    unhealthy = [f"{a.name} ({a.health_status or 'unknown'})" for a in apps if a.health_status != "Healthy"]
    if not apps or unhealthy:
        detail = "waiting for Healthy: " + (", ".join(unhealthy) or "no application observed")
        if _timed_out(rollback.deployed_at):
            _fail_after_merge(
                rollback,
                f"{rollback.environment.name} is not Healthy {format_duration(deploy_timeout())} after the "
                f"revert was deployed ({detail})",
                action="not_healthy",
            )
            return
        _set_detail(rollback.pk, detail)
        return
    _transition_simple(
        rollback.pk, State.DEPLOYED, State.HEALTHY, "healthy", "healthy_at", detail="", message="Healthy"
    )


@transaction.atomic
def _transition_simple(
    rollback_id: int, from_state: str, to_state: str, action: str, stamp: str, *, detail: str, message: str
) -> None:
    rollback = (
        RollbackRequest.objects.select_for_update(of=("self",))
        .select_related("application", "environment")
        .get(pk=rollback_id)
    )
    if rollback.state != from_state:
        return
    before = _snapshot(rollback)
    rollback.state = to_state
    setattr(rollback, stamp, timezone.now())
    rollback.tracking_detail = detail
    if to_state == State.HEALTHY and rollback.degraded_since is None:
        rollback.degraded_since = degraded_since(rollback.application, rollback.environment)
    rollback.save()
    after = _snapshot(rollback)
    if to_state == State.HEALTHY:
        ttr = rollback.time_to_restore
        ttr_degraded = rollback.time_to_restore_from_degraded
        after["time_to_restore_seconds"] = ttr.total_seconds() if ttr else None
        after["time_to_restore_from_degraded_seconds"] = (
            ttr_degraded.total_seconds() if ttr_degraded else None
        )
    _record(rollback, action, before=before, after=after, message=message)


# ---------------------------------------------------------------------------------------------
# Cancel


def rollback_cancel(*, actor: Any, rollback: RollbackRequest, request: Any = None) -> RollbackRequest:
    """Cancel a rollback that is not merged: close its PR and delete its branch."""
    rollback_check_permission(
        user=actor, application=rollback.application, environment=rollback.environment, request=request
    )
    if not rollback.is_cancellable:
        raise RollbackRefused(f"a {rollback.get_state_display()} rollback cannot be cancelled")
    rollback = _transition_cancelled(rollback.pk, actor)
    if rollback.state == State.CANCELLED and rollback.application.repository is not None:
        try:
            pull_request_close_and_delete_branch(
                repository=rollback.application.repository,
                number=rollback.pr_number,
                branch=rollback.branch,
                comment=f"Rollback cancelled in the GitOps Portal by {actor.get_username()}.",
            )
        except PullRequestError as exc:
            # The rollback stays cancelled; a PR left open is visible on its page and on the forge.
            logger.warning("closing the PR of cancelled rollback %s failed: %s", rollback.pk, exc)
            _set_detail(rollback.pk, f"the pull request could not be closed: {exc}")
    return rollback


@transaction.atomic
def _transition_cancelled(rollback_id: int, actor: Any) -> RollbackRequest:
    rollback = (
        RollbackRequest.objects.select_for_update(of=("self",))
        .select_related("application__repository", "environment")
        .get(pk=rollback_id)
    )
    if not rollback.is_cancellable:
        raise RollbackRefused(f"a {rollback.get_state_display()} rollback cannot be cancelled")
    before = _snapshot(rollback)
    rollback.state = State.CANCELLED
    rollback.cancelled_at = timezone.now()
    rollback.claimed_until = None
    rollback.save()
    _record(
        rollback,
        "cancelled",
        actor=actor,
        before=before,
        after=_snapshot(rollback),
        message="cancelled by the requester",
    )
    return rollback


# ---------------------------------------------------------------------------------------------
# Sweeper and webhooks


# PR state comes from webhooks; open PRs are polled this often as the fallback (and emergency
# auto-merges retried). Merged/deployed rollbacks are tracked at every sweep: local work only
# (the inventory's rows and the Git mirror), so SWEEP_INTERVAL_SECONDS can be short.
PR_POLL_SECONDS = 30
ROLLOUT_POLL_SECONDS = 5
# A new request's own message is normally running: the sweeper steps in after this.
OPEN_GRACE_SECONDS = 15


def rollbacks_sweep(*, now: Any = None) -> dict[str, int]:
    """Re-enqueue PR opening whose claim lapsed (lost message, killed worker) and track the rest."""
    now = now or timezone.now()
    to_open = list(
        RollbackRequest.objects.filter(state=State.REQUESTED)
        .filter(
            Q(claimed_until__isnull=True, requested_at__lt=now - timedelta(seconds=OPEN_GRACE_SECONDS))
            | Q(claimed_until__lt=now)
        )
        .values_list("pk", flat=True)[:200]
    )
    for pk in to_open:
        _enqueue_pr_open(pk)
    to_track = list(
        RollbackRequest.objects.filter(
            Q(last_tracked_at__isnull=True, state__in=(State.PR_OPEN, State.MERGED, State.DEPLOYED))
            | Q(state=State.PR_OPEN, last_tracked_at__lt=now - timedelta(seconds=PR_POLL_SECONDS))
            | Q(
                state__in=(State.MERGED, State.DEPLOYED),
                last_tracked_at__lt=now - timedelta(seconds=ROLLOUT_POLL_SECONDS),
            )
        ).values_list("pk", flat=True)[:500]
    )
    expires = float(getattr(settings, "SWEEP_EXPIRES_SECONDS", 30.0))
    for pk in to_track:
        _enqueue_track(pk, expires=expires)
    return {"opened": len(to_open), "tracked": len(to_track)}


def rollback_pr_event(repository: Any, event: Any) -> None:
    """Webhook hook (registered with promotions.pullrequests): track the rollback of a PR event."""
    head = getattr(event, "head_ref", None) or ""
    if getattr(event, "kind", "") != "pull_request" or not head.startswith("rollback/"):
        return
    ids = list(
        RollbackRequest.objects.filter(
            application__repository=repository, branch=head, state__in=(State.PR_OPEN, State.MERGED)
        ).values_list("pk", flat=True)
    )
    for pk in ids:
        transaction.on_commit(lambda pk=pk: _enqueue_track(pk))


__all__ = [
    "PermissionDenied",
    "RollbackNeedsConfirmation",
    "RollbackRefused",
    "rollback_cancel",
    "rollback_check_permission",
    "rollback_pr_event",
    "rollback_pr_open",
    "rollback_request_create",
    "rollback_track",
    "rollbacks_sweep",
]
