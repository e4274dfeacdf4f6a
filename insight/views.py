"""Insight pages: DORA metrics, drift and exceptions, notification admin; and /metrics."""

from __future__ import annotations

import csv
import hmac
import io
from datetime import datetime
from typing import Any

from django.conf import settings
from django.contrib import messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils import timezone
from django.views.decorators.http import require_GET, require_POST

from accounts.permissions import ensure_role, has_role, project_visible, require_role
from accounts.roles import Role
from accounts.tokens import InvalidApiToken, bearer_token_user
from core.durations import format_duration
from core.http import AuthenticatedHttpRequest

from . import charts, metrics
from .drift import CATEGORY_LABELS, CONFIGURATION, MUTATION, OPERATIONAL, drift_resources_fetch
from .forms import SubscriptionForm
from .models import Delivery, Subscription
from .prometheus import CONTENT_TYPE, render_metrics
from .selectors import (
    DoraFilters,
    dora_report,
    drift_argo_app_get,
    drift_overview,
    exceptions_list,
)
from .services import subscription_create, subscription_delete, subscription_update

# =============================================================================================
# DORA


def _bucket_label(start: datetime, period: str) -> str:
    return start.strftime("%Y-%m-%d") if period == "week" else start.strftime("%Y-%m")


def _duration(value: float | None) -> str:
    """Return a duration in the portal's one format ("—" when there is no sample)."""
    return format_duration(value) or "—"


def _count(value: float) -> str:
    return str(round(value))


def _percent(value: float) -> str:
    return f"{value * 100:.0f}%"


def _dora_charts(report: metrics.Report) -> list[charts.Chart]:
    labels = [_bucket_label(start, report.period) for start, _ in report.trend]
    period = report.period
    return [
        charts.bar_chart(
            chart_id="chart-frequency",
            title=f"Production deployments per {period}",
            desc=f"Bar chart: number of production deployments in each of the last {len(labels)} {period}s.",
            labels=labels,
            values=[s.deployments for _, s in report.trend],
            fmt=_count,
            unit="deployments",
        ),
        charts.line_chart(
            chart_id="chart-lead",
            title="Lead time for changes (commit → running in prod)",
            desc=f"Line chart per {period}: median and p90 lead time; gaps where nothing was deployed.",
            labels=labels,
            series=[
                ("median", [s.lead_running_median for _, s in report.trend]),
                ("p90", [s.lead_running_p90 for _, s in report.trend]),
                ("median to healthy", [s.lead_healthy_median for _, s in report.trend]),
            ],
            fmt=_duration,
            scale="duration",
        ),
        charts.bar_chart(
            chart_id="chart-lead-distribution",
            title="Distribution of lead times (commit → running in prod)",
            desc="Histogram: number of changes per lead-time range over the whole period.",
            labels=[label for label, _ in report.lead_distribution],
            values=[n for _, n in report.lead_distribution],
            fmt=_count,
            unit="changes",
        ),
        charts.line_chart(
            chart_id="chart-cfr",
            title="Change failure rate",
            desc=f"Line chart per {period}: share of production deployments that failed.",
            labels=labels,
            series=[("failure rate", [s.change_failure_rate for _, s in report.trend])],
            fmt=_percent,
            scale="ratio",
        ),
        charts.line_chart(
            chart_id="chart-ttr",
            title="Time to restore",
            desc=f"Line chart per {period}: median and p90 time from degraded (or rollback request) to healthy.",
            labels=labels,
            series=[
                ("median", [s.restore_median for _, s in report.trend]),
                ("p90", [s.restore_p90 for _, s in report.trend]),
            ],
            fmt=_duration,
            scale="duration",
        ),
    ]


def _summary_text(key: str, s: metrics.Summary) -> dict[str, Any]:
    rate = s.change_failure_rate
    return {
        "key": key,
        "s": s,
        "lead_median": _duration(s.lead_running_median),
        "lead_p90": _duration(s.lead_running_p90),
        "lead_healthy": _duration(s.lead_healthy_median),
        "cfr": "—" if rate is None else _percent(rate),
        "ttr_median": _duration(s.restore_median),
        "ttr_p90": _duration(s.restore_p90),
    }


