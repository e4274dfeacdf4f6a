"""Rollbacks as a kind of change request (changes.lifecycle): states, tasks and hooks."""

from __future__ import annotations

import logging

from django.db import transaction

from changes.lifecycle import ChangeKind, change_kind_register
from changes.pullrequests import PullRequestError, pull_request_close_and_delete_branch

from .models import RollbackRequest
from .records import rollback_change_record_sync, rollback_snapshot, target_label

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
    )
)
