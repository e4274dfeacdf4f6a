"""Insight services: subscriptions, notification deliveries, findings (drift and exceptions announced).

Notifications are a side channel: ``notify_event`` runs after the transaction that wrote an audit
event has committed, only creates delivery rows and enqueues their tasks; any failure in it is
logged and swallowed, so a promotion or rollback never waits for, or fails because of, a webhook.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from celery import current_app
from django.conf import settings
from django.contrib.auth.models import User
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.db.models import F, Q
from django.utils import timezone

from audit.models import AuditEvent
from audit.services import audit_event_record
from inventory.models import Application, ArgoApplication

from . import webhooks
from .models import Delivery, Finding, Subscription
from .selectors import exceptions_list

logger = logging.getLogger(__name__)
# The Celery name of insight.tasks.delivery_send_task.
DELIVERY_SEND_TASK = "insight.tasks.delivery_send_task"

LEASE = timedelta(seconds=90)
SYSTEM_NAME = "insight"


# =============================================================================================
# Subscriptions


def _clean_subscription(
    *, name: str, project_glob: str, event_kinds: list[str], target_kind: str, url: str
) -> None:
    errors = {}
    if not name.strip():
        errors["name"] = "required"
    if not event_kinds or not all(isinstance(k, str) and k.strip() for k in event_kinds):
        errors["event_kinds"] = "choose at least one event kind"
    if target_kind not in Subscription.Target.values:
        errors["target_kind"] = "unknown target kind"
    try:
        webhooks.check_url(url, allow_http=bool(settings.INSIGHT_WEBHOOK_ALLOW_HTTP), resolve=False)
    except webhooks.UnsafeURL as exc:
        errors["url"] = str(exc)
    if len(url) > 500:
        errors["url"] = "too long (at most 500 characters)"
    if len(project_glob) > 200:
        errors["project_glob"] = "too long"
    if errors:
        raise ValidationError(errors)


def _subscription_snapshot(subscription: Subscription) -> dict[str, Any]:
    return {
        "name": subscription.name,
        "project_glob": subscription.project_glob,
        "event_kinds": list(subscription.event_kinds),
        "target_kind": subscription.target_kind,
        "url_host": urlsplit(subscription.url).hostname or "",
        "active": subscription.active,
        "signed": bool(subscription.secret),
    }


@transaction.atomic
def subscription_create(
    *,
    actor: User,
    name: str,
    project_glob: str,
    event_kinds: list[str],
    target_kind: str,
    url: str,
    secret: str = "",
    active: bool = True,
) -> Subscription:
    """Create a notification subscription (the secret is stored encrypted, never logged)."""
    _clean_subscription(
        name=name, project_glob=project_glob, event_kinds=event_kinds, target_kind=target_kind, url=url
    )
    subscription = Subscription.objects.create(
        name=name.strip(),
        project_glob=project_glob.strip() or "*",
        event_kinds=[k.strip() for k in event_kinds],
        target_kind=target_kind,
        url=url,
        secret=secret,
        active=active,
        created_by=actor,
    )
    audit_event_record(
        action="insight.subscription_created",
        actor=actor,
        target_type="insight_subscription",
        target_id=subscription.pk,
        target_label=subscription.name,
        after=_subscription_snapshot(subscription),
        message=f"notification subscription {subscription.name} created",
    )
    return subscription


@transaction.atomic
def subscription_update(
    *,
    actor: User,
    subscription_id: int,
    active: bool | None = None,
    secret: str | None = None,
) -> Subscription:
    """Pause/resume a subscription or replace its secret."""
    subscription = Subscription.objects.select_for_update().get(pk=subscription_id)
    before = _subscription_snapshot(subscription)
    fields = ["updated_at"]
    if active is not None:
        subscription.active = active
        fields.append("active")
    if secret is not None:
        subscription.secret = secret
        fields.append("secret")
    subscription.updated_at = timezone.now()
    subscription.save(update_fields=fields)
    audit_event_record(
        action="insight.subscription_updated",
        actor=actor,
        target_type="insight_subscription",
        target_id=subscription.pk,
        target_label=subscription.name,
        before=before,
        after=_subscription_snapshot(subscription),
        message=f"notification subscription {subscription.name} updated"
        + (" (secret replaced)" if secret is not None else ""),
    )
    return subscription


@transaction.atomic
def subscription_delete(*, actor: User, subscription_id: int) -> None:
    """Delete a subscription and its delivery log."""
    subscription = Subscription.objects.select_for_update().get(pk=subscription_id)
    before = _subscription_snapshot(subscription)
    audit_event_record(
        action="insight.subscription_deleted",
        actor=actor,
        target_type="insight_subscription",
        target_id=subscription.pk,
        target_label=subscription.name,
        before=before,
        message=f"notification subscription {subscription.name} deleted",
    )
    subscription.delete()


# =============================================================================================
# Deliveries


def event_projects(event: AuditEvent) -> set[str]:
    """Return the projects of an event's apps (the app field may list several, comma-separated)."""
    names = [n for n in (event.app or "").split(",") if n]
    if not names:
        return set()
    return set(Application.objects.filter(name__in=names).values_list("project", flat=True))


