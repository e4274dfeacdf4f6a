"""Rollback requests: who may ask, the checked and planned request, and cancelling it."""

from __future__ import annotations

from django.contrib.auth.models import User
from django.core.exceptions import ValidationError
from django.db import transaction
from django.http import HttpRequest
from django.utils import timezone

from accounts.permissions import ensure_role, has_role
from accounts.roles import Role
from audit.services import audit_event_record
from changes.lifecycle import (
    change_enqueue_pr_open,
    change_record,
    change_requester_fields,
    change_transition,
)
from changes.pullrequests import branch_name_unguessable
from inventory.ingest import PathMapper
from inventory.models import Application, Environment

from .kind import ROLLBACK, rollback_close_pr
from .models import RollbackRequest
from .selectors import RollbackPlan, degraded_since, moved_on_warnings, rollback_plan

State = RollbackRequest.State
MAX_REASON = 4000
MAX_INCIDENT = 500


class RollbackRefused(ValidationError):
    """The rollback cannot be requested (bad input, not in history, conflicting request...)."""


class RollbackNeedsConfirmation(ValidationError):
    """The environment moved on since the form was opened (or a promotion is in flight)."""

    def __init__(self, warnings: list[str], plan: RollbackPlan) -> None:
        super().__init__(warnings, code="confirm")
        self.warnings = warnings
        self.plan = plan


def rollback_check_permission(
    *, user: User, application: Application, environment: Environment, request: HttpRequest | None = None
) -> None:
    """Raise PermissionDenied unless the user is on call for this app's project and environment."""
    ensure_role(user, Role.ONCALL, project=application.project, environment=environment.name, request=request)


def rollback_scope_check(*, actor: User, plan: RollbackPlan) -> None:
    """Refuse (and audit) a revert whose commits change apps or environments the actor may not roll back.

    A release-train merge touches several apps' overlays: reverting it reverts them all, so the
    requester needs the on-call role wherever it lands, not only for the app they picked. A shared
    base (`apps/<app>`) lands in every environment of that app.
    """
    touched = sorted({p for c in plan.commits for p in c.paths})
    repository = plan.application.repository
    if not touched or repository is None:
        return
    envs = list(Environment.objects.order_by("order", "name"))
    env_names = {e.pk: e.name for e in envs}
    mapped = PathMapper.for_repository(repository, envs).map(touched, plan.base_branch)
    projects = dict(
        Application.objects.filter(name__in={app for app, _ in mapped}).values_list("name", "project")
    )
    outside: list[str] = []
    for (app_name, env_id), paths in sorted(mapped.items(), key=lambda item: (item[0][0], item[0][1] or 0)):
        if (app_name, env_id) == (plan.application.name, plan.environment.pk):
            continue
        project = projects.get(app_name, "")
        landing = [env_names[env_id]] if env_id is not None else list(env_names.values())
        denied = [e for e in landing if not has_role(actor, Role.ONCALL, project=project, environment=e)]
        if denied:
            outside.append(f"{app_name} in {', '.join(denied)} ({paths[0]})")
    if not outside:
        return
    message = (
        "the reverted commits also change apps or environments you may not roll back: "
        + "; ".join(outside[:5])
        + (f" and {len(outside) - 5} more" if len(outside) > 5 else "")
        + ". Ask someone on call for all of them, or revert only this app's commit."
    )
    audit_event_record(
        action="rollback.refused",
        actor=actor,
        target_type="application",
        target_id=plan.application.pk,
        target_label=plan.application.name,
        app=plan.application.name,
        project=plan.application.project,
        environment=plan.environment.name,
        shas=plan.revert_shas,
        after={"outside": outside, "mode": plan.mode},
        message=message,
    )
    raise RollbackRefused(message, code="outside_scope")


def request_text_clean(value: str, *, limit: int, name: str, required: bool) -> str:
    """Return free text a person typed (reason, incident, justification) cleaned, or refuse it."""
    text = (value or "").replace("\r\n", "\n").strip()
    text = "".join(ch for ch in text if ch in "\n\t" or ord(ch) >= 0x20)
    if required and not text:
        raise RollbackRefused(f"{name} is required", code="required")
    if len(text) > limit:
        raise RollbackRefused(f"{name} is too long (at most {limit} characters)", code="too_long")
    return text


