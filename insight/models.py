"""Notification subscriptions, their delivery log, and findings (drift/exceptions already announced)."""

from __future__ import annotations

from fnmatch import fnmatchcase
from urllib.parse import urlsplit

from django.conf import settings
from django.db import models
from django.utils import timezone

from core.fields import EncryptedTextField

EVENT_KIND_CHOICES = [
    ("promotion.*", "Promotions (every step)"),
    ("promotion.requested", "Approval requested (a promotion waits for an approver)"),
    ("rollback.*", "Rollbacks (every step)"),
    ("drift.*", "Drift detected / resolved"),
    ("exception.*", "Exceptions detected / resolved"),
    ("deployment.observed", "Every observed deployment"),
    ("argocd.*", "Argo CD instance unreachable / recovered"),
]


class Subscription(models.Model):
    """Send the audit events of some projects to a webhook."""

    class Target(models.TextChoices):
        GENERIC = "generic-webhook", "Generic JSON webhook (HMAC-SHA256 signed)"
        SLACK = "slack", "Slack-compatible incoming webhook"

    name = models.CharField(max_length=100)
    project_glob = models.CharField(
        max_length=200, default="*", help_text="Argo CD project (team) glob, e.g. payments or pay*"
    )
    event_kinds = models.JSONField(default=list, help_text="audit action globs, e.g. promotion.*")
    target_kind = models.CharField(max_length=20, choices=Target.choices, default=Target.GENERIC)
    # A Slack incoming-webhook URL is a bearer secret (its path is the token): encrypted at rest and
    # never rendered; pages show `url_hint` only.
    url = EncryptedTextField()
    secret = EncryptedTextField(blank=True, help_text="HMAC key of the generic webhook signature")
    active = models.BooleanField(default=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["name", "id"]

    def __str__(self) -> str:
        return self.name

    @property
    def url_hint(self) -> str:
        """Say that a URL is set, with the last characters of its host (never its path)."""
        host = urlsplit(str(self.url or "")).hostname or ""
        return f"set (host …{host[-4:]})" if host else ("set" if self.url else "not set")

    def matches_action(self, action: str) -> bool:
        return any(fnmatchcase(action, pattern) for pattern in self.event_kinds or [])

    def matches_projects(self, projects: set[str]) -> bool:
        """Tell whether any of the event's projects matches (no project: only the "*" glob)."""
        if self.project_glob in ("", "*"):
            return True
        return any(fnmatchcase(project, self.project_glob) for project in projects)


class Delivery(models.Model):
    """One attempt series to send one audit event to one subscription (the delivery log)."""

    class Status(models.TextChoices):
        PENDING = "pending", "pending"
        RETRYING = "retrying", "retrying"
        SUCCEEDED = "succeeded", "succeeded"
        FAILED = "failed", "failed"

    subscription = models.ForeignKey(Subscription, on_delete=models.CASCADE, related_name="deliveries")
    event_sequence = models.BigIntegerField()
    action = models.CharField(max_length=64)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING, db_index=True)
    attempts = models.PositiveIntegerField(default=0)
    response_code = models.PositiveIntegerField(null=True, blank=True)
    error = models.TextField(blank=True)
    payload = models.JSONField(default=dict)
    payload_hash = models.CharField(max_length=64, help_text="sha256 of the exact body sent")
    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    last_attempt_at = models.DateTimeField(null=True, blank=True)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    delivered_at = models.DateTimeField(null=True, blank=True)
    # Claim of the sending task: another worker may take over once the lease has expired.
    lease_until = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(fields=["subscription", "event_sequence"], name="uniq_delivery_event")
        ]
        indexes = [models.Index(fields=["status", "next_attempt_at"], name="delivery_status_next")]

    def __str__(self) -> str:
        return f"delivery #{self.pk} {self.action} → {self.subscription_id} ({self.status})"

    @property
    def badge(self) -> str:
        badges: dict[str, str] = {
            self.Status.SUCCEEDED: "badge-ok",
            self.Status.FAILED: "badge-bad",
            self.Status.RETRYING: "badge-warn",
        }
        return badges.get(self.status, "badge-info")


class Finding(models.Model):
    """A drift or exception already announced (so each one is announced once, and its end too)."""

    kind = models.CharField(max_length=32)  # drift | unsynced_merge | unknown_revision | ...
    key = models.CharField(max_length=300)
    app = models.CharField(max_length=200, blank=True)
    environment = models.CharField(max_length=64, blank=True)
    project = models.CharField(max_length=200, blank=True)
    summary = models.TextField(blank=True)
    opened_at = models.DateTimeField(default=timezone.now)
    resolved_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-opened_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["kind", "key"], condition=models.Q(resolved_at__isnull=True), name="uniq_open_finding"
            )
        ]

    def __str__(self) -> str:
        return f"{self.kind} {self.key}"
