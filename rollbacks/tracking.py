"""Rollback tracking: PR merged (auto-merged in emergencies) → Argo CD runs the revert → Healthy.

The shared steps (PR reads, tracking errors, the deploy timeout, the sweeper) live in
changes.tracking and changes.sweeper; this module knows what "deployed" means for a rollback:
every Argo CD application of the app in the environment runs a revision containing the revert.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from django.db import transaction
from django.utils import timezone

from accounts.roles import Role
from changes.checklist import secret_scan_gate
from changes.checks import (
    ChecksPanel,
    change_checks_live,
    change_checks_record,
    change_checks_refresh,
    checks_panel,
    pull_request_merge_when_checks_pass,
)
from changes.lifecycle import change_enqueue_track, change_fail, change_record, change_transition
from changes.pullrequests import pull_request_refresh
from changes.rendered import rendered_verdict
from changes.sweeper import change_sweep
from changes.syncs import change_sync, change_sync_hold, change_sync_override, change_sync_retry
from changes.tracking import (
    change_fail_after_merge,
    change_pr_head_moved,
    change_pr_read,
    change_tracked,
    deploy_timed_out,
    deploy_timeout_label,
)
from integrations.forges.webhooks import WebhookEvent
from integrations.gitrepo import GitError, GitMirror, InvalidRef
from inventory.appstate import change_sync_result
from inventory.models import GitRepository
from promotions.blocks import promotion_block_create
from promotions.reverts import promotion_mark_rolled_back

from . import history
from .kind import ROLLBACK, rollback_close_pr, rollback_load
from .models import RollbackRequest
from .records import rollback_snapshot
from .rendered import rollback_rendered
from .selectors import degraded_since, env_argo_apps, rollback_baseline

State = RollbackRequest.State


def _fail_after_merge(rollback: RollbackRequest, reason: str, *, action: str) -> None:
    """End a merged rollback that Argo CD did not (or could not) deploy: failed, with the reason."""
    change_fail_after_merge(
        kind=ROLLBACK,
        change=rollback,
        reason=reason,
        action=action,
        from_states=(State.MERGED, State.DEPLOYED),
        extra={"reason": reason[:2000]},
    )


def rollback_track(*, rollback_id: int) -> RollbackRequest:
    """Move a rollback forward: PR merged (auto-merged in emergencies) → deployed → healthy."""
    rollback = rollback_load(rollback_id)
    change_tracked(kind=ROLLBACK, change_id=rollback_id)
    if rollback.state == State.PR_OPEN:
        change_pr_read(kind=ROLLBACK, change=rollback, read=lambda: _track_pr(rollback))
        rollback.refresh_from_db()
    if rollback.state == State.MERGED and change_sync_hold(kind=ROLLBACK, change=rollback):
        return rollback  # the portal syncs it (sync: portal): waiting for the window or Argo CD
    if rollback.state == State.MERGED:
        _track_deployed(rollback)
        rollback.refresh_from_db()
    if rollback.state == State.DEPLOYED:
        _track_healthy(rollback)
        rollback.refresh_from_db()
    return rollback


def rollback_sync(*, rollback_id: int) -> str:
    """Sync a merged rollback into a `sync: portal` environment (changes.syncs.change_sync)."""
    return change_sync(kind=ROLLBACK, change_id=rollback_id)


def rollback_sync_override(*, rollback: RollbackRequest, actor: Any, reason: str) -> RollbackRequest:
    """Override the closed sync window of a merged rollback (an approver, not the requester)."""
    result: RollbackRequest = change_sync_override(
        kind=ROLLBACK, change_id=rollback.pk, actor=actor, reason=reason
    )
    return result


# Who may ask for a failed sync again: the role that requests rollbacks, or an approver.
SYNC_RETRY_ROLES = (Role.ONCALL, Role.APPROVER)


def rollback_sync_retry(*, rollback: RollbackRequest, actor: Any) -> RollbackRequest:
    """Retry the failed (given up) sync of a merged rollback (on-call or approver)."""
    result: RollbackRequest = change_sync_retry(
        kind=ROLLBACK, change_id=rollback.pk, actor=actor, roles=SYNC_RETRY_ROLES
    )
    return result


def _repository(rollback: RollbackRequest) -> GitRepository:
    """Return the app's repository: a rollback is planned only for an app that has one."""
    repository = rollback.application.repository
    assert repository is not None
    return repository


