"""Rollbacks as a kind of change request (changes.lifecycle): states, tasks and hooks."""

from __future__ import annotations

import logging

from django.db import transaction
from django.urls import reverse

from changes.lifecycle import ChangeKind, change_kind_register
from changes.portalstatus import PortalStatus, gates_status, portal_page_url
from changes.pullrequests import PullRequestError, pull_request_close_and_delete_branch

from .models import RollbackRequest
from .records import rollback_change_record_sync, rollback_snapshot, target_label
from .rendered import SECRET, UNRENDERED, WAIT, rendered_head_verdict

logger = logging.getLogger(__name__)
State = RollbackRequest.State
FINAL_STATES = (State.HEALTHY, State.FAILED, State.CANCELLED)


def rollback_load(rollback_id: int) -> RollbackRequest:
    """Load a rollback with what its events and tracking read."""
    return RollbackRequest.objects.select_related("application__repository", "environment").get(
        pk=rollback_id
    )


def _on_final(rollback: RollbackRequest) -> None:
    # A final rollback waits for nothing: its page shows the outcome, not a stale wait.
    if rollback.tracking_detail:
        RollbackRequest.objects.filter(pk=rollback.pk).update(tracking_detail="")


def rollback_close_pr(rollback: RollbackRequest, *, comment: str = "") -> str:
    """Close the PR and delete the branch of a rollback; an error is logged and returned, not raised."""
    if rollback.application.repository is None:
        return ""
    try:
        pull_request_close_and_delete_branch(
            repository=rollback.application.repository,
            number=rollback.pr_number,
            branch=rollback.branch,
            comment=comment or "This rollback was cancelled in the GitOps Portal.",
        )
    except PullRequestError as exc:
        # The rollback stays cancelled; a PR left open is visible on its page and on the forge.
        logger.warning("closing the PR of cancelled rollback %s failed: %s", rollback.pk, exc)
        return str(exc)
    return ""


def _close_after_commit(rollback: RollbackRequest) -> None:
    transaction.on_commit(lambda: rollback_close_pr(rollback))


def rollback_status_verdict(rollback: RollbackRequest) -> PortalStatus | None:
    """The portal's status on the revert's head: its gates and Argo CD's rendering of the head.

    A rollback has no approval in the portal (the forge's reviews and branch protection apply), so
    it is `success` once the secret scan and the rendering pass; a revert Argo CD cannot render, or
    one adding a secret, is a `failure` whoever would merge it on the forge.
    """
    head = rollback.pushed_head_sha or rollback.pr_head_sha
    if not head:
        return None
    if rollback.state == State.FAILED:
        return PortalStatus("failure", f"Failed in the GitOps Portal: {rollback.failure_reason}", head)
    if rollback.state == State.CANCELLED:
        return PortalStatus("failure", "Cancelled in the GitOps Portal", head)
    if rollback.state not in (State.REQUESTED, State.PR_OPEN):
        return None  # merged: the status no longer guards anything
    status = gates_status(list(rollback.gates or []), sha=head, approved=True)
    if status.state != "success":
        return status
    rendering, why = rendered_head_verdict(rollback)
    if rendering in (SECRET, UNRENDERED):
        return PortalStatus("failure", f"Blocked: {why}", head)
    if rendering == WAIT:
        return PortalStatus("pending", "Waiting for Argo CD to render the revert", head)
    return PortalStatus("success", "Secret scan and Argo CD's rendering of the revert passed", head)


ROLLBACK = change_kind_register(
    ChangeKind(
        name="rollback",
        system_name="rollbacks",
        model=RollbackRequest,
        claim_states=(State.REQUESTED,),
        failable_states=tuple(RollbackRequest.ACTIVE_STATES),
        final_states=FINAL_STATES,
        opening_since="requested_at",
        pr_open_task="rollbacks.tasks.rollback_pr_open_task",
        track_task="rollbacks.tasks.rollback_track_task",
        load=rollback_load,
        snapshot=rollback_snapshot,
        event_after=lambda rollback, after: {**rollback_snapshot(rollback), **after},
        records_sync=rollback_change_record_sync,
        audit_fields=lambda rollback: {
            "target_label": target_label(rollback),
            "app": rollback.application.name,
            "environment": rollback.environment.name,
            "shas": list(rollback.revert_shas),
        },
        claim_fields=lambda now: {"next_attempt_at": None},
        retry_not_before="next_attempt_at",
        branch_field="branch",
        pr_open_fields={"tracking_detail": "waiting for the pull request to be merged"},
        # PR state comes from webhooks; open PRs are polled this often as the fallback (and
        # emergency auto-merges retried).
        pr_poll_seconds=30,
        # A new request's own message is normally running: the sweeper steps in after this.
        open_grace_seconds=15,
        on_final=_on_final,
        close_pr=_close_after_commit,
        repository=lambda rollback: rollback.application.repository,
        verify_task="rollbacks.tasks.rollback_branch_verify_task",
        sync_task="rollbacks.tasks.rollback_sync_task",
        sync_scope=lambda rollback: (rollback.environment, [rollback.application]),
        status_verdict=rollback_status_verdict,
        page_url=lambda rollback: portal_page_url(reverse("rollbacks:detail", args=[rollback.pk])),
        status_task="rollbacks.tasks.rollback_status_publish_task",
    )
)
