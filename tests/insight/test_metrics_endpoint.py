"""/metrics: Prometheus text format that parses, with the portal's numbers, behind a bearer token."""

from __future__ import annotations

from datetime import timedelta

import pytest
import redis
from django.conf import settings as django_settings
from django.contrib.auth import get_user_model
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from accounts.roles import Role
from accounts.services import api_token_create
from audit.models import AuditCheckpoint, AuditEvent
from audit.services import audit_event_record
from insight.signals import TASK_FAILURES_KEY
from inventory.models import ArgoInstance
from rollbacks.models import RollbackRequest
from tests.factories import ApplicationFactory, EnvironmentFactory, user_with_role

from .builders import ArgoApplicationFactory, ClusterFactory, PromotionFactory, RollbackFactory

pytestmark = pytest.mark.django_db


def _scrape(client, token: str | None):
    headers = {"HTTP_AUTHORIZATION": f"Bearer {token}"} if token is not None else {}
    return client.get("/metrics", **headers)


def _samples(response) -> dict[tuple[str, tuple], float]:
    families = list(text_string_to_metric_families(response.content.decode()))
    return {(s.name, tuple(sorted(s.labels.items()))): s.value for f in families for s in f.samples}


def test_metrics_require_a_viewer_token_or_the_metrics_token(client, settings):
    assert _scrape(client, None).status_code == 401
    assert _scrape(client, None)["WWW-Authenticate"].startswith("Bearer")
    assert _scrape(client, "gpp_not-a-token").status_code == 401

    nobody = get_user_model().objects.create_user("no-role", password="x-pass-1234")
    _, raw = api_token_create(user=nobody, name="scrape")
    assert _scrape(client, raw).status_code == 403

    # A signed-in session is not enough: Prometheus scrapes with a bearer token.
    client.force_login(user_with_role(Role.ADMIN))
    assert _scrape(client, None).status_code == 401
    client.logout()

    _, raw = api_token_create(user=user_with_role(Role.VIEWER), name="prometheus")
    assert _scrape(client, raw).status_code == 200

    settings.METRICS_TOKEN = "metrics-token-abcdef"
    ok = _scrape(client, "metrics-token-abcdef")
    assert ok.status_code == 200 and ok["Content-Type"].startswith("text/plain; version=0.0.4")
    assert _scrape(client, "metrics-token-abcdeX").status_code == 401
    assert client.post("/metrics", HTTP_AUTHORIZATION="Bearer metrics-token-abcdef").status_code == 405


def test_metrics_report_the_portal_state(client, settings, purge_broker):
    settings.METRICS_TOKEN = "metrics-token-abcdef"
    now = timezone.now()
    instance = ArgoInstance.objects.create(
        name="argo-eu",
        url="https://argocd.example",
        last_duration_ms=1250,
        last_success_at=now - timedelta(seconds=40),
        is_stale=True,
    )
    prod = EnvironmentFactory(name="prod", order=2, production_like=True)
    stage = EnvironmentFactory(name="stage", order=1)
    app = ApplicationFactory(name="pay-api", project="payments")
    eu = ClusterFactory(instance=instance, name="prod-eu-west-1", environment=prod)
    us = ClusterFactory(instance=instance, name="prod-us-east-1", environment=prod)
    ArgoApplicationFactory(instance=instance, application=app, environment=prod, cluster=eu)
    ArgoApplicationFactory(
        instance=instance,
        application=app,
        environment=prod,
        cluster=us,
        sync_status="OutOfSync",
        health_status="Degraded",
    )
    ArgoApplicationFactory(
        instance=instance, application=app, environment=stage, cluster=ClusterFactory(instance=instance, name="stage-x-y-1"),
        deleted_at=now,
    )  # fmt: skip
    for state in ("merged", "healthy", "healthy"):
        PromotionFactory(source_env=stage, target_env=prod, state=state)
    RollbackFactory(application=app, environment=prod, state=RollbackRequest.State.FAILED)
    audit_event_record(
        action="argocd.instance_stale", target_type="argo_instance", target_id=instance.pk,
        target_label="argo-eu", system_name="poller",
    )  # fmt: skip
    audit_event_record(action="inventory.config_applied", system_name="test")
    head = AuditEvent.objects.order_by("-sequence").first()
    AuditCheckpoint.objects.create(
        head_sequence=head.sequence - 1, head_hash="0" * 64, event_count=head.sequence - 1,
        signature="sig", public_key_id="k", created_at=now - timedelta(minutes=5),
    )  # fmt: skip

    broker = redis.Redis.from_url(django_settings.CELERY_BROKER_URL)
    broker.rpush("promote", "m1", "m2", "m3")
    broker.hincrby(TASK_FAILURES_KEY, "promotions.tasks.promotion_pr_open_task", 2)

    samples = _samples(_scrape(client, "metrics-token-abcdef"))

    def value(name, **labels):
        return samples[(name, tuple(sorted(labels.items())))]

    assert value("gitopsportal_argocd_poll_duration_seconds", instance="argo-eu") == 1.25
    assert 40 <= value("gitopsportal_argocd_poll_lag_seconds", instance="argo-eu") < 60
    assert value("gitopsportal_argocd_instance_stale", instance="argo-eu") == 1
    assert value("gitopsportal_argocd_poll_errors_total", instance="argo-eu") == 1
    assert value(
        "gitopsportal_argocd_applications", instance="argo-eu", sync_status="Synced", health_status="Healthy"
    ) == 1  # fmt: skip
    assert value(
        "gitopsportal_argocd_applications", instance="argo-eu", sync_status="OutOfSync", health_status="Degraded"
    ) == 1  # fmt: skip
    assert value("gitopsportal_promotions", state="healthy") == 2
    assert value("gitopsportal_promotions", state="merged") == 1
    assert value("gitopsportal_promotions", state="failed") == 0
    assert value("gitopsportal_rollbacks", state="failed") == 1
    assert value("gitopsportal_audit_chain_length") == head.sequence
    assert value("gitopsportal_audit_events_since_checkpoint") == 1
    assert value("gitopsportal_audit_last_checkpoint_timestamp_seconds") == pytest.approx(
        (now - timedelta(minutes=5)).timestamp()
    )
    assert value("gitopsportal_celery_queue_length", queue="promote") == 3
    assert value("gitopsportal_celery_queue_length", queue="default") == 0
    assert (
        value("gitopsportal_celery_task_failures_total", task="promotions.tasks.promotion_pr_open_task") == 2
    )
    assert value("gitopsportal_broker_up") == 1
    assert value("gitopsportal_notification_deliveries", status="failed") == 0


def test_task_failures_are_counted_by_the_celery_signal(purge_broker):
    from types import SimpleNamespace

    from insight.signals import task_failed

    task_failed(sender=SimpleNamespace(name="inventory.tasks.poll_all_task"))
    task_failed(sender=SimpleNamespace(name="inventory.tasks.poll_all_task"))
    broker = redis.Redis.from_url(django_settings.CELERY_BROKER_URL)
    assert broker.hget(TASK_FAILURES_KEY, "inventory.tasks.poll_all_task") == b"2"