@require_GET
@require_role(Role.VIEWER)
def dora(request: AuthenticatedHttpRequest) -> HttpResponse:
    filters = DoraFilters.from_query(request.GET)
    report, inputs = dora_report(user=request.user, filters=filters)
    total = _summary_text("all", report.total)
    context = {
        "lead_median": total["lead_median"],
        "lead_p90": total["lead_p90"],
        "lead_healthy": total["lead_healthy"],
        "cfr": total["cfr"],
        "ttr_median": total["ttr_median"],
        "ttr_p90": total["ttr_p90"],
        "breakdowns": [
            ("application", [_summary_text(k, v) for k, v in report.by_app]),
            ("project", [_summary_text(k, v) for k, v in report.by_project]),
            ("environment", [_summary_text(k, v) for k, v in report.by_environment]),
        ],
        "nav": "insight",
        "insight_tab": "dora",
        "filters": filters,
        "report": report,
        "inputs": inputs,
        "charts": _dora_charts(report),
        "definitions": metrics.DEFINITIONS,
        "failure_window_hours": settings.INSIGHT_FAILURE_WINDOW_HOURS,
        "querystring": filters.querystring(),
    }
    if request.htmx:
        return render(request, "insight/dora.html#report", context)
    return render(request, "insight/dora.html", context)


def _csv_cell(value: Any) -> Any:
    # Spreadsheet formula injection: text starting with = + - @ is quoted.
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value


def _num(value: float | None) -> str:
    return "" if value is None else f"{value:.0f}" if float(value).is_integer() else f"{value:.3f}"


CSV_HEADER = [
    "scope",
    "key",
    "period_start",
    "deployments",
    "failed_deployments",
    "change_failure_rate",
    "lead_time_running_median_s",
    "lead_time_running_p90_s",
    "lead_time_healthy_median_s",
    "lead_time_healthy_p90_s",
    "lead_time_samples",
    "restores",
    "time_to_restore_median_s",
    "time_to_restore_p90_s",
]


def _csv_row(scope: str, key: str, start: str, s: metrics.Summary) -> list[Any]:
    rate = s.change_failure_rate
    return [
        scope,
        _csv_cell(key),
        start,
        s.deployments,
        s.failed,
        "" if rate is None else f"{rate:.4f}",
        _num(s.lead_running_median),
        _num(s.lead_running_p90),
        _num(s.lead_healthy_median),
        _num(s.lead_healthy_p90),
        s.lead_samples,
        s.restores,
        _num(s.restore_median),
        _num(s.restore_p90),
    ]


@require_GET
@require_role(Role.VIEWER)
def dora_csv(request: AuthenticatedHttpRequest) -> HttpResponse:
    filters = DoraFilters.from_query(request.GET)
    report, _ = dora_report(user=request.user, filters=filters)
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(CSV_HEADER)
    first = report.starts[0].date().isoformat()
    for start, summary in report.trend:
        writer.writerow(_csv_row(report.period, "all", start.date().isoformat(), summary))
    writer.writerow(_csv_row("total", "all", first, report.total))
    for scope, rows in (
        ("app", report.by_app),
        ("project", report.by_project),
        ("environment", report.by_environment),
    ):
        for key, summary in rows:
            writer.writerow(_csv_row(scope, key, first, summary))
    response = HttpResponse(buffer.getvalue(), content_type="text/csv; charset=utf-8")
    stamp = timezone.now().strftime("%Y%m%d")
    response["Content-Disposition"] = f'attachment; filename="dora-{filters.period}-{stamp}.csv"'
    return response


# =============================================================================================
# Drift and exceptions


def _minutes(raw: str | None) -> int | None:
    try:
        value = int(raw or "")
    except ValueError:
        return None
    return value if 1 <= value <= 7 * 24 * 60 else None


@require_GET
@require_role(Role.VIEWER)
def drift(request: AuthenticatedHttpRequest) -> HttpResponse:
    minutes = _minutes(request.GET.get("minutes"))
    context = {
        "nav": "insight",
        "insight_tab": "drift",
        "groups": drift_overview(user=request.user),
        "exceptions": exceptions_list(user=request.user, sync_lag_minutes=minutes),
        "category_labels": CATEGORY_LABELS,
    }
    return render(request, "insight/drift.html", context)


@require_GET
@require_role(Role.VIEWER)
def drift_resources(request: AuthenticatedHttpRequest, pk: int) -> HttpResponse:
    argo_app = drift_argo_app_get(user=request.user, pk=pk)
    if argo_app is None:
        raise Http404("no such application")
    project = argo_app.application.project if argo_app.application else argo_app.project
    if not project_visible(request.user, project):
        raise Http404("no such application")
    ensure_role(
        request.user,
        Role.VIEWER,
        project=project,
        environment=argo_app.environment.name if argo_app.environment else None,
        request=request,
    )
    result = drift_resources_fetch(argo_app=argo_app)
    context = {
        "nav": "insight",
        "insight_tab": "drift",
        "argo_app": argo_app,
        "result": result,
        "configuration": CONFIGURATION,
        "operational": OPERATIONAL,
        "mutation": MUTATION,
        "counts": {
            "configuration": result.count(CONFIGURATION),
            "operational": result.count(OPERATIONAL),
            "mutation": result.count(MUTATION),
        },
    }
    if request.htmx:
        return render(request, "insight/drift_resources.html#resources", context)
    return render(request, "insight/drift_resources.html", context)


