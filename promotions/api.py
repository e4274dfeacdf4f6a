"""Promotion API: request, read, approve, reject, override the checklist, cancel, retry a given-up
sync, override a closed sync window (same checks as the browser)."""

from __future__ import annotations

from typing import Any

from accounts.permissions import project_visible
from accounts.roles import Role
from api.http import ApiError, api_view, read_json
from changes.checklist import OVERRIDE_MIN_REASON
from changes.checks import checks_json
from changes.syncs import SyncRefused
from changes.syncview import change_sync_json
from core.http import AuthenticatedHttpRequest
from inventory.models import Application, Environment

from . import selectors, services
from .models import Promotion


def promotion_json(p: Promotion) -> dict[str, Any]:
    """The API shape of a promotion (items and approvals must be prefetched)."""
    return {
        "id": p.pk,
        "state": p.state,
        "source": p.source_env.name,
        "target": p.target_env.name,
        "repository": p.repository.name,
        "requested_by": p.requested_by_name,
        "note": p.note,
        "override_sync_window": p.override_sync_window,
        "override_justification": p.override_justification,
        "apps": [
            {
                "app": i.application.name,
                "source_revision": i.source_revision,
                "source_versions": i.source_versions,
                "target_revision_before": i.target_revision_before,
                "deployed_revision": i.deployed_revision,
                "version_before": i.version_before,
                "version_after": i.version_after,
                "paths": i.paths,
                "deployed_at": i.deployed_at,
                "healthy_at": i.healthy_at,
            }
            for i in p.items.all()
        ],
        "approvals": [
            {
                "approver": a.approver_name,
                "decision": a.decision,
                "comment": a.comment,
                "at": a.at,
                "head_sha": a.head_sha or None,
                "invalidated_at": a.invalidated_at,
            }
            for a in p.approvals.all()
        ],
        "branch": {
            "name": p.pr_branch,
            "pushed_head_sha": p.pushed_head_sha or None,
            "pushed_at": p.branch_pushed_at,
        }
        if p.pr_branch
        else None,
        "pull_request": {
            "number": p.pr_number,
            "url": p.pr_url,
            "branch": p.pr_branch,
            "head_sha": p.pr_head_sha,
        }
        if p.pr_branch or p.pr_number
        else None,
        "merge_commit_sha": p.merge_commit_sha or None,
        "failure_reason": p.failure_reason or None,
        "last_error": p.last_error or None,
        "tracking_error": p.tracking_error or None,
        "checks": checks_json(p),
        "sync": change_sync_json(p),
        "lead_time_seconds": int(p.lead_time.total_seconds()) if p.lead_time is not None else None,
        "attempts": p.attempts,
        "gates": p.gates,
        "gate_evaluations": p.gate_evaluations,
        "correlation_id": p.correlation_id,
        "timestamps": {
            name: getattr(p, f"{name}_at")
            for name in (
                "requested",
                "approved",
                "rejected",
                "pr_opening",
                "pr_opened",
                "merged",
                "syncing",
                "deployed",
                "healthy",
                "degraded",
                "failed",
                "cancelled",
                "abandoned",
            )
        },
        "url": p.get_absolute_url(),
    }


def _refused(exc: services.PromotionRefused) -> ApiError:
    if isinstance(exc, services.PromotionRetryLater):
        # Nothing was recorded and the same request may succeed shortly (the forge was unavailable).
        return ApiError(503, exc.message, retryable=True, retry_after=exc.retry_after)
    return ApiError(
        409,
        exc.message,
        gates=[g.as_dict() for g in exc.gates],
        **({"conflict": exc.link} if exc.link else {}),
    )


@api_view(("GET", "POST"), role=Role.VIEWER)
def promotions(request: AuthenticatedHttpRequest) -> Any:
    """GET /api/v1/promotions (filters state, to, app, mine) · POST /api/v1/promotions {apps, from, to}."""
    if request.method == "GET":
        page = selectors.promotion_list(
            user=request.user, filters=selectors.ListFilters.from_query(request.GET)
        )
        return {
            "promotions": [promotion_json(p) for p in page.rows],
            "page": page.page,
            "has_next": page.has_next,
        }
    body = read_json(request)
    apps = body.get("apps", body.get("app"))
    if isinstance(apps, str):
        apps = [apps]
    if not isinstance(apps, list) or not apps or not all(isinstance(a, str) for a in apps) or len(apps) > 50:
        raise ApiError(400, "apps: a list of 1 to 50 application names")
    source_name, target_name = body.get("from"), body.get("to")
    if not isinstance(source_name, str) or not source_name:
        raise ApiError(400, "from: the source environment name")
    source = Environment.objects.filter(name=source_name).first()
    if source is None:
        raise ApiError(400, f"from: unknown environment {source_name!r}")
    if target_name in (None, ""):
        target = selectors.next_environment(source)
    elif isinstance(target_name, str):
        target = Environment.objects.filter(name=target_name).first()
    else:
        target = None
    if target is None:
        raise ApiError(400, "to: unknown environment (or no environment after the source)")
    found = {a.name: a for a in Application.objects.filter(name__in=apps).select_related("repository")}
    missing = [a for a in apps if a not in found or not project_visible(request.user, found[a].project)]
    if missing:
        raise ApiError(404, f"unknown application(s): {', '.join(missing)}")
    for key in ("note", "override_justification"):
        if not isinstance(body.get(key, ""), str):
            raise ApiError(400, f"{key}: a string")
    try:
        promotion = services.promotion_request_create(
            actor=request.user,
            applications=[found[a] for a in dict.fromkeys(apps)],
            source_env=source,
            target_env=target,
            note=body.get("note", "")[:4000],
            override_justification=body.get("override_justification", "")[:4000],
        )
    except services.PromotionRefused as exc:
        raise _refused(exc) from None
    return promotion_json(selectors.promotion_get(user=request.user, pk=promotion.pk)), 201


