"""The /metrics exposition: read from the database and the broker at scrape time (no process-local state).

A fresh registry per scrape with one custom collector, so every gunicorn worker answers the same
numbers and nothing needs the prometheus multiprocess directory. A handful of aggregate queries.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import redis
from django.conf import settings
from django.db.models import Count, Max
from django.utils import timezone
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from audit.models import AuditCheckpoint, AuditEvent
from gitopsportal.celery import ALL_QUEUES
from inventory.models import ArgoApplication, ArgoInstance
from promotions.models import Promotion, PromotionState
from rollbacks.models import RollbackRequest

from .models import Delivery
from .signals import TASK_FAILURES_KEY, TASK_RETRIES_KEY

logger = logging.getLogger(__name__)

# The classic text format every Prometheus version reads (what generate_latest writes).
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def celery_queues() -> list[str]:
    """Return the names of the queues the portal's workers consume."""
    return [q for q in ALL_QUEUES.split(",") if q]


class PortalCollector:
    """Collect the portal's metrics on each scrape."""

    def collect(self) -> Iterator[Metric]:
        yield from self._argocd()
        yield from self._apps()
        yield from self._flows()
        yield from self._audit()
        yield from self._notifications()
        yield from self._broker()

    def _argocd(self) -> Iterator[Metric]:
        now = timezone.now()
        duration = GaugeMetricFamily(
            "gitopsportal_argocd_poll_duration_seconds",
            "Duration of the last poll of each Argo CD instance",
            labels=["instance"],
        )
        lag = GaugeMetricFamily(
            "gitopsportal_argocd_poll_lag_seconds",
            "Seconds since the last successful poll of each Argo CD instance",
            labels=["instance"],
        )
        last_success = GaugeMetricFamily(
            "gitopsportal_argocd_last_success_timestamp_seconds",
            "Unix time of the last successful poll",
            labels=["instance"],
        )
        stale = GaugeMetricFamily(
            "gitopsportal_argocd_instance_stale",
            "1 when the last poll of the instance failed (its data is shown as stale)",
            labels=["instance"],
        )
        apps_seen = GaugeMetricFamily(
            "gitopsportal_argocd_apps_seen", "Applications listed by the last poll", labels=["instance"]
        )
        errors = CounterMetricFamily(
            "gitopsportal_argocd_poll_errors",
            "Times an instance became unreachable (argocd.instance_stale audit events)",
            labels=["instance"],
        )
        stale_counts = dict(
            AuditEvent.objects.filter(action="argocd.instance_stale")
            .values_list("target_label")
            .annotate(n=Count("id"))
            .values_list("target_label", "n")
        )
        for instance in ArgoInstance.objects.order_by("name").only(
            "name", "last_duration_ms", "last_success_at", "is_stale", "apps_seen"
        ):
            name = instance.name
            if instance.last_duration_ms is not None:
                duration.add_metric([name], instance.last_duration_ms / 1000)
            if instance.last_success_at is not None:
                lag.add_metric([name], max(0.0, (now - instance.last_success_at).total_seconds()))
                last_success.add_metric([name], instance.last_success_at.timestamp())
            stale.add_metric([name], 1.0 if instance.is_stale else 0.0)
            apps_seen.add_metric([name], instance.apps_seen)
            errors.add_metric([name], stale_counts.get(name, 0))
        yield from (duration, lag, last_success, stale, apps_seen, errors)

    def _apps(self) -> Iterator[Metric]:
        family = GaugeMetricFamily(
            "gitopsportal_argocd_applications",
            "Argo CD applications by instance, sync and health status",
            labels=["instance", "sync_status", "health_status"],
        )
        for instance, sync, health, n in (
            ArgoApplication.objects.live()
            .values_list("instance__name", "sync_status", "health_status")
            .annotate(n=Count("id"))
            .order_by("instance__name", "sync_status", "health_status")
        ):
            family.add_metric([instance, sync or "Unknown", health or "Unknown"], n)
        yield family
        conflicts = GaugeMetricFamily(
            "gitopsportal_application_ownership_conflicts",
            "Argo CD apps naming a portal app outside its pinned Argo CD projects (not attached)",
            labels=["instance"],
        )
        for instance, n in (
            ArgoApplication.objects.live()
            .exclude(ownership_conflict="")
            .values_list("instance__name")
            .annotate(n=Count("id"))
            .order_by("instance__name")
        ):
            conflicts.add_metric([instance], n)
        yield conflicts

    def _flows(self) -> Iterator[Metric]:
        promotions = GaugeMetricFamily(
            "gitopsportal_promotions", "Promotion requests by state", labels=["state"]
        )
        counts = dict(
            Promotion.objects.values_list("state").annotate(n=Count("id")).values_list("state", "n")
        )
        for state in PromotionState.values:
            promotions.add_metric([state], counts.get(state, 0))
        rollbacks = GaugeMetricFamily(
            "gitopsportal_rollbacks", "Rollback requests by state", labels=["state"]
        )
        counts = dict(
            RollbackRequest.objects.values_list("state").annotate(n=Count("id")).values_list("state", "n")
        )
        for state in RollbackRequest.State.values:
            rollbacks.add_metric([state], counts.get(state, 0))
        yield promotions
        yield rollbacks

    def _audit(self) -> Iterator[Metric]:
        head = AuditEvent.objects.aggregate(head=Max("sequence"))["head"] or 0
        yield GaugeMetricFamily(
            "gitopsportal_audit_chain_length",
            "Events in the hash-chained audit ledger (head sequence)",
            value=head,
        )
        checkpoint = AuditCheckpoint.objects.order_by("-id").only("created_at", "head_sequence").first()
        signed = GaugeMetricFamily(
            "gitopsportal_audit_last_checkpoint_timestamp_seconds",
            "Unix time of the last signed checkpoint of the chain head (the audit app's verification anchor)",
        )
        behind = GaugeMetricFamily(
            "gitopsportal_audit_events_since_checkpoint",
            "Audit events appended after the last signed checkpoint",
        )
        if checkpoint is not None:
            signed.add_metric([], checkpoint.created_at.timestamp())
            behind.add_metric([], max(0, head - checkpoint.head_sequence))
        else:
            behind.add_metric([], head)
        yield signed
        yield behind

    def _notifications(self) -> Iterator[Metric]:
        family = GaugeMetricFamily(
            "gitopsportal_notification_deliveries", "Webhook deliveries by status", labels=["status"]
        )
        counts = dict(
            Delivery.objects.values_list("status").annotate(n=Count("id")).values_list("status", "n")
        )
        for status in Delivery.Status.values:
            family.add_metric([status], counts.get(status, 0))
        yield family

    def _broker(self) -> Iterator[Metric]:
        depth = GaugeMetricFamily(
            "gitopsportal_celery_queue_length",
            "Messages waiting in each Celery queue (Redis LLEN)",
            labels=["queue"],
        )
        failures = CounterMetricFamily(
            "gitopsportal_celery_task_failures", "Celery task failures by task name", labels=["task"]
        )
        retries = CounterMetricFamily(
            "gitopsportal_celery_task_retries", "Celery task retries by task name", labels=["task"]
        )
        up = GaugeMetricFamily("gitopsportal_broker_up", "1 when the Redis broker answered this scrape")
        if settings.BROKER_IS_EMBEDDED:
            yield from (depth, failures, retries)
            return
        try:
            client: Any = redis.Redis.from_url(
                settings.CELERY_BROKER_URL, socket_timeout=2, socket_connect_timeout=2
            )
            pipe = client.pipeline()
            queues = celery_queues()
            for queue in queues:
                pipe.llen(queue)
            pipe.hgetall(TASK_FAILURES_KEY)
            pipe.hgetall(TASK_RETRIES_KEY)
            answers = pipe.execute()
        except Exception as exc:  # the broker being down is itself worth exporting
            logger.warning("metrics: broker unreachable: %s", type(exc).__name__)
            up.add_metric([], 0)
            yield from (depth, failures, retries, up)
            return
        for queue, length in zip(queues, answers, strict=False):
            depth.add_metric([queue], int(length))
        for family, mapping in ((failures, answers[-2]), (retries, answers[-1])):
            for name, value in sorted(mapping.items()):
                family.add_metric([name.decode()], int(value))
        up.add_metric([], 1)
        yield from (depth, failures, retries, up)


def render_metrics() -> bytes:
    """Return the exposition text of one scrape."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(PortalCollector())
    return generate_latest(registry)