def rollback_request_create(
    *,
    actor: User,
    application: Application,
    environment: Environment,
    mode: str,
    reason: str,
    incident: str = "",
    sha: str = "",
    target_deployment_id: int | None = None,
    observed_deployment_id: int | None = None,
    confirm_moved: bool = False,
    emergency: bool = False,
    emergency_justification: str = "",
    request: HttpRequest | None = None,
) -> RollbackRequest:
    """Check, plan and record a rollback request, then enqueue the task that opens its PR.

    The plan reads Git (fetch), so it is computed before the transaction that writes the row.
    """
    rollback_check_permission(user=actor, application=application, environment=environment, request=request)
    reason = request_text_clean(reason, limit=MAX_REASON, name="a reason", required=True)
    incident = request_text_clean(incident, limit=MAX_INCIDENT, name="the incident reference", required=False)
    if "\n" in incident:
        raise RollbackRefused("the incident reference must be one line", code="invalid")
    justification = request_text_clean(
        emergency_justification, limit=MAX_REASON, name="the justification", required=False
    )
    if emergency:
        if not environment.rollback_auto_merge:
            raise RollbackRefused(
                f"automatic merge of rollbacks is not enabled for {environment.name}", code="emergency"
            )
        if not justification:
            raise RollbackRefused("an emergency merge needs a justification", code="required")

    plan = rollback_plan(
        application=application,
        environment=environment,
        mode=mode,
        sha=sha,
        target_deployment_id=target_deployment_id,
    )
    if plan.errors:
        raise RollbackRefused(plan.errors, code="refused")
    rollback_scope_check(actor=actor, plan=plan)
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
    actor: User,
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
        reason=reason,
        incident=incident,
        **change_requester_fields(actor),
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
        gates=plan.gates,
        degraded_since=degraded_since(plan.application, plan.environment),
    )
    # Chosen once, with a random suffix: nobody can open a PR on the name before the portal does.
    rollback.branch = branch_name_unguessable(rollback.branch_prefix)
    rollback.save(update_fields=["branch"])
    after = {
        "mode": rollback.mode,
        "reason": reason,
        "incident": incident,
        "current_revision": rollback.current_revision,
        "current_version": rollback.current_version,
        "expected_version": rollback.expected_version,
        "target_revision": rollback.target_revision,
        "emergency": emergency,
        "justification": justification,
        "confirmed_warnings": confirmed,
        "gates": [
            {"name": g["name"], "status": "pass" if g["passed"] else "warning", "detail": g["detail"]}
            for g in plan.gates
        ],
    }
    change_record(
        kind=ROLLBACK, change=rollback, action="rollback.requested", actor=actor, after=after, message=reason
    )
    change_enqueue_pr_open(kind=ROLLBACK, change_id=rollback.pk)
    return rollback


def rollback_cancel(
    *, actor: User, rollback: RollbackRequest, request: HttpRequest | None = None
) -> RollbackRequest:
    """Cancel a rollback that is not merged: close its PR and delete its branch."""
    rollback_check_permission(
        user=actor, application=rollback.application, environment=rollback.environment, request=request
    )
    cancelled = rollback.is_cancellable and change_transition(
        kind=ROLLBACK,
        change_id=rollback.pk,
        from_states=RollbackRequest.CANCELLABLE_STATES,
        to=State.CANCELLED,
        action="cancelled",
        actor=actor,
        message="cancelled by the requester",
        cancelled_at=timezone.now(),
    )
    rollback.refresh_from_db()
    if not cancelled:
        raise RollbackRefused(f"a {rollback.get_state_display()} rollback cannot be cancelled")
    error = rollback_close_pr(
        rollback, comment=f"Rollback cancelled in the GitOps Portal by {actor.get_username()}."
    )
    if error:
        RollbackRequest.objects.filter(pk=rollback.pk).update(
            tracking_detail=f"the pull request could not be closed: {error}"[:500]
        )
    return rollback
