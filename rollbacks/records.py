"""Rollback records: how the ledger names a rollback, its snapshot and its audit change record."""

from __future__ import annotations

from typing import Any

from audit.services import change_record_sync
from changes.checks import checks_gate
from changes.gatehistory import AT_REQUEST

from .models import RollbackRequest
from .selectors import env_argo_apps

State = RollbackRequest.State
MAX_TITLE = 200


def target_label(rollback: RollbackRequest) -> str:
    """How the ledger names a rollback."""
    return f"rollback #{rollback.pk} of {rollback.application.name} in {rollback.environment.name}"


def rollback_change_record_sync(rollback: RollbackRequest) -> None:
    """Mirror a rollback into its audit change record (production-like environments only)."""
    if not rollback.environment.production_like:
        return
    outcomes: dict[str, str] = {
        State.HEALTHY: "succeeded",
        State.FAILED: "failed",
        State.CANCELLED: "abandoned",
    }
    outcome = outcomes.get(rollback.state, "pending")
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
        title=rollback_title(rollback),
        requester_name=rollback.requested_by_name,
        pr_number=rollback.pr_number,
        pr_url=rollback.pr_url,
        merged_by=rollback.merged_by,
        sync_result=rollback.sync_result,
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
        justification="\n".join(
            t for t in (rollback.emergency_justification, rollback.sync_override_note) if t
        ),
        clusters=clusters,
        correlation_id=rollback.correlation_id,
        incident=rollback.incident,
        # A rollback's gates are evaluated once, at the request, and kept as they were.
        gates=[
            {
                "name": g.get("name", "?"),
                "passed": bool(g.get("passed")),
                "detail": g.get("detail", ""),
                "evaluation": AT_REQUEST,
                "evaluated_at": rollback.requested_at.isoformat() if rollback.requested_at else "",
            }
            for g in rollback.gates or []
            if isinstance(g, dict)
        ]
        + checks_gate(rollback),
        **_approval_fields(rollback),
    )


def _approval_fields(rollback: RollbackRequest) -> dict[str, Any]:
    """The after-the-fact approval of an emergency rollback, as the change record shows it."""
    if rollback.approved_after_at is None:
        return {}
    return {
        "approvers": [rollback.approved_after_by_name],
        "approved_at": rollback.approved_after_at,
        "approval_reason": rollback.approved_after_reason,
        "approved_head_sha": rollback.approved_after_head_sha,
    }


def rollback_snapshot(rollback: RollbackRequest) -> dict[str, Any]:
    """The fields a rollback's ledger events show before and after a transition."""
    return {
        "state": rollback.state,
        "pr_number": rollback.pr_number,
        "merge_commit_sha": rollback.merge_commit_sha,
    }


def rollback_title(rollback: RollbackRequest) -> str:
    """The title of a rollback's PR and change record."""
    app, env = rollback.application.name, rollback.environment.name
    if rollback.mode == RollbackRequest.Mode.PREVIOUS:
        versions = (
            f" ({rollback.current_version} → {rollback.expected_version})"
            if rollback.expected_version
            else ""
        )
        title = f"Revert {app} in {env} to an earlier deployment{versions}, {app} only"
    else:
        sha = rollback.revert_shas[0][:8] if rollback.revert_shas else ""
        title = f"Revert {sha} for {app} in {env} only"
    return title[:MAX_TITLE]
