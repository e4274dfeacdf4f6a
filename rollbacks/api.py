"""JSON API of rollbacks: the same checks as the browser, for incident bots and chat-ops."""

from __future__ import annotations

from typing import Any

from accounts.permissions import project_visible
from accounts.roles import Role
from api.http import ApiError, api_view, read_json
from changes.checks import checks_json
from changes.syncs import SyncRefused
from changes.syncview import change_sync_json
from core.http import AuthenticatedHttpRequest
from inventory.models import Application, Environment

from . import selectors, services
from .models import RollbackRequest


def rollback_as_json(rollback: RollbackRequest) -> dict[str, Any]:
    ttr = rollback.time_to_restore
    ttr_degraded = rollback.time_to_restore_from_degraded
    return {
        "id": rollback.pk,
        "url": services.rollback_url(rollback),
        "application": rollback.application.name,
        "environment": rollback.environment.name,
        "mode": rollback.mode,
        "state": rollback.state,
        "requested_by": rollback.requested_by_name,
        "reason": rollback.reason,
        "incident": rollback.incident,
        "emergency": rollback.emergency,
        "emergency_justification": rollback.emergency_justification,
        "current_revision": rollback.current_revision,
        "current_version": rollback.current_version,
        "target_revision": rollback.target_revision or None,
        "expected_version": rollback.expected_version,
        "revert_shas": list(rollback.revert_shas),
        "branch": rollback.branch,
        "pushed_head_sha": rollback.pushed_head_sha or None,
        "branch_pushed_at": rollback.branch_pushed_at,
        "pr_number": rollback.pr_number,
        "pr_url": rollback.pr_url or None,
        "merge_commit_sha": rollback.merge_commit_sha or None,
        "failure_reason": rollback.failure_reason or None,
        "conflict_files": list(rollback.conflict_files),
        "tracking_detail": rollback.tracking_detail or None,
        "tracking_error": rollback.tracking_error or None,
        "checks": checks_json(rollback),
        "sync": change_sync_json(rollback),
        "requested_at": rollback.requested_at,
        "pr_opened_at": rollback.pr_opened_at,
        "auto_merged_at": rollback.auto_merged_at,
        "merged_at": rollback.merged_at,
        "deployed_at": rollback.deployed_at,
        "healthy_at": rollback.healthy_at,
        "failed_at": rollback.failed_at,
        "cancelled_at": rollback.cancelled_at,
        "approved_after_by": rollback.approved_after_by_name or None,
        "approved_after_head_sha": rollback.approved_after_head_sha or None,
        "degraded_since": rollback.degraded_since,
        "time_to_restore_seconds": ttr.total_seconds() if ttr else None,
        "time_to_restore_from_degraded_seconds": ttr_degraded.total_seconds() if ttr_degraded else None,
    }


def _text(payload: dict[str, Any], name: str, *, required: bool = False) -> str:
    value = payload.get(name, "")
    if value is None:
        value = ""
    if not isinstance(value, str):
        raise ApiError(400, f"{name} must be a string")
    if required and not value.strip():
        raise ApiError(400, f"{name} is required")
    return value


def _flag(payload: dict[str, Any], name: str) -> bool:
    value = payload.get(name, False)
    if not isinstance(value, bool):
        raise ApiError(400, f"{name} must be true or false")
    return value


