"""The append-only, hash-chained audit ledger."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.conf import settings
from django.db import models
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from core.durations import format_duration

from .actions import AuditAction
from .scope import AuditScope, scope_q

GENESIS_HASH = "0" * 64


def _versions_text(versions: object) -> str:
    if not isinstance(versions, dict) or not versions:
        return ""
    values = [str(v) for _, v in sorted(versions.items()) if v not in (None, "")]
    if len(set(values)) <= 1:
        return values[0] if values else ""
    return ", ".join(f"{k}: {v}" for k, v in sorted(versions.items()) if v not in (None, ""))


class AuditEventQuerySet(models.QuerySet):
    def for_environment(self, environment: str) -> AuditEventQuerySet:
        return self.filter(environment=environment)

    def in_scope(self, scope: AuditScope | None) -> AuditEventQuerySet:
        """Keep the events a scoped auditor may see (None: all), by the project/environment columns."""
        return self.filter(scope_q(scope))


class AuditEvent(models.Model):
    """One fact about a change, never updated. ``hash`` chains it to the event before it."""

    sequence = models.BigIntegerField(unique=True)
    created_at = models.DateTimeField(default=timezone.now)
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        # The actor id is inside every hash: a user with events is deactivated, never deleted.
        on_delete=models.PROTECT,
        related_name="+",
        db_constraint=False,
    )
    actor_name = models.CharField(max_length=150)
    actor_type = models.CharField(max_length=16, default="user")  # user | system | token | anonymous
    auth_method = models.CharField(max_length=32, blank=True)
    ip_address = models.CharField(max_length=64, blank=True)
    user_agent = models.CharField(max_length=300, blank=True)
    action = models.CharField(max_length=64, choices=AuditAction.choices)
    target_type = models.CharField(max_length=64, blank=True)
    target_id = models.CharField(max_length=200, blank=True)
    target_label = models.CharField(max_length=300, blank=True)
    app = models.CharField(max_length=200, blank=True)
    environment = models.CharField(max_length=64, blank=True)
    # The Argo CD project(s) of the target, comma-separated and sorted, for scoping auditors. Not
    # hashed (audit/chain.py HASHED_FIELDS is the ledger's format): an index, derived from the target.
    project = models.CharField(max_length=200, blank=True)
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
            models.Index(fields=["project", "-sequence"], name="audit_project_seq"),
            models.Index(fields=["action", "-sequence"], name="audit_action_seq"),
            models.Index(fields=["app", "-sequence"], name="audit_app_seq"),
            models.Index(fields=["created_at", "sequence"], name="audit_time_seq"),
            # The evidence of a change record lists the events of its promotion or rollback.
            models.Index(fields=["target_type", "target_id", "sequence"], name="audit_target_seq"),
        ]

    def __str__(self) -> str:
        return f"#{self.sequence} {self.action} by {self.actor_name}"

    def save(self, *args, **kwargs):
        # The ledger is append-only: an existing row is never saved again.
        if self.pk is not None and not self._state.adding:
            raise ValueError("audit events are append-only")
        super().save(*args, **kwargs)


@dataclass
class GateGroup:
    """One evaluation of a change's gates as a record keeps it: its label, its time, the gates."""

    label: str
    at: datetime | None
    gates: list[dict[str, Any]]