def _track_pr(rollback: RollbackRequest) -> None:
    repository, number = _repository(rollback), rollback.pr_number
    assert number is not None  # tracked from PR_OPEN on, when the number is stored
    required = rollback.environment.required_checks
    auto_merge = rollback.emergency and rollback.environment.rollback_auto_merge
    rendering, why = _rendered_head_verdict(rollback)
    if rendering == SECRET:
        # Nobody overrides the secret scan: the rollback fails and its branch, holding the secret,
        # goes with its PR (whoever merges on the forge, the portal does not let it ship).
        refused = "emergency merge refused" if auto_merge else "refused"
        if change_fail(
            kind=ROLLBACK,
            change_id=rollback.pk,
            reason=f"{refused}: {why}",
            extra={"merge_refused": True} if auto_merge else {},
        ):
            rollback_close_pr(
                rollback_load(rollback.pk),
                comment=f"Rollback #{rollback.pk} was refused in the GitOps Portal: {why}",
            )
        return
    if auto_merge:
        if rendering == UNRENDERED:
            # Argo CD would not sync what it cannot render: the portal does not merge it either.
            change_fail(
                kind=ROLLBACK,
                change_id=rollback.pk,
                reason=f"emergency merge refused: {why}",
                extra={"merge_refused": True},
            )
            return
        if rendering == WAIT:
            _set_detail(rollback.pk, f"emergency merge waits for Argo CD's rendering of the head: {why}")
            return
        attempt, verdict = pull_request_merge_when_checks_pass(
            repository=repository,
            number=number,
            head_sha=rollback.pushed_head_sha or rollback.pr_head_sha,
            required_checks=required,
        )
        if verdict is not None:
            change_checks_record(kind=ROLLBACK, change_id=rollback.pk, verdict=verdict, required=required)
        if attempt.status == "refused":
            # The head moved (or the PR is not the portal's): nothing unreviewed is merged.
            change_fail(
                kind=ROLLBACK,
                change_id=rollback.pk,
                reason=f"emergency merge refused: {attempt.detail}",
                extra={"merge_refused": True},
            )
            return
        if attempt.status == "merged":
            _transition_merged(
                rollback.pk,
                attempt.merge_commit_sha or "",
                auto=True,
                merged_by=attempt.merged_by or "portal",
            )
            return
        if attempt.status == "closed":
            _transition_closed(rollback.pk)
            return
        _set_detail(rollback.pk, f"emergency merge: {attempt.detail}")
        return
    pr = pull_request_refresh(repository, number)
    if change_pr_head_moved(kind=ROLLBACK, change=rollback, pr=pr):
        return
    if pr.merged:
        _transition_merged(rollback.pk, pr.merge_commit_sha or "", auto=False, merged_by=pr.merged_by or "")
    elif pr.state == "closed":
        _transition_closed(rollback.pk)
    else:
        change_checks_refresh(kind=ROLLBACK, change=rollback, repository=repository, required=required)


def rollback_checks(rollback: RollbackRequest, *, live: bool) -> ChecksPanel:
    """The checks panel of a rollback: as tracking stored it, or read from the forge now (`live`)."""
    if not live:
        return checks_panel(rollback, kind=ROLLBACK)
    return change_checks_live(
        kind=ROLLBACK,
        change=rollback,
        repository=rollback.application.repository,
        required=rollback.environment.required_checks,
    )


def _set_detail(rollback_id: int, detail: str) -> None:
    RollbackRequest.objects.filter(pk=rollback_id).update(tracking_detail=detail[:500])


SYNC_FAILURE_SLACK = timedelta(minutes=5)


def _sync_failures(rollback: RollbackRequest, apps: list[Any], mirror: GitMirror) -> list[Any]:
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


# What Argo CD's rendering of a rollback's pushed head says (`_rendered_head_verdict`).
SECRET, UNRENDERED, WAIT = "secret", "unrendered", "wait"
_JUDGED_HEADS: dict[tuple[int, str], tuple[str, str]] = {}