@api_view(("GET",), role=Role.VIEWER)
def promotion_detail(request: AuthenticatedHttpRequest, pk: int) -> dict[str, Any]:
    """GET /api/v1/promotions/{id}."""
    return promotion_json(selectors.promotion_get(user=request.user, pk=pk))


def _comment(request: AuthenticatedHttpRequest) -> str:
    return _text(read_json(request), "comment")


def _text(body: dict[str, Any], key: str, limit: int = 4000) -> str:
    value = body.get(key, "")
    if not isinstance(value, str):
        raise ApiError(400, f"{key}: a string")
    return value[:limit]


@api_view(("POST",), role=Role.APPROVER)
def promotion_approve(request: AuthenticatedHttpRequest, pk: int) -> dict[str, Any]:
    """POST /api/v1/promotions/{id}/approve {comment, head_sha}: approve the pushed branch head.

    `head_sha` (optional, recommended) is the commit the approver reviewed; 409 if the branch moved.
    """
    promotion = selectors.promotion_get(user=request.user, pk=pk)
    body = read_json(request)
    try:
        services.promotion_approve(
            promotion=promotion,
            actor=request.user,
            comment=_text(body, "comment"),
            head_sha=_text(body, "head_sha", 64),
        )
    except services.PromotionRefused as exc:
        raise _refused(exc) from None
    return promotion_json(selectors.promotion_get(user=request.user, pk=pk))


@api_view(("POST",), role=Role.APPROVER)
def promotion_reject(request: AuthenticatedHttpRequest, pk: int) -> dict[str, Any]:
    """POST /api/v1/promotions/{id}/reject {comment}."""
    promotion = selectors.promotion_get(user=request.user, pk=pk)
    try:
        services.promotion_reject(promotion=promotion, actor=request.user, comment=_comment(request))
    except services.PromotionRefused as exc:
        raise _refused(exc) from None
    return promotion_json(selectors.promotion_get(user=request.user, pk=pk))


@api_view(("POST",), role=Role.APPROVER)
def promotion_checklist_override(request: AuthenticatedHttpRequest, pk: int) -> dict[str, Any]:
    """POST /api/v1/promotions/{id}/checklist-override {reason}: override the blocking zero-downtime
    checklist (an approver, never the requester; the reason goes to the ledger). Approving is a
    separate decision."""
    promotion = selectors.promotion_get(user=request.user, pk=pk)
    reason = " ".join(_text(read_json(request), "reason").split())
    if len(reason) < OVERRIDE_MIN_REASON:
        raise ApiError(
            400, f"reason: required, at least {OVERRIDE_MIN_REASON} characters saying why it is safe"
        )
    try:
        services.promotion_checklist_override(promotion=promotion, actor=request.user, reason=reason)
    except services.PromotionRefused as exc:
        raise _refused(exc) from None
    return promotion_json(selectors.promotion_get(user=request.user, pk=pk))


@api_view(("POST",), role=Role.RELEASE_MANAGER)
def promotion_cancel(request: AuthenticatedHttpRequest, pk: int) -> dict[str, Any]:
    """POST /api/v1/promotions/{id}/cancel {comment}."""
    promotion = selectors.promotion_get(user=request.user, pk=pk)
    try:
        services.promotion_cancel(promotion=promotion, actor=request.user, reason=_comment(request))
    except services.PromotionRefused as exc:
        raise _refused(exc) from None
    return promotion_json(selectors.promotion_get(user=request.user, pk=pk))


@api_view(("POST",), role=Role.VIEWER)
def promotion_sync_retry(request: AuthenticatedHttpRequest, pk: int) -> dict[str, Any]:
    """POST /api/v1/promotions/{id}/sync-retry: ask Argo CD again for a given-up sync (a release
    manager or approver of the apps: checked by the service, as for the browser); 409 when the sync
    has not failed."""
    promotion = selectors.promotion_get(user=request.user, pk=pk)
    try:
        services.promotion_sync_retry(promotion=promotion, actor=request.user)
    except SyncRefused as exc:
        raise ApiError(409, str(exc)) from None
    return promotion_json(selectors.promotion_get(user=request.user, pk=pk))


@api_view(("POST",), role=Role.APPROVER)
def promotion_sync_override(request: AuthenticatedHttpRequest, pk: int) -> dict[str, Any]:
    """POST /api/v1/promotions/{id}/sync-override {reason}: sync now although the window is closed
    (an approver, never the requester; the reason goes to the ledger); 409 when no sync waits for a
    window or the reason is too short."""
    promotion = selectors.promotion_get(user=request.user, pk=pk)
    reason = _text(read_json(request), "reason", 2000)
    try:
        services.promotion_sync_override(promotion=promotion, actor=request.user, reason=reason)
    except SyncRefused as exc:
        raise ApiError(409, str(exc)) from None
    return promotion_json(selectors.promotion_get(user=request.user, pk=pk))
