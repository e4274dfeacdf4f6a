"""Rollback requests: Git-revert pull requests for on-call engineers."""

from __future__ import annotations

import re
from datetime import datetime, timedelta

from django.conf import settings
from django.db import models
from django.utils import timezone

from changes.fields import PortalSyncRecord, PullRequestRecord
from core.durations import format_duration

_URL_RE = re.compile(r"https?://[^\s\"'<>`]+", re.IGNORECASE)


def humanize_duration(value: timedelta | None) -> str:
    """Return "3 min 20 s" style text ('' for None): the portal-wide duration format."""
    return format_duration(value)


class RollbackQuerySet(models.QuerySet):
    def active(self) -> RollbackQuerySet:
        """Rollbacks the portal still has to push forward (PR to open, merge or deploy to watch)."""
        return self.filter(state__in=RollbackRequest.ACTIVE_STATES)

    def for_app_env(self, application_id: int, environment_id: int) -> RollbackQuerySet:
        return self.filter(application_id=application_id, environment_id=environment_id)


class RollbackRequest(PullRequestRecord, PortalSyncRecord):
    """One request to revert commits of an app in an environment, tracked until it is healthy."""

    class Mode(models.TextChoices):
        PREVIOUS = "previous", "Roll back to the previous deployment"
        COMMIT = "commit", "Revert one commit"

    class State(models.TextChoices):
        REQUESTED = "requested", "requested"
        PR_OPEN = "pr_open", "PR opened"
        MERGED = "merged", "merged"
        DEPLOYED = "deployed", "deployed"
        HEALTHY = "healthy", "healthy"
        FAILED = "failed", "failed"
        CANCELLED = "cancelled", "cancelled"

    ACTIVE_STATES = (State.REQUESTED, State.PR_OPEN, State.MERGED, State.DEPLOYED)
    CANCELLABLE_STATES = (State.REQUESTED, State.PR_OPEN)

    application = models.ForeignKey(
        "inventory.Application", on_delete=models.PROTECT, related_name="rollbacks"
    )
    environment = models.ForeignKey(
        "inventory.Environment", on_delete=models.PROTECT, related_name="rollbacks"
    )
    mode = models.CharField(max_length=16, choices=Mode.choices)
    state = models.CharField(max_length=16, choices=State.choices, default=State.REQUESTED, db_index=True)

    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="rollbacks"
    )
    requested_by_name = models.CharField(max_length=150)
    reason = models.TextField()
    incident = models.CharField(max_length=500, blank=True, help_text="Incident reference: free text or URL")
    correlation_id = models.CharField(max_length=64, blank=True)

    # What the environment ran when the request was made, and what the revert brings back.
    base_branch = models.CharField(max_length=200)
    current_revision = models.CharField(max_length=64)
    current_version = models.CharField(max_length=200, blank=True)
    target_revision = models.CharField(max_length=64, blank=True, help_text="previous deployed revision")
    expected_version = models.CharField(max_length=200, blank=True, help_text="version after the rollback")
    observed_deployment_id = models.BigIntegerField(null=True, blank=True)
    revert_shas = models.JSONField(default=list, help_text="commits to revert, newest first")
    paths = models.JSONField(default=list, help_text="repository paths considered (env path, app base)")

    emergency = models.BooleanField(default=False, help_text="merge automatically once required checks pass")
    emergency_justification = models.TextField(blank=True)
    # Gates at the request: the secret scan (passed, or the request was refused) and the
    # zero-downtime checklist findings (shown, never blocking a rollback).
    gates = models.JSONField(default=list, blank=True)

    # The pull request.
    branch = models.CharField(max_length=300, blank=True)
    pr_number = models.IntegerField(null=True, blank=True)
    # pr_url, pr_head_sha, pushed_head_sha, merge_commit_sha, merged_by: changes.fields.PullRequestRecord
    # Argo CD's operationState of the sync that deployed the revert (change records carry it).
    sync_result = models.JSONField(null=True, blank=True)
    failure_reason = models.TextField(blank=True)
    tracking_detail = models.CharField(max_length=500, blank=True, help_text="what tracking waits for")
    # A permanent tracking problem (e.g. the PR is gone: 404), shown on the page until tracking works again.
    tracking_error = models.TextField(blank=True)
    conflict_files = models.JSONField(default=list, blank=True)

    # Work claims: a task owns the row until `claimed_until`; the sweeper re-enqueues after that.
    claimed_until = models.DateTimeField(null=True, blank=True)
    attempts = models.PositiveIntegerField(default=0)
    # Not before: a retry the forge asked to delay (Retry-After) longer than a task may wait.
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    last_tracked_at = models.DateTimeField(null=True, blank=True)

    # Timeline.
    degraded_since = models.DateTimeField(null=True, blank=True, help_text="first degraded observation")
    requested_at = models.DateTimeField(default=timezone.now, db_index=True)
    pr_opened_at = models.DateTimeField(null=True, blank=True)
    auto_merged_at = models.DateTimeField(null=True, blank=True)
    merged_at = models.DateTimeField(null=True, blank=True)
    deployed_at = models.DateTimeField(null=True, blank=True)
    healthy_at = models.DateTimeField(null=True, blank=True)
    failed_at = models.DateTimeField(null=True, blank=True)
    cancelled_at = models.DateTimeField(null=True, blank=True)

    # After-the-fact approval of an emergency rollback (by an approver other than the requester).
    approved_after_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="rollbacks_approved_after",
    )
    approved_after_by_name = models.CharField(max_length=150, blank=True)
    approved_after_at = models.DateTimeField(null=True, blank=True)
    approved_after_reason = models.TextField(blank=True)
    # The revert commit the after-the-fact approval was given on (the PR head the approver saw).
    approved_after_head_sha = models.CharField(max_length=64, blank=True)
    # Set once when an unapproved emergency rollback was escalated (escalate once).
    approval_escalated_at = models.DateTimeField(null=True, blank=True)

    objects = RollbackQuerySet.as_manager()

    class Meta:
        ordering = ["-requested_at", "-id"]
        indexes = [
            models.Index(
                fields=["application", "environment", "-requested_at"], name="rollback_app_env_time"
            ),
            models.Index(fields=["state", "claimed_until"], name="rollback_state_claim"),
        ]

    def __str__(self) -> str:
        return f"rollback #{self.pk} {self.application_id}/{self.environment_id}"

    @property
    def awaits_approval_after(self) -> bool:
        """An emergency rollback nobody approved after the fact yet (cancelled ones need none)."""
        return self.emergency and self.approved_after_at is None and self.state != self.State.CANCELLED

    audit_target_type = "rollback"

    @property
    def audit_scope(self) -> tuple[str, str]:
        """Return ``(project, environment)`` for the audit ledger's scope columns (audit/scope.py)."""
        return self.application.project, self.environment.name

    @property
    def branch_prefix(self) -> str:
        """Return the PR branch without its random suffix: rollback/<app>/<env>/<id>."""
        return f"rollback/{self.application.name}/{self.environment.name}/{self.pk}"

    @property
    def incident_url(self) -> str:
        """Return the incident reference when it is a plain http(s) URL (shown as a link), else ''."""
        value = self.incident.strip()
        if _URL_RE.fullmatch(value):
            return value
        return ""

    @property
    def is_active(self) -> bool:
        return self.state in self.ACTIVE_STATES

    @property
    def is_cancellable(self) -> bool:
        return self.state in self.CANCELLABLE_STATES

    @property
    def is_terminal(self) -> bool:
        return not self.is_active

    @property
    def time_to_restore(self) -> timedelta | None:
        """Return the time from the request to healthy."""
        return self.healthy_at - self.requested_at if self.healthy_at else None

    @property
    def time_to_restore_from_degraded(self) -> timedelta | None:
        """Return the time from the first degraded observation to healthy."""
        if self.healthy_at and self.degraded_since:
            return self.healthy_at - self.degraded_since
        return None

    @property
    def time_to_restore_display(self) -> str:
        return humanize_duration(self.time_to_restore)

    @property
    def time_to_restore_from_degraded_display(self) -> str:
        return humanize_duration(self.time_to_restore_from_degraded)

    @property
    def state_badge(self) -> str:
        badges: dict[str, str] = {
            self.State.HEALTHY: "badge-ok",
            self.State.FAILED: "badge-bad",
            self.State.CANCELLED: "badge-idle",
            self.State.REQUESTED: "badge-info",
        }
        return badges.get(self.state, "badge-warn")

    def timeline(self) -> list[tuple[str, datetime | None]]:
        """Return the steps of the rollback with their timestamps (None: not reached)."""
        steps: list[tuple[str, datetime | None]] = [
            ("Requested", self.requested_at),
            ("Revert branch pushed", self.branch_pushed_at),
            ("PR opened", self.pr_opened_at),
        ]
        if self.emergency:
            steps.append(("Auto-merged (emergency)", self.auto_merged_at))
        steps += [("Merged", self.merged_at), ("Deployed", self.deployed_at), ("Healthy", self.healthy_at)]
        if self.failed_at:
            steps.append(("Failed", self.failed_at))
        if self.cancelled_at:
            steps.append(("Cancelled", self.cancelled_at))
        return steps
