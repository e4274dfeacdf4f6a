"""Pages for rollbacks: list, request form with preview, live detail, cancel."""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from accounts.permissions import has_role, project_visible, require_role
from accounts.roles import Role
from changes.rendered import rendered_verdict
from changes.syncs import SyncRefused
from changes.syncview import change_sync_view
from core.http import AuthenticatedHttpRequest
from core.querytext import query_text
from inventory import liveobjects
from inventory.models import Application, Environment

from . import selectors, services
from .forms import RollbackForm
from .kind import ROLLBACK
from .models import RollbackRequest


@require_GET
@require_role(Role.VIEWER)
def rollback_list(request: AuthenticatedHttpRequest) -> HttpResponse:
    filters: dict[str, Any] = {
        "state": request.GET.get("state", "")
        if request.GET.get("state") in RollbackRequest.State.values
        else "",
        "app": query_text(request.GET, "app"),
        "environment": query_text(request.GET, "env", limit=64),
        "emergency": request.GET.get("emergency") == "1",
    }
    rollbacks = list(selectors.rollback_list(user=request.user, **filters)[:200])
    context = {
        "nav": "rollbacks",
        "rollbacks": rollbacks,
        "filters": filters,
        "states": RollbackRequest.State.choices,
        "new_rollback": selectors.new_rollback_choices(user=request.user),
    }
    template = "rollbacks/list.html#rows" if request.htmx else "rollbacks/list.html"
    return render(request, template, context)


def _app_env(request: AuthenticatedHttpRequest, source: dict) -> tuple[Application, Environment]:
    application = get_object_or_404(
        Application.objects.select_related("repository"), name=source.get("app", "")
    )
    environment = get_object_or_404(Environment, name=source.get("env", ""))
    if not project_visible(request.user, application.project):
        raise Http404("no such application")
    services.rollback_check_permission(
        user=request.user, application=application, environment=environment, request=request
    )
    return application, environment


@require_http_methods(["GET", "POST"])
@require_role(Role.ONCALL)
def rollback_new(request: AuthenticatedHttpRequest) -> HttpResponse:
    """GET: the form and its preview (htmx refreshes the preview); POST: request the rollback."""
    source = request.POST if request.method == "POST" else request.GET
    application, environment = _app_env(request, source)
    requested_mode = source.get("mode", "")
    mode = requested_mode if requested_mode in RollbackRequest.Mode.values else RollbackRequest.Mode.PREVIOUS
    sha = (source.get("sha") or "").strip()[:64]
    raw_target = query_text(source, "target", limit=20)
    target = int(raw_target) if raw_target.isdigit() else None
    moved: list[str] = []
    if request.method == "POST":
        form = RollbackForm(request.POST)
        if form.is_valid():
            data = form.cleaned_data
            try:
                rollback = services.rollback_request_create(
                    actor=request.user,
                    application=application,
                    environment=environment,
                    mode=data["mode"],
                    sha=data["sha"],
                    target_deployment_id=data["target"],
                    reason=data["reason"],
                    incident=data["incident"],
                    observed_deployment_id=data["observed_deployment"],
                    confirm_moved=data["confirm_moved"],
                    emergency=data["emergency"],
                    emergency_justification=data["emergency_justification"],
                    request=request,
                )
            except services.RollbackNeedsConfirmation as exc:
                moved = exc.warnings
                plan = exc.plan
                # Show the new state and ask again; the preview carries the new deployment id.
                return _render_form(request, application, environment, form, plan, moved, status=409)
            except services.RollbackRefused as exc:
                form.add_error(None, exc)
            else:
                messages.success(
                    request, f"Rollback #{rollback.pk} requested: the revert PR is being opened."
                )
                return redirect("rollbacks:detail", pk=rollback.pk)
    else:
        form = RollbackForm(initial={"mode": mode, "sha": sha, "target": target})
    # The full page fetches the mirror; htmx preview refreshes (typing a SHA) reuse it.
    fetch = not (request.htmx and request.method == "GET")
    plan = selectors.rollback_plan(
        application=application,
        environment=environment,
        mode=mode,
        sha=sha,
        target_deployment_id=target,
        fetch=fetch,
    )
    status = 400 if request.method == "POST" else 200
    if request.htmx and request.method == "GET":
        return render(
            request,
            "rollbacks/new.html#preview",
            _form_context(application, environment, form, plan, moved),
        )
    return _render_form(request, application, environment, form, plan, moved, status=status)


def _form_context(
    application: Application,
    environment: Environment,
    form: RollbackForm,
    plan: selectors.RollbackPlan,
    moved: list[str],
) -> dict[str, Any]:
    return {
        "nav": "rollbacks",
        "application": application,
        "environment": environment,
        "form": form,
        "plan": plan,
        "moved": moved,
        "auto_merge_allowed": environment.rollback_auto_merge,
    }


def _render_form(
    request: AuthenticatedHttpRequest,
    application: Application,
    environment: Environment,
    form: RollbackForm,
    plan: selectors.RollbackPlan,
    moved: list[str],
    *,
    status: int,
) -> HttpResponse:
    return render(
        request,
        "rollbacks/new.html",
        _form_context(application, environment, form, plan, moved),
        status=status,
    )