# =============================================================================================
# Notifications (admin)


def _notifications_context(form: SubscriptionForm) -> dict[str, Any]:
    return {
        "nav": "insight",
        "insight_tab": "notifications",
        "form": form,
        "subscriptions": list(Subscription.objects.all()),
        "deliveries": list(
            Delivery.objects.select_related("subscription").order_by("-created_at", "-id")[:100]
        ),
    }


@require_GET
@require_role(Role.ADMIN)
def notifications(request: AuthenticatedHttpRequest) -> HttpResponse:
    context = _notifications_context(SubscriptionForm())
    if request.htmx and request.GET.get("part") == "log":
        return render(request, "insight/notifications.html#log", context)
    return render(request, "insight/notifications.html", context)


@require_POST
@require_role(Role.ADMIN)
def subscription_new(request: AuthenticatedHttpRequest) -> HttpResponse:
    form = SubscriptionForm(request.POST)
    if form.is_valid():
        data = form.cleaned_data
        try:
            subscription_create(
                actor=request.user,
                name=data["name"],
                project_glob=data["project_glob"],
                event_kinds=data["all_kinds"],
                target_kind=data["target_kind"],
                url=data["url"],
                secret=data.get("secret") or "",
            )
        except ValidationError as exc:
            for field_name, errors in exc.message_dict.items():
                form.add_error(field_name if field_name in form.fields else None, errors)
        else:
            messages.success(request, f"Subscription {data['name']} created.")
            return redirect("insight:notifications")
    return render(request, "insight/notifications.html", _notifications_context(form), status=400)


def _subscription_or_404(pk: int) -> Subscription:
    subscription = Subscription.objects.filter(pk=pk).first()
    if subscription is None:
        raise Http404("no such subscription")
    return subscription


@require_POST
@require_role(Role.ADMIN)
def subscription_toggle(request: AuthenticatedHttpRequest, pk: int) -> HttpResponse:
    subscription = _subscription_or_404(pk)
    subscription_update(actor=request.user, subscription_id=subscription.pk, active=not subscription.active)
    messages.success(
        request, f"Subscription {subscription.name} {'paused' if subscription.active else 'resumed'}."
    )
    return redirect("insight:notifications")


@require_POST
@require_role(Role.ADMIN)
def subscription_remove(request: AuthenticatedHttpRequest, pk: int) -> HttpResponse:
    subscription = _subscription_or_404(pk)
    subscription_delete(actor=request.user, subscription_id=subscription.pk)
    messages.success(request, f"Subscription {subscription.name} deleted.")
    return redirect("insight:notifications")


# =============================================================================================
# /metrics (Prometheus)


def _unauthorized(message: str, status: int = 401) -> HttpResponse:
    response = HttpResponse(message + "\n", status=status, content_type="text/plain; charset=utf-8")
    if status == 401:
        response["WWW-Authenticate"] = 'Bearer realm="metrics"'
    return response


@require_GET
def prometheus_metrics(request: HttpRequest) -> HttpResponse:
    """Prometheus exposition; needs `Authorization: Bearer` with METRICS_TOKEN or a viewer's API token."""
    header = request.headers.get("Authorization", "")
    if not header.lower().startswith("bearer ") or not header[7:].strip():
        return _unauthorized("send Authorization: Bearer <METRICS_TOKEN or API token>")
    raw = header[7:].strip()
    configured = settings.METRICS_TOKEN
    if not (configured and hmac.compare_digest(raw.encode(), configured.encode())):
        try:
            user = bearer_token_user(request)
        except InvalidApiToken as exc:
            return _unauthorized(str(exc))
        if user is None:
            return _unauthorized("invalid token")
        try:
            if not has_role(user, Role.VIEWER):
                ensure_role(user, Role.VIEWER, request=request)
        except PermissionDenied:
            return _unauthorized("the token's user needs the viewer role", status=403)
    return HttpResponse(render_metrics(), content_type=CONTENT_TYPE)
