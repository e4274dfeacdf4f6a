"""Promotion pages: list, "Promote to <next env>" (preview + request), detail with live timeline."""

from __future__ import annotations

from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.http import HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST

from accounts.permissions import ensure_role, project_visible, require_role
from accounts.roles import Role
from changes.syncs import SyncRefused
from changes.syncview import change_sync_view
from core.http import AuthenticatedHttpRequest
from inventory import liveobjects
from inventory.models import Application, Environment

from . import selectors, services
from .gates import gate_rendered, may_override_sync_window
from .kind import PROMOTION
from .models import PromotionBlock, PromotionState


@require_GET
@require_role(Role.VIEWER)
def promotion_list(request: AuthenticatedHttpRequest) -> HttpResponse:
    filters = selectors.ListFilters.from_query(request.GET)
    page = selectors.promotion_list(user=request.user, filters=filters)
    query = request.GET.copy()
    query.pop("page", None)
    context = {
        "nav": "promotions",
        "page": page,
        "filters": filters,
        "states": PromotionState.choices,
        "environments": Environment.objects.all(),
        "base_query": query.urlencode(),
        "can_request": selectors.promotion_can_request(user=request.user),
    }
    if request.htmx:
        return render(request, "promotions/list.html#table", context)
    return render(request, "promotions/list.html", context)


def _environment(name: str | None) -> Environment | None:
    return Environment.objects.filter(name=name).first() if name else None


def _selected_apps(request: AuthenticatedHttpRequest, names: list[str]) -> list[Application]:
    names = [n for n in dict.fromkeys(names) if n][:50]
    apps = list(Application.objects.filter(name__in=names).select_related("repository").order_by("name"))
    for app in apps:
        if not project_visible(request.user, app.project):
            raise PermissionDenied("application not visible")
    return apps


@require_GET
@require_role(Role.RELEASE_MANAGER)
def promotion_new(request: AuthenticatedHttpRequest) -> HttpResponse:
    """Preview a promotion of one or more apps from `from` to `to` (default: the next env)."""
    source = _environment(request.GET.get("from"))
    target = _environment(request.GET.get("to")) or (selectors.next_environment(source) if source else None)
    apps = _selected_apps(request, request.GET.getlist("app"))
    for app in apps:
        if target is not None:
            ensure_role(
                request.user,
                Role.RELEASE_MANAGER,
                project=app.project,
                environment=target.name,
                request=request,
            )
    preview = error = None
    if source and target and apps:
        try:
            preview = services.promotion_preview(
                actor=request.user, applications=apps, source_env=source, target_env=target
            )
        except services.PromotionRefused as exc:
            error = exc.message
    context = {
        "nav": "promotions",
        "source": source,
        "target": target,
        "apps": apps,
        "app_names": [a.name for a in apps],
        "choices": selectors.promotable_applications(user=request.user),
        "environments": Environment.objects.all(),
        "preview": preview,
        "error": error,
        "may_override": bool(apps and target)
        and all(may_override_sync_window(request.user, a, target) for a in apps),  # type: ignore[arg-type]
    }
    return render(request, "promotions/new.html", context)


@require_POST
@require_role(Role.RELEASE_MANAGER)
def promotion_create(request: AuthenticatedHttpRequest) -> HttpResponse:
    source = _environment(request.POST.get("from"))
    target = _environment(request.POST.get("to"))
    apps = _selected_apps(request, request.POST.getlist("app"))
    back = reverse("promotions:new") + "?" + request.POST.urlencode().replace("csrfmiddlewaretoken", "_")
    if not (source and target and apps):
        messages.error(request, "Choose the applications, the source and the target environment.")
        return redirect(back)
    try:
        promotion = services.promotion_request_create(
            actor=request.user,
            applications=apps,
            source_env=source,
            target_env=target,
            note=request.POST.get("note", "")[:4000],
            override_justification=request.POST.get("override_justification", "")[:4000],
        )
    except services.PromotionRefused as exc:
        messages.error(request, f"Promotion refused: {exc.message}")
        if exc.link:
            return redirect(exc.link)
        return redirect(back)
    messages.success(request, f"Promotion #{promotion.pk} requested.")
    return redirect(promotion)


@require_GET
@require_role(Role.VIEWER)
def promotion_detail(request: AuthenticatedHttpRequest, pk: int) -> HttpResponse:
    promotion = selectors.promotion_get(user=request.user, pk=pk)
    argo_apps = selectors.promotion_argo_apps(promotion)
    context = {
        "nav": "promotions",
        "promotion": promotion,
        "argo_apps": argo_apps,
        "items": list(promotion.items.all()),
        "approvals": list(promotion.approvals.all()),
        "timeline": selectors.promotion_timeline(promotion),
        "can": selectors.promotion_abilities(promotion, request.user),
        "live": not promotion.is_final,
        # Rollouts of the target, read live once the merge can be rolling out.
        "argo_live": liveobjects.live_objects(argo_apps, app_sets=False) if promotion.merged_at else None,
        "sync": change_sync_view(
            kind=PROMOTION, change=promotion, user=request.user, retry_roles=services.SYNC_RETRY_ROLES
        ),
        # The stored checks; the panel loads the live ones itself (promotion_checks).
        "checks": selectors.promotion_checks(promotion, live=False),
        "checks_url": reverse("promotions:checks", args=[promotion.pk]),
        "checks_first_render": True,
    }
    if request.htmx:
        # The live part and, out of band, the approvals and the forms that follow the state.
        return render(request, "promotions/detail.html#poll", context)
    return render(request, "promotions/detail.html", context)


