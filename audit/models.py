"""The append-only, hash-chained audit ledger."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils import timezone

GENESIS_HASH = "0" * 64


class AuditEventQuerySet(models.QuerySet):
    def for_environment(self, environment: str) -> AuditEventQuerySet:
        return self.filter(environment=environment)


class AuditEvent(models.Model):
    """One fact about a change, never updated. ``hash`` chains it to the event before it."""

    sequence = models.BigIntegerField(unique=True)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+", db_constraint=False
    )
    actor_name = models.CharField(max_length=150)
    actor_type = models.CharField(max_length=16, default="user")  # user | system | token | anonymous
    auth_method = models.CharField(max_length=32, blank=True)
    ip_address = models.CharField(max_length=64, blank=True)
    user_agent = models.CharField(max_length=300, blank=True)
    action = models.CharField(max_length=64, db_index=True)
    target_type = models.CharField(max_length=64, blank=True)
    target_id = models.CharField(max_length=200, blank=True)
    target_label = models.CharField(max_length=300, blank=True)
    app = models.CharField(max_length=200, blank=True, db_index=True)
    environment = models.CharField(max_length=64, blank=True, db_index=True)
    cluster = models.CharField(max_length=200, blank=True)
    shas = models.JSONField(default=list, blank=True)
    pr_url = models.CharField(max_length=500, blank=True)
    correlation_id = models.CharField(max_length=64, blank=True, db_index=True)
    out_of_band = models.BooleanField(default=False)
    before = models.JSONField(null=True, blank=True)
    after = models.JSONField(null=True, blank=True)
    message = models.TextField(blank=True)
    prev_hash = models.CharField(max_length=64)
    hash = models.CharField(max_length=64, unique=True)

    objects = AuditEventQuerySet.as_manager()

    class Meta:
        ordering = ["-sequence"]
        indexes = [
            models.Index(fields=["environment", "-sequence"], name="audit_env_seq"),
            models.Index(fields=["action", "-sequence"], name="audit_action_seq"),
            models.Index(fields=["app", "-sequence"], name="audit_app_seq"),
            models.Index(fields=["created_at", "sequence"], name="audit_time_seq"),
        ]

    def __str__(self) -> str:
        return f"#{self.sequence} {self.action} by {self.actor_name}"

    def save(self, *args, **kwargs):
        # The ledger is append-only: an existing row is never saved again.
        if self.pk is not None and not self._state.adding:
            raise ValueError("audit events are append-only")
        super().save(*args, **kwargs)
