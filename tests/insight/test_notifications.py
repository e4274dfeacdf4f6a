"""Notifications: signed generic webhooks and Slack payloads, retries, the delivery log, the admin page.

Deliveries go to a real HTTP receiver (a stdlib server in this process) and, once, through a real
Celery worker on Redis.
"""

from __future__ import annotations

import hashlib
import hmac
import importlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from django.apps import apps as django_apps
from django.db import connection, transaction
from django.urls import reverse

from accounts.roles import Role
from audit.models import AuditEvent
from audit.services import audit_event_record
from insight import webhooks
from insight.models import Delivery, Subscription
from insight.services import delivery_send, notify_event, retry_delay, subscription_create
from tests.conftest import WorkerProcess, wait_for
from tests.factories import ApplicationFactory, user_with_role

SECRET = "whsec-test-0123456789"


class Receiver:
    """A local webhook receiver: answers the queued status codes in order (then 200), records requests."""

    def __init__(self, statuses: list[int] | None = None) -> None:
        self.statuses = list(statuses or [])
        self.requests: list[dict] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                receiver.requests.append({"headers": dict(self.headers), "body": body, "path": self.path})
                status = receiver.statuses.pop(0) if receiver.statuses else 200
                self.send_response(status)
                self.send_header("Content-Type", "text/plain")
                self.end_headers()
                self.wfile.write(b"ok" if status < 300 else b"receiver exploded")

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/portal"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> Receiver:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()


def _verify(request: dict, secret: str = SECRET) -> bool:
    """Verify a delivery exactly as a receiver would: HMAC-SHA256 of the raw body."""
    expected = "sha256=" + hmac.new(secret.encode(), request["body"], hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, request["headers"].get("X-GitopsPortal-Signature-256", ""))


def _event(action: str = "promotion.merged", app: str = "pay-api", **extra) -> AuditEvent:
    return audit_event_record(
        action=action, target_type="promotion", target_id=7, app=app, environment="prod",
        message="pay-api 1.4.3 merged", pr_url="http://forge.example/acme/gitops/pull/7",
        system_name="test", **extra,
    )  # fmt: skip


def _subscription(url: str, **overrides) -> Subscription:
    values = {
        "actor": None,
        "name": "ops-hook",
        "project_glob": "pay*",
        "event_kinds": ["promotion.*", "rollback.*"],
        "target_kind": Subscription.Target.GENERIC,
        "url": url,
        "secret": SECRET,
    } | overrides
    return subscription_create(**values)


@pytest.mark.django_db
def test_signed_delivery_retries_after_a_500_then_succeeds(settings):
    settings.INSIGHT_WEBHOOK_RETRY_BASE_SECONDS = 5
    ApplicationFactory(name="pay-api", project="payments")
    with Receiver([500]) as receiver:
        subscription = _subscription(receiver.url)
        event = _event()
        [delivery_id] = notify_event(event)

        first = delivery_send(delivery_id=delivery_id)
        assert (first.status, first.response_code, first.delay) == ("retry", 500, 5)
        delivery = Delivery.objects.get(pk=delivery_id)
        assert (delivery.status, delivery.attempts, delivery.error) == (
            "retrying",
            1,
            "HTTP 500: receiver exploded",
        )

        second = delivery_send(delivery_id=delivery_id)
        assert (second.status, second.response_code) == ("succeeded", 200)
        assert delivery_send(delivery_id=delivery_id).status == "skipped"  # safe to run twice

    assert len(receiver.requests) == 2
    assert receiver.requests[0]["body"] == receiver.requests[1]["body"]  # identical on retry
    for request in receiver.requests:
        assert _verify(request)
        assert request["headers"]["X-GitopsPortal-Event"] == "promotion.merged"
        assert request["headers"]["X-GitopsPortal-Delivery"] == f"{subscription.pk}-{event.sequence}"
        assert request["path"] == "/hooks/portal"
    assert not _verify(receiver.requests[0], secret="another-secret")
    payload = json.loads(receiver.requests[0]["body"])
    assert payload["event"]["action"] == "promotion.merged"
    assert payload["event"]["sequence"] == event.sequence and payload["event"]["hash"] == event.hash
    assert payload["projects"] == ["payments"]
    delivery = Delivery.objects.get(pk=delivery_id)
    assert (delivery.status, delivery.attempts, delivery.response_code, delivery.error) == (
        "succeeded",
        2,
        200,
        "",
    )
    assert delivery.payload_hash == hashlib.sha256(receiver.requests[0]["body"]).hexdigest()