class ChangeRecord(models.Model):
    """One change to a production-like environment and all its evidence (a projection of the ledger).

    Rows are created and updated by :func:`audit.services.change_record_sync`; the hash-chained
    :class:`AuditEvent` rows stay the source of truth.
    """

    KIND_CHOICES = [("promotion", "promotion"), ("rollback", "rollback"), ("out_of_band", "out-of-band sync")]
    OUTCOME_CHOICES = [
        ("pending", "pending"),
        ("succeeded", "succeeded"),
        ("rolled_back", "rolled back"),
        ("failed", "failed"),
        ("abandoned", "abandoned"),
    ]

    kind = models.CharField(max_length=16, choices=KIND_CHOICES)
    source_type = models.CharField(max_length=64)
    source_id = models.CharField(max_length=200)
    app = models.CharField(max_length=200, db_index=True)
    environment = models.CharField(max_length=64, db_index=True)
    project = models.CharField(max_length=200, blank=True, db_index=True)
    clusters = models.JSONField(default=list, blank=True)
    title = models.CharField(max_length=300, blank=True)
    requester_name = models.CharField(max_length=150, blank=True)
    approvers = models.JSONField(default=list, blank=True)
    # The commit the approvals were given on (the PR branch head the approvers reviewed).
    approved_head_sha = models.CharField(max_length=64, blank=True)
    pr_number = models.PositiveIntegerField(null=True, blank=True)
    pr_url = models.CharField(max_length=500, blank=True)
    merged_by = models.CharField(max_length=150, blank=True)
    revision_before = models.CharField(max_length=64, blank=True)
    revision_after = models.CharField(max_length=64, blank=True)
    versions_before = models.JSONField(default=dict, blank=True)
    versions_after = models.JSONField(default=dict, blank=True)
    gates = models.JSONField(default=list, blank=True)
    sync_result = models.JSONField(null=True, blank=True)
    requested_at = models.DateTimeField(null=True, blank=True)
    approved_at = models.DateTimeField(null=True, blank=True)
    pr_opened_at = models.DateTimeField(null=True, blank=True)
    merged_at = models.DateTimeField(null=True, blank=True)
    deployed_at = models.DateTimeField(null=True, blank=True)
    healthy_at = models.DateTimeField(null=True, blank=True)
    outcome = models.CharField(max_length=16, choices=OUTCOME_CHOICES, default="pending", db_index=True)
    emergency = models.BooleanField(default=False)
    justification = models.TextField(blank=True)
    # The request's correlation id (shared by its ledger events) and the incident it answers (rollbacks).
    correlation_id = models.CharField(max_length=64, blank=True, db_index=True)
    incident = models.CharField(max_length=500, blank=True)
    # Why an approver approved it (after-the-fact approvals of emergency changes).
    approval_reason = models.TextField(blank=True)
    # Computed on every sync: the requester is not among the approvers (None: nobody approved).
    separation_of_duties_ok = models.BooleanField(null=True, blank=True)
    # Computed: from the request (or the earliest known step) to healthy (or deployed).
    lead_time = models.DurationField(null=True, blank=True)
    # Computed: when the change started, for period filters and ordering.
    occurred_at = models.DateTimeField(default=timezone.now)
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-occurred_at", "-id"]
        constraints = [
            models.UniqueConstraint(fields=["source_type", "source_id"], name="uniq_change_record_source")
        ]
        indexes = [
            models.Index(fields=["-occurred_at", "-id"], name="change_time_id"),
            models.Index(fields=["environment", "-occurred_at"], name="change_env_time"),
        ]

    def __str__(self) -> str:
        return f"{self.kind} {self.app} → {self.environment} ({self.outcome})"

    @property
    def gate_evaluations(self) -> list[GateGroup]:
        """The gates grouped by evaluation, oldest first ("at request", then later re-evaluations).

        Gates without an evaluation label (older records, the forge's required checks) form their
        own group, labelled "" when the record has no labelled evaluation at all.
        """
        groups: list[GateGroup] = []
        for gate in self.gates or []:
            if not isinstance(gate, dict):
                continue
            label, at = str(gate.get("evaluation") or ""), parse_datetime(str(gate.get("evaluated_at") or ""))
            if not groups or (groups[-1].label, groups[-1].at) != (label, at):
                groups.append(GateGroup(label, at, []))
            groups[-1].gates.append(gate)
        return groups

    @property
    def gates_passed(self) -> bool | None:
        """Whether the latest evaluation passed (and the unlabelled gates, e.g. required checks)."""
        groups = self.gate_evaluations
        if not groups:
            return None
        labelled = [g for g in groups if g.label]
        counted = [g for g in groups if not g.label] + labelled[-1:]
        return all(bool(gate.get("passed")) for group in counted for gate in group.gates)

    @property
    def version_before_display(self) -> str:
        """The versions before the change as text: "1.4.2", or "eu: 1.4.2, us: 1.4.1" for several."""
        return _versions_text(self.versions_before)

    @property
    def version_after_display(self) -> str:
        return _versions_text(self.versions_after)

    @property
    def has_versions(self) -> bool:
        return bool(self.version_before_display or self.version_after_display)

    @property
    def lead_time_display(self) -> str:
        return format_duration(self.lead_time)

    @property
    def evidence_target_id(self) -> str:
        """The ledger target id of the record's evidence: `<id>` of a per-part source id `<id>:<part>`."""
        return self.source_id.split(":", 1)[0]

    @property
    def outcome_badge(self) -> str:
        return {
            "succeeded": "badge-ok",
            "pending": "badge-info",
            "rolled_back": "badge-warn",
            "failed": "badge-bad",
            "abandoned": "badge-idle",
        }.get(self.outcome, "badge-idle")


class AuditCheckpoint(models.Model):
    """A signed statement of the chain head: sequence, hash and count at a time (CloudTrail digest style)."""

    head_sequence = models.BigIntegerField()
    head_hash = models.CharField(max_length=64)
    event_count = models.BigIntegerField()
    created_at = models.DateTimeField(default=timezone.now)
    signature = models.CharField(
        max_length=200, help_text="base64 Ed25519 signature of the checkpoint payload"
    )
    public_key_id = models.CharField(
        max_length=64, help_text="sha256 of the raw public key, hex, first 16 chars"
    )

    class Meta:
        ordering = ["-head_sequence", "-id"]
        get_latest_by = "id"

    def __str__(self) -> str:
        return f"checkpoint #{self.head_sequence} ({self.public_key_id})"


class CheckpointShipment(models.Model):
    """A signed checkpoint shipped to a target off the server (``manage.py audit_ship``): sent once."""

    checkpoint = models.ForeignKey(AuditCheckpoint, on_delete=models.PROTECT, related_name="+")
    target = models.CharField(max_length=500, help_text="the directory or URL it was shipped to")
    shipped_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["checkpoint", "target"], name="uniq_checkpoint_shipment")
        ]

    def __str__(self) -> str:
        return f"checkpoint {self.checkpoint_id} → {self.target}"