def _payload(subscription: Subscription, event: AuditEvent, projects: set[str]) -> dict[str, Any]:
    portal = settings.PORTAL_BASE_URL
    if subscription.target_kind == Subscription.Target.SLACK:
        return webhooks.slack_payload(event, projects=sorted(projects), portal_url=portal)
    return webhooks.event_payload(
        event, projects=sorted(projects), portal_url=portal, delivery_id=f"{subscription.pk}-{event.sequence}"
    )


def notify_events(audit_events: Sequence[AuditEvent]) -> list[int]:
    """Notify a batch of events (audit_events_record): one subscription query for the whole batch."""
    active = list(Subscription.objects.filter(active=True))
    if not active:
        return []
    ids: list[int] = []
    for audit_event in audit_events:
        ids += notify_event(audit_event, active=active)
    return ids


def notify_event(audit_event: AuditEvent, *, active: list[Subscription] | None = None) -> list[int]:
    """Create the deliveries of an audit event for the matching subscriptions and enqueue them.

    Call it after the event's transaction committed. Idempotent: one delivery per (subscription,
    event). Returns the ids of the deliveries created now. ``active``: the active subscriptions,
    when the caller already read them.
    """
    if active is None:
        active = list(Subscription.objects.filter(active=True))
    subscriptions = [s for s in active if s.matches_action(audit_event.action)]
    if not subscriptions:
        return []
    projects = event_projects(audit_event)
    rows = []
    for subscription in subscriptions:
        if not subscription.matches_projects(projects):
            continue
        payload = _payload(subscription, audit_event, projects)
        rows.append(
            Delivery(
                subscription=subscription,
                event_sequence=audit_event.sequence,
                action=audit_event.action,
                payload=payload,
                payload_hash=webhooks.body_hash(webhooks.canonical_body(payload)),
            )
        )
    if not rows:
        return []
    existing = set(
        Delivery.objects.filter(
            event_sequence=audit_event.sequence, subscription__in=[r.subscription for r in rows]
        ).values_list("subscription_id", flat=True)
    )
    fresh = [r for r in rows if r.subscription.pk not in existing]
    Delivery.objects.bulk_create(fresh, ignore_conflicts=True)
    ids = list(
        Delivery.objects.filter(
            event_sequence=audit_event.sequence,
            subscription_id__in=[r.subscription.pk for r in fresh],
            status=Delivery.Status.PENDING,
            attempts=0,
        ).values_list("pk", flat=True)
    )
    for delivery_id in ids:
        delivery_enqueue(delivery_id=delivery_id)
    return ids