@require_GET
@require_role(Role.VIEWER)
def promotion_checks(request: AuthenticatedHttpRequest, pk: int) -> HttpResponse:
    """The checks panel of a promotion, read from the forge now (htmx polls it while the PR is open)."""
    promotion = selectors.promotion_get(user=request.user, pk=pk)
    context = {
        "checks": selectors.promotion_checks(promotion, live=True),
        "checks_url": reverse("promotions:checks", args=[promotion.pk]),
    }
    return render(request, "changes/_checks.html", context)


@require_GET
@require_role(Role.VIEWER)
def promotion_rendered(request: AuthenticatedHttpRequest, pk: int) -> HttpResponse:
    """The rendered diff partial (htmx, lazy: Argo CD renders both revisions of every app)."""
    promotion = selectors.promotion_get(user=request.user, pk=pk)
    changes = services.promotion_rendered(promotion)
    context = {"changes": changes, "gate": gate_rendered(changes), "change": promotion}
    return render(request, "changes/_rendered.html", context)


def _decision(request: AuthenticatedHttpRequest, pk: int, action: str) -> HttpResponse:
    promotion = selectors.promotion_get(user=request.user, pk=pk)
    comment = request.POST.get("comment", "")[:4000]
    try:
        if action == "approve":
            services.promotion_approve(
                promotion=promotion,
                actor=request.user,
                comment=comment,
                head_sha=request.POST.get("head_sha", "")[:64],
            )
            messages.success(request, "Approval recorded.")
        elif action == "reject":
            services.promotion_reject(promotion=promotion, actor=request.user, comment=comment)
            messages.success(request, "Promotion rejected.")
        else:
            services.promotion_cancel(promotion=promotion, actor=request.user, reason=comment)
            messages.success(request, "Promotion cancelled; its pull request is being closed.")
    except services.PromotionRefused as exc:
        messages.error(request, exc.message)
    return redirect(promotion)


@require_POST
@require_role(Role.APPROVER)
def promotion_approve(request: AuthenticatedHttpRequest, pk: int) -> HttpResponse:
    return _decision(request, pk, "approve")


@require_POST
@require_role(Role.APPROVER)
def promotion_reject(request: AuthenticatedHttpRequest, pk: int) -> HttpResponse:
    return _decision(request, pk, "reject")


@require_POST
@require_role(Role.APPROVER)
def promotion_checklist_override(request: AuthenticatedHttpRequest, pk: int) -> HttpResponse:
    promotion = selectors.promotion_get(user=request.user, pk=pk)
    try:
        services.promotion_checklist_override(
            promotion=promotion, actor=request.user, reason=request.POST.get("reason", "")[:4000]
        )
        messages.success(request, "Zero-downtime checklist overridden; the promotion can now be approved.")
    except services.PromotionRefused as exc:
        messages.error(request, exc.message)
    return redirect(promotion)


@require_POST
@require_role(Role.RELEASE_MANAGER)
def promotion_cancel(request: AuthenticatedHttpRequest, pk: int) -> HttpResponse:
    return _decision(request, pk, "cancel")


@require_POST
@require_role(Role.APPROVER)
def promotion_sync_override(request: AuthenticatedHttpRequest, pk: int) -> HttpResponse:
    """Override the closed sync window of a merged promotion (an approver, never the requester)."""
    promotion = selectors.promotion_get(user=request.user, pk=pk)
    try:
        services.promotion_sync_override(
            promotion=promotion, actor=request.user, reason=request.POST.get("reason", "")[:2000]
        )
    except SyncRefused as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, "Sync window overridden: the portal asks Argo CD to sync now.")
    return redirect(promotion)


@require_POST
@require_role(Role.VIEWER)
def promotion_sync_retry(request: AuthenticatedHttpRequest, pk: int) -> HttpResponse:
    """Retry a failed sync (release manager or approver of the apps: checked by the service)."""
    promotion = selectors.promotion_get(user=request.user, pk=pk)
    try:
        services.promotion_sync_retry(promotion=promotion, actor=request.user)
    except SyncRefused as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, "Sync retried: the portal asks Argo CD to sync again.")
    return redirect(promotion)


@require_POST
@require_role(Role.RELEASE_MANAGER)
def promotion_block_clear(request: AuthenticatedHttpRequest, pk: int) -> HttpResponse:
    block = get_object_or_404(PromotionBlock.objects.select_related("application", "environment"), pk=pk)
    if not project_visible(request.user, block.application.project):
        raise PermissionDenied("not visible")
    services.promotion_block_clear(block=block, actor=request.user)
    messages.success(request, f"Block on {block.blocked_version} in {block.environment.name} cleared.")
    next_url = request.POST.get("next", "")
    return redirect(next_url if next_url.startswith("/promotions/") else "promotions:list")