@pytest.mark.django_db
def test_permanent_errors_and_exhausted_attempts_fail(settings):
    settings.INSIGHT_WEBHOOK_MAX_ATTEMPTS = 2
    ApplicationFactory(name="pay-api", project="payments")
    with Receiver([410, 503, 503]) as receiver:
        _subscription(receiver.url)
        [gone] = notify_event(_event())
        assert delivery_send(delivery_id=gone).status == "failed"  # 410: the receiver will never take it
        _subscription(receiver.url, name="other")
        [flaky] = [d for d in notify_event(_event()) if d != gone][-1:]
        assert delivery_send(delivery_id=flaky).status == "retry"
        assert delivery_send(delivery_id=flaky).status == "failed"
    assert Delivery.objects.get(pk=flaky).error.startswith("HTTP 503")
    # Unreachable receivers are transient errors.
    sub = _subscription("http://127.0.0.1:9/nothing", name="closed")
    ids = notify_event(_event())
    closed = Delivery.objects.get(pk__in=ids, subscription=sub)
    outcome = delivery_send(delivery_id=closed.pk)
    assert outcome.status == "retry" and "ConnectionError" in Delivery.objects.get(pk=closed.pk).error


def test_retry_delays_double_and_are_capped(settings):
    settings.INSIGHT_WEBHOOK_RETRY_BASE_SECONDS = 10
    settings.CELERY_RETRY_BACKOFF_MAX = 120
    assert [retry_delay(n) for n in range(1, 7)] == [10, 20, 40, 80, 120, 120]


@pytest.mark.django_db
def test_matching_by_event_kind_and_project_glob():
    ApplicationFactory(name="pay-api", project="payments")
    ApplicationFactory(name="shop-web", project="checkout")
    pay = _subscription("https://hooks.example/pay")
    everything = _subscription("https://hooks.example/all", name="all", project_glob="*", event_kinds=["*"])
    drift = _subscription(
        "https://hooks.example/drift", name="drift", project_glob="*", event_kinds=["drift.*", "exception.*"]
    )
    paused = _subscription("https://hooks.example/paused", name="paused", project_glob="*", event_kinds=["*"])
    Subscription.objects.filter(pk=paused.pk).update(active=False)

    def targets(event):
        return set(
            Delivery.objects.filter(pk__in=notify_event(event)).values_list("subscription_id", flat=True)
        )

    assert targets(_event()) == {pay.pk, everything.pk}
    assert targets(_event(app="shop-web")) == {everything.pk}
    assert targets(_event(action="drift.detected", app="shop-web")) == {everything.pk, drift.pk}
    # A promotion of several apps carries "a,b": any of their projects matches.
    assert targets(_event(app="shop-web,pay-api")) == {pay.pk, everything.pk}
    event = _event()
    first = notify_event(event)
    assert notify_event(event) == [] and Delivery.objects.filter(pk__in=first).count() == 2  # idempotent


def test_slack_payload_escapes_untrusted_text():
    class Event:
        sequence, action, app, environment = 42, "rollback.failed", "pay-api", "prod"
        actor_name = "<@U123|boss>"
        message = "revert conflict in <https://evil.example|click me> & more"
        pr_url = "http://forge.example/acme/gitops/pull/9"
        out_of_band = False

    payload = webhooks.slack_payload(Event(), projects=["payments"], portal_url="https://portal.example/")
    text = payload["blocks"][0]["text"]["text"]
    assert payload["text"] == "rollback.failed pay-api → prod"
    assert "&lt;https://evil.example|click me&gt; &amp; more" in text
    assert "&lt;@U123|boss&gt;" in text
    assert "<https://portal.example/audit/events/42/|audit event #42>" in text
    assert text.startswith(":rotating_light:")


@pytest.mark.django_db
def test_a_failing_notification_never_blocks_the_change(monkeypatch, django_capture_on_commit_callbacks):
    def explode(event):
        raise RuntimeError("webhook subsystem down")

    monkeypatch.setattr("insight.services.notify_event", explode)
    with django_capture_on_commit_callbacks(execute=True) as callbacks, transaction.atomic():
        event = _event()
    assert len(callbacks) >= 1
    assert AuditEvent.objects.filter(pk=event.pk).exists()