def _rendered_head_verdict(rollback: RollbackRequest) -> tuple[str, str]:
    """Judge what Argo CD renders at the pushed head, with the reason: ("", "") when it renders
    clean, (SECRET, findings) when the objects the revert adds or alters hold a secret (the base
    branch's `.secrets.baseline` allowlists), (UNRENDERED, Argo CD's message) when Argo CD cannot
    render it, (WAIT, why) while Argo CD cannot be asked (a timeout, unreachable: asked again on the
    next tracking tick).

    A head's final verdict is kept per process (tracking ticks repeat while the PR is open).
    """
    head = rollback.pushed_head_sha or rollback.pr_head_sha
    if not head:
        return "", ""
    if (rollback.pk, head) in _JUDGED_HEADS:
        return _JUDGED_HEADS[(rollback.pk, head)]
    rendered = rollback_rendered(rollback, branch_ok=False)
    verdict = rendered_verdict(rendered)
    if not verdict.passed and verdict.transient:
        return WAIT, verdict.detail  # never kept: Argo CD is asked again
    if not verdict.passed:
        result = (UNRENDERED, verdict.detail)
    else:
        gate = secret_scan_gate(
            app=rollback.application.name,
            rendered=[r for r in rendered if r.ok],
            baseline_text=rollback_baseline(rollback),
        )
        result = ("", "") if gate["passed"] else (SECRET, f"{gate['label']}: {gate['detail']}")
    if len(_JUDGED_HEADS) > 1000:
        _JUDGED_HEADS.clear()
    _JUDGED_HEADS[(rollback.pk, head)] = result
    return result


def _transition_merged(rollback_id: int, merge_sha: str, *, auto: bool, merged_by: str) -> None:
    """PR merged: `rollback.merged` (after `rollback.auto_merged` in emergencies), then block the version."""
    with transaction.atomic():
        now = timezone.now()
        current = rollback_load(rollback_id)
        before = rollback_snapshot(current)
        env, justification = current.environment.name, current.emergency_justification
        stamps: dict[str, Any] = {"auto_merged_at": now} if auto else {}
        moved = change_transition(
            kind=ROLLBACK,
            change_id=rollback_id,
            from_states=(State.PR_OPEN,),
            to=State.MERGED,
            action="auto_merged" if auto else "merged",
            extra={"justification": justification} if auto else {"merged_by": merged_by},
            message=f"emergency: merged by the portal once the required checks passed. {justification}"
            if auto
            else "merged",
            merged_at=now,
            merge_commit_sha=merge_sha,
            merged_by=merged_by[:150],
            tracking_detail=f"waiting for Argo CD to run {merge_sha[:8]} in {env}",
            **stamps,
        )
        if not moved:
            return
        rollback = rollback_load(rollback_id)
        if auto:
            change_record(
                kind=ROLLBACK,
                change=rollback,
                action="rollback.merged",
                before=before,
                after={"merged_by": merged_by},
                message="merged",
            )
        _block_reverted_version(rollback)
        promotion_mark_rolled_back(
            rollback_id=rollback.pk,
            environment_id=rollback.environment_id,
            reverted_shas=rollback.revert_shas,
        )


def _block_reverted_version(rollback: RollbackRequest) -> None:
    """Flag the app and env so the reverted version is not promoted again until cleared."""
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