def _visible_rollback(request: AuthenticatedHttpRequest, pk: int) -> RollbackRequest:
    try:
        rollback = selectors.rollback_detail(pk=pk)
    except RollbackRequest.DoesNotExist:
        raise Http404("no such rollback") from None
    if not project_visible(request.user, rollback.application.project):
        raise Http404("no such rollback")
    return rollback


@require_GET
@require_role(Role.VIEWER)
def rollback_detail(request: AuthenticatedHttpRequest, pk: int) -> HttpResponse:
    rollback = _visible_rollback(request, pk)
    argo_apps = selectors.rollback_argo_status(rollback)
    context = {
        "nav": "rollbacks",
        "rollback": rollback,
        "argo_apps": argo_apps,
        "argo_live": liveobjects.live_objects(argo_apps, app_sets=False) if rollback.merged_at else None,
        "reverted_promotions": selectors.rollback_reverted_promotions(rollback),
        "can_cancel": rollback.is_cancellable
        and has_role(
            request.user,
            Role.ONCALL,
            project=rollback.application.project,
            environment=rollback.environment.name,
        ),
        "can_approve_after": services.rollback_can_approve_after(user=request.user, rollback=rollback),
        "sync": change_sync_view(
            kind=ROLLBACK, change=rollback, user=request.user, retry_roles=services.SYNC_RETRY_ROLES
        ),
        # The stored checks; the panel loads the live ones itself (rollback_checks).
        "checks": services.rollback_checks(rollback, live=False),
        "checks_url": reverse("rollbacks:checks", args=[rollback.pk]),
        "checks_first_render": True,
    }
    # The status and, out of band, the forms that follow the state (sync, after-the-fact approval).
    template = "rollbacks/detail.html#poll" if request.htmx else "rollbacks/detail.html"
    return render(request, template, context)


@require_GET
@require_role(Role.VIEWER)
def rollback_checks(request: AuthenticatedHttpRequest, pk: int) -> HttpResponse:
    """The checks panel of a rollback, read from the forge now (htmx polls it while the PR is open)."""
    rollback = _visible_rollback(request, pk)
    context = {
        "checks": services.rollback_checks(rollback, live=True),
        "checks_url": reverse("rollbacks:checks", args=[rollback.pk]),
    }
    return render(request, "changes/_checks.html", context)


@require_GET
@require_role(Role.VIEWER)
def rollback_rendered(request: AuthenticatedHttpRequest, pk: int) -> HttpResponse:
    """The rendered diff partial (htmx, lazy: Argo CD renders both revisions of every cluster's app)."""
    rollback = _visible_rollback(request, pk)
    changes = services.rollback_rendered(rollback)
    context = {"changes": changes, "gate": rendered_verdict(changes), "change": rollback}
    return render(request, "changes/_rendered.html", context)


@require_POST
@require_role(Role.ONCALL)
def rollback_cancel(request: AuthenticatedHttpRequest, pk: int) -> HttpResponse:
    rollback = _visible_rollback(request, pk)
    try:
        services.rollback_cancel(actor=request.user, rollback=rollback, request=request)
    except services.RollbackRefused as exc:
        messages.error(request, "; ".join(exc.messages))
    except PermissionDenied:
        raise
    else:
        messages.success(request, f"Rollback #{rollback.pk} cancelled; its pull request was closed.")
    return redirect("rollbacks:detail", pk=rollback.pk)


@require_POST
@require_role(Role.APPROVER)
def rollback_sync_override(request: AuthenticatedHttpRequest, pk: int) -> HttpResponse:
    """Override the closed sync window of a merged rollback (an approver, never the requester)."""
    rollback = _visible_rollback(request, pk)
    try:
        services.rollback_sync_override(
            rollback=rollback, actor=request.user, reason=request.POST.get("reason", "")[:2000]
        )
    except SyncRefused as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, "Sync window overridden: the portal asks Argo CD to sync now.")
    return redirect("rollbacks:detail", pk=rollback.pk)


@require_POST
@require_role(Role.VIEWER)
def rollback_sync_retry(request: AuthenticatedHttpRequest, pk: int) -> HttpResponse:
    """Retry a failed sync (on-call or approver of the app: checked by the service)."""
    rollback = _visible_rollback(request, pk)
    try:
        services.rollback_sync_retry(rollback=rollback, actor=request.user)
    except SyncRefused as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, "Sync retried: the portal asks Argo CD to sync again.")
    return redirect("rollbacks:detail", pk=rollback.pk)


@require_POST
@require_role(Role.APPROVER)
def rollback_approve_after(request: AuthenticatedHttpRequest, pk: int) -> HttpResponse:
    rollback = _visible_rollback(request, pk)
    try:
        services.rollback_approve_after_the_fact(
            actor=request.user, rollback=rollback, reason=request.POST.get("reason", ""), request=request
        )
    except services.RollbackRefused as exc:
        messages.error(request, "; ".join(exc.messages))
    else:
        messages.success(request, f"Emergency rollback #{rollback.pk} approved after the fact.")
    return redirect("rollbacks:detail", pk=rollback.pk)