@api_view(("GET", "POST"), role=Role.VIEWER)
def rollbacks_collection(request: AuthenticatedHttpRequest) -> Any:
    if request.method == "GET":
        rows = selectors.rollback_list(
            user=request.user,
            state=request.GET.get("state", ""),
            app=request.GET.get("app", ""),
            environment=request.GET.get("environment", ""),
        )[:100]
        return {"rollbacks": [rollback_as_json(r) for r in rows]}
    payload = read_json(request)
    app_name = _text(payload, "app", required=True)
    env_name = _text(payload, "environment", required=True)
    application = Application.objects.select_related("repository").filter(name=app_name).first()
    environment = Environment.objects.filter(name=env_name).first()
    if application is None or not project_visible(request.user, application.project):
        raise ApiError(404, f"unknown application {app_name!r}")
    if environment is None:
        raise ApiError(404, f"unknown environment {env_name!r}")
    mode = _text(payload, "mode") or RollbackRequest.Mode.PREVIOUS
    if mode not in RollbackRequest.Mode.values:
        raise ApiError(400, "mode must be 'previous' or 'commit'")
    observed = payload.get("observed_deployment_id")
    if observed is not None and (not isinstance(observed, int) or isinstance(observed, bool)):
        raise ApiError(400, "observed_deployment_id must be an integer")
    target = payload.get("target_deployment_id")
    if target is not None and (not isinstance(target, int) or isinstance(target, bool)):
        raise ApiError(400, "target_deployment_id must be an integer")
    try:
        rollback = services.rollback_request_create(
            actor=request.user,
            application=application,
            environment=environment,
            mode=mode,
            sha=_text(payload, "sha"),
            target_deployment_id=target,
            reason=_text(payload, "reason", required=True),
            incident=_text(payload, "incident"),
            observed_deployment_id=observed,
            confirm_moved=_flag(payload, "confirm"),
            emergency=_flag(payload, "emergency"),
            emergency_justification=_text(payload, "justification"),
            request=request,
        )
    except services.RollbackNeedsConfirmation as exc:
        raise ApiError(
            409,
            "the environment moved on; review and send again with confirm=true",
            warnings=exc.warnings,
            plan=exc.plan.as_dict(),
        ) from None
    except services.RollbackRefused as exc:
        raise ApiError(400, "; ".join(exc.messages), errors=exc.messages) from None
    return rollback_as_json(rollback), 201


def _visible(request: AuthenticatedHttpRequest, pk: int) -> RollbackRequest:
    try:
        rollback = selectors.rollback_detail(pk=pk)
    except RollbackRequest.DoesNotExist:
        raise ApiError(404, "no such rollback") from None
    if not project_visible(request.user, rollback.application.project):
        raise ApiError(404, "no such rollback")
    return rollback


@api_view(("GET",), role=Role.VIEWER)
def rollback_item(request: AuthenticatedHttpRequest, pk: int) -> Any:
    return rollback_as_json(_visible(request, pk))


@api_view(("POST",), role=Role.ONCALL)
def rollback_cancel(request: AuthenticatedHttpRequest, pk: int) -> Any:
    rollback = _visible(request, pk)
    try:
        rollback = services.rollback_cancel(actor=request.user, rollback=rollback, request=request)
    except services.RollbackRefused as exc:
        raise ApiError(409, "; ".join(exc.messages)) from None
    return rollback_as_json(rollback)


@api_view(("POST",), role=Role.VIEWER)
def rollback_sync_retry(request: AuthenticatedHttpRequest, pk: int) -> Any:
    """POST /api/v1/rollbacks/{id}/sync-retry: ask Argo CD again for a given-up sync (on call or an
    approver of the app: checked by the service, as for the browser); 409 when it has not failed."""
    rollback = _visible(request, pk)
    try:
        rollback = services.rollback_sync_retry(rollback=rollback, actor=request.user)
    except SyncRefused as exc:
        raise ApiError(409, str(exc)) from None
    return rollback_as_json(selectors.rollback_detail(pk=rollback.pk))


@api_view(("POST",), role=Role.APPROVER)
def rollback_sync_override(request: AuthenticatedHttpRequest, pk: int) -> Any:
    """POST /api/v1/rollbacks/{id}/sync-override {reason}: sync now although the window is closed
    (an approver, never the requester); 409 when no sync waits for a window or the reason is short."""
    rollback = _visible(request, pk)
    reason = read_json(request).get("reason", "")
    if not isinstance(reason, str):
        raise ApiError(400, "reason: a string")
    try:
        rollback = services.rollback_sync_override(
            rollback=rollback, actor=request.user, reason=reason[:2000]
        )
    except SyncRefused as exc:
        raise ApiError(409, str(exc)) from None
    return rollback_as_json(selectors.rollback_detail(pk=rollback.pk))
