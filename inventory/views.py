"""Pages about what runs where: the matrix, one app, the polled instances."""

from __future__ import annotations

from django.http import Http404, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from accounts.permissions import ensure_role, project_visible, require_role
from accounts.roles import Role
from core.diffs import classify_diff
from core.http import AuthenticatedHttpRequest

from . import appdetail, liveobjects, selectors
from .matrix import MatrixFilters, deployment_matrix
from .models import Application, Environment
from .overlays import overlay_diff
from .ownership import ownership_conflicts_of


@require_GET
@require_role(Role.VIEWER)
def matrix(request: AuthenticatedHttpRequest) -> HttpResponse:
    filters = MatrixFilters.from_query(request.GET)
    data = deployment_matrix(user=request.user, filters=filters)
    params = request.GET.copy()
    params.pop("page", None)
    context = {
        "matrix": data,
        "filters": filters,
        "query": request.GET.urlencode(),
        "base_query": params.urlencode(),
        "nav": "matrix",
    }
    template = "inventory/matrix.html#grid" if getattr(request, "htmx", False) else "inventory/matrix.html"
    return render(request, template, context, status=400 if filters.errors else 200)


@require_GET
@require_role(Role.VIEWER)
def app_detail(request: AuthenticatedHttpRequest, name: str) -> HttpResponse:
    app = Application.objects.select_related("repository").filter(name=name).first()
    if app is None:
        raise Http404("no such application")
    if not project_visible(request.user, app.project):
        ensure_role(request.user, Role.VIEWER, project=app.project, request=request)
    sections = appdetail.app_detail(application=app, user=request.user)
    for section in sections:
        section.live = liveobjects.live_objects(section.argo_apps)
    envs = [s.environment for s in sections]
    by_name = {e.name: e for e in envs}
    left = by_name.get(request.GET.get("left", ""))
    right = by_name.get(request.GET.get("right", ""))
    if (left is None or right is None) and len(envs) >= 2:
        left, right = envs[-2], envs[-1]
    diff = None
    if left is not None and right is not None and left != right:
        diff = overlay_diff(
            application=app,
            left=left,
            right=right,
            left_revision=_running(sections, left),
            right_revision=_running(sections, right),
        )
    context = {
        "app": app,
        "sections": sections,
        "out_of_band_help": appdetail.OUT_OF_BAND_HELP,
        "lane": appdetail.pipeline_lane(sections),
        "conflicts": ownership_conflicts_of(app=app),
        "environments": envs,
        "left": left,
        "right": right,
        "diff": diff,
        "diff_lines": classify_diff(diff.text if diff else ""),
        "nav": "matrix",
    }
    return render(request, "inventory/app_detail.html", context)


def _running(sections: list[appdetail.EnvSection], env: Environment) -> str:
    for section in sections:
        if section.environment == env:
            for argo_app in section.argo_apps:
                if argo_app.deployed_revision:
                    return argo_app.deployed_revision
    return ""


@require_GET
@require_role(Role.VIEWER)
def instances(request: AuthenticatedHttpRequest) -> HttpResponse:
    argo_instances, repositories, _ = selectors.instance_status_list(user=request.user)
    return render(
        request,
        "inventory/instances.html",
        {"instances": argo_instances, "repositories": repositories, "nav": "matrix"},
    )