@pytest.mark.django_db
def test_notifications_page_is_for_admins_and_keeps_the_secret_encrypted(client):
    client.force_login(user_with_role(Role.VIEWER))
    assert client.get(reverse("insight:notifications")).status_code == 403
    assert client.post(reverse("insight:subscription_new"), {}).status_code == 403

    client.force_login(user_with_role(Role.ADMIN))
    assert client.get(reverse("insight:notifications")).status_code == 200
    response = client.post(
        reverse("insight:subscription_new"),
        {
            "name": "<b>team</b> hook",
            "project_glob": "payments",
            "event_kinds": ["promotion.*"],
            "extra_kinds": "exception.detected",
            "target_kind": "generic-webhook",
            "url": "https://hooks.example/portal",
            "secret": SECRET,
        },
    )
    assert response.status_code == 302
    subscription = Subscription.objects.get()
    assert subscription.event_kinds == ["promotion.*", "exception.detected"]
    assert subscription.secret == SECRET
    with connection.cursor() as cursor:
        cursor.execute("SELECT secret FROM insight_subscription WHERE id = %s", [subscription.pk])
        assert SECRET not in cursor.fetchone()[0]
    created = AuditEvent.objects.get(action="insight.subscription_created")
    assert SECRET not in json.dumps(created.after) and created.after["signed"] is True

    page = client.get(reverse("insight:notifications")).content.decode()
    assert "&lt;b&gt;team&lt;/b&gt; hook" in page and SECRET not in page
    log = client.get(reverse("insight:notifications"), {"part": "log"}, HTTP_HX_REQUEST="true")
    assert b"Delivery log" in log.content and b"<html" not in log.content

    bad = client.post(
        reverse("insight:subscription_new"), {"name": "x", "target_kind": "generic-webhook", "url": "ftp://x"}
    )
    assert bad.status_code == 400

    client.post(reverse("insight:subscription_toggle", args=[subscription.pk]))
    assert Subscription.objects.get().active is False
    client.post(reverse("insight:subscription_delete", args=[subscription.pk]))
    assert not Subscription.objects.exists()
    assert AuditEvent.objects.filter(action__startswith="insight.subscription_").count() == 3


@pytest.mark.worker
def test_worker_delivers_after_commit_and_retries_a_500(transactional_db, purge_broker, tmp_path):
    ApplicationFactory(name="pay-api", project="payments")
    worker = WorkerProcess(
        tmp_path / "worker.log", extra_env={"INSIGHT_WEBHOOK_RETRY_BASE_SECONDS": "1"}
    ).start()
    try:
        with Receiver([500]) as receiver:
            _subscription(receiver.url)
            with transaction.atomic():
                event = _event()  # committed here: the post_save hook enqueues on commit
            delivery = wait_for(
                lambda: Delivery.objects.filter(event_sequence=event.sequence, status="succeeded").first(),
                timeout=30,
                message="the delivery to succeed after one retry",
            )
        assert delivery.attempts == 2 and delivery.response_code == 200
        assert [_verify(r) for r in receiver.requests] == [True, True]
        assert receiver.requests[0]["body"] == receiver.requests[1]["body"]
    finally:
        worker.stop()


SLACK_URL = "https://hooks.slack.com/services/T0PORTAL/B0PORTAL/s3cr3tSlackTokenXYZ"


@pytest.mark.django_db
def test_a_slack_webhook_url_is_encrypted_at_rest_and_never_rendered(client):
    client.force_login(user_with_role(Role.ADMIN))
    response = client.post(
        reverse("insight:subscription_new"),
        {
            "name": "slack",
            "project_glob": "*",
            "event_kinds": ["promotion.*"],
            "target_kind": "slack",
            "url": SLACK_URL,
        },
    )
    assert response.status_code == 302
    subscription = Subscription.objects.get()
    assert subscription.url == SLACK_URL
    with connection.cursor() as cursor:
        cursor.execute("SELECT url FROM insight_subscription WHERE id = %s", [subscription.pk])
        assert "s3cr3t" not in cursor.fetchone()[0]
    page = client.get(reverse("insight:notifications")).content.decode()
    assert "s3cr3t" not in page and "/services/" not in page and "URL set (host ….com)" in page
    created = AuditEvent.objects.get(action="insight.subscription_created")
    assert "s3cr3t" not in json.dumps(created.after)

    # A form sent back with errors does not echo the URL either.
    bad = client.post(
        reverse("insight:subscription_new"), {"name": "", "target_kind": "slack", "url": SLACK_URL}
    )
    assert bad.status_code == 400 and "s3cr3t" not in bad.content.decode()


@pytest.mark.django_db
def test_the_migration_encrypts_webhook_urls_stored_in_plain_text():
    migration = importlib.import_module("insight.migrations.0002_encrypt_subscription_url")
    subscription = _subscription("https://hooks.example/portal")
    with connection.cursor() as cursor:
        cursor.execute("UPDATE insight_subscription SET url = %s WHERE id = %s", [SLACK_URL, subscription.pk])
    with connection.schema_editor() as editor:
        migration.encrypt_urls(django_apps, editor)
        migration.encrypt_urls(django_apps, editor)  # a re-run leaves encrypted values alone
    with connection.cursor() as cursor:
        cursor.execute("SELECT url FROM insight_subscription WHERE id = %s", [subscription.pk])
        assert "s3cr3t" not in cursor.fetchone()[0]
    assert Subscription.objects.get(pk=subscription.pk).url == SLACK_URL