def delivery_enqueue(*, delivery_id: int, countdown: float = 0) -> None:
    """Send a delivery's task to the broker; a lost message is re-sent by the sweeper."""
    try:
        # By name, as changes.lifecycle does: the tasks module imports this one.
        current_app.send_task(DELIVERY_SEND_TASK, args=[delivery_id], countdown=countdown or None)
    except Exception:  # the broker is down: the row stays pending and the sweeper retries
        logger.warning("could not enqueue delivery %s; the sweeper will retry", delivery_id, exc_info=True)


def retry_delay(attempts: int) -> int:
    """Return the wait before attempt ``attempts + 1``: base x 2^(attempts-1), capped."""
    base = int(settings.INSIGHT_WEBHOOK_RETRY_BASE_SECONDS)
    cap = settings.CELERY_RETRY_BACKOFF_MAX
    return int(min(cap, base * (2 ** max(0, attempts - 1))))


@dataclass(frozen=True)
class SendOutcome:
    status: str  # succeeded | retry | failed | skipped
    delay: int = 0
    response_code: int | None = None


def _claim(delivery_id: int, now: datetime) -> bool:
    claimed = (
        Delivery.objects.filter(
            pk=delivery_id, status__in=[Delivery.Status.PENDING, Delivery.Status.RETRYING]
        )
        .filter(Q(lease_until__isnull=True) | Q(lease_until__lt=now))
        .update(lease_until=now + LEASE, attempts=F("attempts") + 1, last_attempt_at=now)
    )
    return claimed == 1


def delivery_send(*, delivery_id: int) -> SendOutcome:
    """Send one delivery attempt and record its result; safe to run twice (claimed by a lease)."""
    now = timezone.now()
    if not _claim(delivery_id, now):
        return SendOutcome("skipped")
    delivery = Delivery.objects.select_related("subscription").get(pk=delivery_id)
    subscription = delivery.subscription
    body = webhooks.canonical_body(delivery.payload)
    headers = {
        webhooks.EVENT_HEADER: delivery.action,
        webhooks.DELIVERY_HEADER: f"{subscription.pk}-{delivery.event_sequence}",
    }
    if subscription.target_kind == Subscription.Target.GENERIC and subscription.secret:
        headers[webhooks.SIGNATURE_HEADER] = webhooks.sign(str(subscription.secret), body)
    max_attempts = int(settings.INSIGHT_WEBHOOK_MAX_ATTEMPTS)
    code: int | None = None
    try:
        response = webhooks.post(
            subscription.url, body, headers, allow_http=bool(settings.INSIGHT_WEBHOOK_ALLOW_HTTP)
        )
    except webhooks.WebhookError as exc:
        error, permanent = str(exc), exc.permanent
    else:
        code = response.status
        if 200 <= code < 300:
            Delivery.objects.filter(pk=delivery_id).update(
                status=Delivery.Status.SUCCEEDED,
                response_code=code,
                error="",
                delivered_at=timezone.now(),
                next_attempt_at=None,
                lease_until=None,
            )
            return SendOutcome("succeeded", response_code=code)
        error = f"HTTP {code}: {response.text[:200]}"
        permanent = 400 <= code < 500 and code not in (408, 425, 429)
    if permanent or delivery.attempts >= max_attempts:
        Delivery.objects.filter(pk=delivery_id).update(
            status=Delivery.Status.FAILED,
            response_code=code,
            error=error[:1000],
            next_attempt_at=None,
            lease_until=None,
        )
        return SendOutcome("failed", response_code=code)
    delay = retry_delay(delivery.attempts)
    Delivery.objects.filter(pk=delivery_id).update(
        status=Delivery.Status.RETRYING,
        response_code=code,
        error=error[:1000],
        next_attempt_at=timezone.now() + timedelta(seconds=delay),
        lease_until=None,
    )
    return SendOutcome("retry", delay=delay, response_code=code)


def deliveries_sweep(*, now: datetime | None = None, grace: timedelta = timedelta(seconds=60)) -> int:
    """Re-enqueue deliveries whose task message was lost (pending or due for retry for a while)."""
    now = now or timezone.now()
    due = Delivery.objects.filter(
        Q(status=Delivery.Status.PENDING, created_at__lt=now - grace)
        | Q(status=Delivery.Status.RETRYING, next_attempt_at__lt=now - grace)
    ).filter(Q(lease_until__isnull=True) | Q(lease_until__lt=now))
    ids = list(due.values_list("pk", flat=True)[:500])
    for delivery_id in ids:
        delivery_enqueue(delivery_id=delivery_id)
    return len(ids)