def _transition_closed(rollback_id: int) -> None:
    reason = "the pull request was closed without merging"
    change_transition(
        kind=ROLLBACK,
        change_id=rollback_id,
        from_states=(State.PR_OPEN,),
        to=State.CANCELLED,
        action="cancelled",
        message=reason,
        cancelled_at=timezone.now(),
        failure_reason=reason,
    )


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
        if deploy_timed_out(rollback.sync_requested_at or rollback.merged_at):
            _fail_after_merge(
                rollback,
                f"the forge did not report the merge commit of the revert; {rollback.environment.name} "
                f"cannot be tracked {deploy_timeout_label()} after the merge",
                action="deploy_timed_out",
            )
        return
    mirror = history.repository_mirror(_repository(rollback))
    fetched = False
    waiting: list[str] = []
    try:
        mirror.rev_parse(rollback.merge_commit_sha)
    except (GitError, InvalidRef):
        mirror = history.mirror_fresh(_repository(rollback))
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
                mirror = history.mirror_fresh(_repository(rollback))
                fetched = True
            if not mirror.is_ancestor(rollback.merge_commit_sha, revision):
                waiting.append(app.name)
        except (GitError, InvalidRef):
            waiting.append(app.name)
    if waiting:
        detail = f"waiting for Argo CD to run {rollback.merge_commit_sha[:8]}: {', '.join(waiting)}"
        if deploy_timed_out(rollback.sync_requested_at or rollback.merged_at):
            _fail_after_merge(
                rollback,
                f"{rollback.environment.name} does not run the revert {deploy_timeout_label()} "
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
        sync_result=change_sync_result(apps),
        message=f"Argo CD runs {rollback.merge_commit_sha[:8]} in {', '.join(a.name for a in apps)}",
    )


def _track_healthy(rollback: RollbackRequest) -> None:
    apps = env_argo_apps(rollback.application, rollback.environment)
    unhealthy = [f"{a.name} ({a.health_status or 'unknown'})" for a in apps if a.health_status != "Healthy"]
    if not apps or unhealthy:
        detail = "waiting for Healthy: " + (", ".join(unhealthy) or "no application observed")
        if deploy_timed_out(rollback.deployed_at):
            _fail_after_merge(
                rollback,
                f"{rollback.environment.name} is not Healthy {deploy_timeout_label()} after the "
                f"revert was deployed ({detail})",
                action="not_healthy",
            )
            return
        _set_detail(rollback.pk, detail)
        return
    _transition_simple(
        rollback.pk,
        State.DEPLOYED,
        State.HEALTHY,
        "healthy",
        "healthy_at",
        detail="",
        message="Healthy",
        sync_result=change_sync_result(apps),
    )


def _transition_simple(
    rollback_id: int,
    from_state: str,
    to_state: str,
    action: str,
    stamp: str,
    *,
    detail: str,
    message: str,
    sync_result: dict[str, Any] | None = None,
) -> None:
    fields: dict[str, Any] = {stamp: timezone.now(), "tracking_detail": detail, "sync_result": sync_result}
    rollback = rollback_load(rollback_id)
    if to_state == State.HEALTHY and rollback.degraded_since is None:
        fields["degraded_since"] = degraded_since(rollback.application, rollback.environment)
    change_transition(
        kind=ROLLBACK,
        change_id=rollback_id,
        from_states=(from_state,),
        to=to_state,
        action=action,
        message=message,
        extra=_restore_times if to_state == State.HEALTHY else None,
        **fields,
    )


def _restore_times(rollback: RollbackRequest) -> dict[str, float | None]:
    ttr = rollback.time_to_restore
    ttr_degraded = rollback.time_to_restore_from_degraded
    return {
        "time_to_restore_seconds": ttr.total_seconds() if ttr else None,
        "time_to_restore_from_degraded_seconds": ttr_degraded.total_seconds() if ttr_degraded else None,
    }


# ---------------------------------------------------------------------------------------------
# Sweeper and webhooks


def rollbacks_sweep(*, now: datetime | None = None) -> dict[str, int]:
    """Re-enqueue PR opening whose claim lapsed (lost message, killed worker) and track the rest."""
    swept = change_sweep(kind=ROLLBACK, now=now)
    return {"opened": swept["reopened"], "tracked": swept["tracked"]}


def rollback_pr_event(repository: GitRepository, event: WebhookEvent) -> None:
    """Webhook hook (registered with changes.pullrequests): track the rollback of a PR event."""
    head = getattr(event, "head_ref", None) or ""
    if getattr(event, "kind", "") != "pull_request" or not head.startswith("rollback/"):
        return
    ids = list(
        RollbackRequest.objects.filter(
            application__repository=repository, branch=head, state__in=(State.PR_OPEN, State.MERGED)
        ).values_list("pk", flat=True)
    )
    for pk in ids:
        change_enqueue_track(kind=ROLLBACK, change_id=pk)