# =============================================================================================
# Findings: drift and exceptions announced once (as audit events, which notify subscribers)


@dataclass
class ScanResult:
    opened: list[str] = field(default_factory=list)
    resolved: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class _Current:
    kind: str
    key: str
    app: str
    environment: str
    project: str
    summary: str


def _current_findings(now: datetime) -> dict[tuple[str, str], _Current]:

    lag = timedelta(minutes=int(settings.INSIGHT_SYNC_LAG_MINUTES))
    current: dict[tuple[str, str], _Current] = {}
    drifting = (
        ArgoApplication.objects.live()
        .filter(sync_status="OutOfSync", out_of_sync_since__lt=now - lag)
        .select_related("application", "environment")
    )
    for row in drifting:
        env = row.environment.name if row.environment else ""
        current[("drift", str(row.pk))] = _Current(
            "drift",
            str(row.pk),
            row.application.name if row.application else row.name,
            env,
            row.application.project if row.application else row.project,
            f"{row.name} is OutOfSync since {row.out_of_sync_since:%Y-%m-%d %H:%M} UTC",
        )
    report = exceptions_list(user=None, now=now, oob_since=now - timedelta(days=1))
    for kind, items in report.rows.items():
        for item in items:
            current[(kind, item.key)] = _Current(
                kind, item.key, item.app, item.environment, item.project, item.summary
            )
    return current


def _action(kind: str, verb: str) -> str:
    return f"drift.{verb}" if kind == "drift" else f"exception.{verb}"


def findings_scan(*, now: datetime | None = None) -> ScanResult:
    """Open a finding (and write its audit event) for each new drift/exception; resolve vanished ones."""
    now = now or timezone.now()
    current = _current_findings(now)
    open_rows = {(f.kind, f.key): f for f in Finding.objects.filter(resolved_at__isnull=True)}
    result = ScanResult()
    for identity, item in current.items():
        if identity in open_rows:
            continue
        try:
            with transaction.atomic():
                finding = Finding.objects.create(
                    kind=item.kind,
                    key=item.key[:300],
                    app=item.app[:200],
                    environment=item.environment[:64],
                    project=item.project[:200],
                    summary=item.summary,
                    opened_at=now,
                )
                audit_event_record(
                    action=_action(item.kind, "detected"),
                    target_type="insight_finding",
                    target_id=finding.pk,
                    target_label=f"{item.kind} {item.key}"[:300],
                    app=item.app,
                    environment=item.environment,
                    after={"kind": item.kind, "key": item.key},
                    message=item.summary,
                    out_of_band=item.kind == "out_of_band",
                    system_name=SYSTEM_NAME,
                )
        except IntegrityError:
            continue  # another scanner opened it first
        result.opened.append(f"{item.kind}:{item.key}")
    for identity, finding in open_rows.items():
        if identity in current:
            continue
        if finding.kind == "out_of_band":
            continue  # a past deployment never "resolves": it stays announced (and open) for good
        with transaction.atomic():
            closed = Finding.objects.filter(pk=finding.pk, resolved_at__isnull=True).update(resolved_at=now)
            if not closed:
                continue
            audit_event_record(
                action=_action(finding.kind, "resolved"),
                target_type="insight_finding",
                target_id=finding.pk,
                target_label=f"{finding.kind} {finding.key}"[:300],
                app=finding.app,
                environment=finding.environment,
                before={"kind": finding.kind, "key": finding.key, "opened_at": finding.opened_at.isoformat()},
                message=f"resolved: {finding.summary}",
                system_name=SYSTEM_NAME,
            )
        result.resolved.append(f"{finding.kind}:{finding.key}")
    return result
