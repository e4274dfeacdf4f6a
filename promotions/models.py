"""Promotion requests, their items (one per app: a "release train"), approvals and blocks.

State machine of a Promotion (timestamps for every step):

    requested ─approve(N)→ approved ─claim→ pr_opening ─PR→ pr_open ─merge→ merged
        │                     │                 │              │              │
        └→ rejected           └→ cancelled      └→ failed      └→ abandoned    └→ deployed → healthy
                                                                (closed)         │        └→ degraded
                                                                                 └→ failed (sync failed,
                                                                                    or not deployed in time)
A deployed promotion not Healthy after PROMOTION_DEPLOY_TIMEOUT_MINUTES ends degraded too.

The branch is pushed while `requested` (before approval, `branch_pushed_at`): approvals bind to its
head (`Approval.head_sha`) and are possible only once it is pushed. A branch that moves off that
head invalidates them: back to `requested` on the portal's new head, or `failed` (tampered) when
someone else's commit is on it.

`requested`/`approved`/`pr_opening`/`pr_open`/`merged`/`deployed` are "in flight": while one of
them holds an app for an environment (PromotionItem.active), no other promotion of that app into
that environment can be requested (a partial unique index enforces it).
"""

from __future__ import annotations

import re
import uuid
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import models
from django.db.models import Exists, OuterRef, Q
from django.urls import reverse
from django.utils import timezone

from changes.fields import PortalSyncRecord, PullRequestRecord
from changes.gatehistory import ShownSnapshot, snapshots_shown
from core.diffs import classify_diff
from core.durations import format_duration


class PromotionState(models.TextChoices):
    REQUESTED = "requested", "Requested"
    APPROVED = "approved", "Approved"
    PR_OPENING = "pr_opening", "Opening PR"
    PR_OPEN = "pr_open", "PR open"
    MERGED = "merged", "Merged"
    DEPLOYED = "deployed", "Deployed"
    HEALTHY = "healthy", "Healthy"
    REJECTED = "rejected", "Rejected"
    FAILED = "failed", "Failed"
    CANCELLED = "cancelled", "Cancelled"
    ABANDONED = "abandoned", "Abandoned"
    DEGRADED = "degraded", "Degraded"


IN_FLIGHT_STATES = (
    PromotionState.REQUESTED,
    PromotionState.APPROVED,
    PromotionState.PR_OPENING,
    PromotionState.PR_OPEN,
    PromotionState.MERGED,
    PromotionState.DEPLOYED,
)
FINAL_STATES = (
    PromotionState.HEALTHY,
    PromotionState.REJECTED,
    PromotionState.FAILED,
    PromotionState.CANCELLED,
    PromotionState.ABANDONED,
    PromotionState.DEGRADED,
)
# A PR exists (or may exist) but is not merged yet: cancel closes it.
CANCELLABLE_STATES = (
    PromotionState.REQUESTED,
    PromotionState.APPROVED,
    PromotionState.PR_OPENING,
    PromotionState.PR_OPEN,
)
TRACKED_STATES = (PromotionState.PR_OPEN, PromotionState.MERGED, PromotionState.DEPLOYED)

STATE_BADGES: dict[str, str] = {
    PromotionState.REQUESTED: "info",
    PromotionState.APPROVED: "info",
    PromotionState.PR_OPENING: "info",
    PromotionState.PR_OPEN: "info",
    PromotionState.MERGED: "info",
    PromotionState.DEPLOYED: "warn",
    PromotionState.HEALTHY: "ok",
    PromotionState.REJECTED: "idle",
    PromotionState.FAILED: "bad",
    PromotionState.CANCELLED: "idle",
    PromotionState.ABANDONED: "idle",
    PromotionState.DEGRADED: "bad",
}


class PromotionQuerySet(models.QuerySet):
    def in_flight(self) -> PromotionQuerySet:
        return self.filter(state__in=IN_FLIGHT_STATES)

    def awaiting_approval_by(self, user: Any, scopes: list[tuple[str, str]] | None) -> PromotionQuerySet:
        """Requested promotions this user may approve: in scope, not their own, not decided by them.

        ``scopes`` are the user's approver ``(project glob, environment)`` grants (None: everywhere);
        every app of the promotion must be covered, as the approve service checks.
        """
        qs = self.filter(state=PromotionState.REQUESTED).exclude(requested_by=user)
        decided = Approval.objects.valid().filter(promotion=OuterRef("pk"), approver=user)
        qs = qs.filter(~Exists(decided))
        if scopes is None:
            return qs
        covered = Q(pk__in=[])
        for project, environment in scopes:
            here = Q() if project == "*" else Q(application__project__regex=glob_regex(project))
            if environment != "*":
                here &= Q(target_env__name=environment)
            covered |= here
        outside = PromotionItem.objects.filter(promotion=OuterRef("pk")).exclude(covered)
        return qs.filter(~Exists(outside), items__isnull=False).distinct()

    def with_related(self) -> PromotionQuerySet:
        return self.select_related("source_env", "target_env", "repository", "requested_by")


class Promotion(PullRequestRecord, PortalSyncRecord):
    """Ship what the source environment runs now into the target environment, by pull request."""

    state = models.CharField(max_length=16, choices=PromotionState.choices, default=PromotionState.REQUESTED)
    source_env = models.ForeignKey("inventory.Environment", on_delete=models.PROTECT, related_name="+")
    target_env = models.ForeignKey("inventory.Environment", on_delete=models.PROTECT, related_name="+")
    repository = models.ForeignKey(
        "inventory.GitRepository", on_delete=models.PROTECT, related_name="promotions"
    )
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="promotions_requested"
    )
    requested_by_name = models.CharField(max_length=150, blank=True)
    note = models.TextField(blank=True)
    # Sync-window override: who asked, why. Emergency changes are listed for after-the-fact review.
    override_sync_window = models.BooleanField(default=False)
    override_justification = models.TextField(blank=True)
    # Blocking zero-downtime checklist gates overridden by an approver (never the requester), why.
    checklist_overridden_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    checklist_overridden_by_name = models.CharField(max_length=150, blank=True)
    checklist_overridden_at = models.DateTimeField(null=True, blank=True)
    checklist_override_reason = models.TextField(blank=True)
    correlation_id = models.CharField(max_length=64, blank=True)
    attempts = models.PositiveIntegerField(default=0)
    # Claim of the PR-opening task (changes.lifecycle): another worker may take over once it lapsed.
    claimed_until = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True, help_text="last transient error (retrying)")
    # Set while a task retry is scheduled, so the sweeper does not duplicate it before then.
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    gates = models.JSONField(default=list, blank=True, help_text="last gate evaluation")
    # What the requester saw: the approver decides on the same gates, not on a later re-evaluation.
    requested_gates = models.JSONField(default=list, blank=True, help_text="gates at the time of the request")
    # Every evaluation as it was (changes.gatehistory): at request, on the rendering, at PR opening.
    gate_evaluations = models.JSONField(default=list, blank=True, help_text="gate snapshots, oldest first")
    failure_reason = models.TextField(blank=True)
    # A permanent tracking problem (e.g. the PR is gone: 404), shown on the page until tracking works again.
    tracking_error = models.TextField(blank=True)
    # The pull request.
    pr_branch = models.CharField(max_length=250, blank=True)
    pr_base = models.CharField(max_length=200, blank=True)
    pr_number = models.PositiveIntegerField(null=True, blank=True)
    # pr_url, pr_head_sha, pushed_head_sha, merge_commit_sha, merged_by: changes.fields.PullRequestRecord
    deployed_revision = models.CharField(max_length=64, blank=True)
    # The rollback (rollbacks.RollbackRequest id) whose revert merged this promotion's change back out.
    rolled_back_by = models.PositiveIntegerField(null=True, blank=True)
    rolled_back_at = models.DateTimeField(null=True, blank=True)
    # Timestamps of every step.
    requested_at = models.DateTimeField(default=timezone.now, db_index=True)
    approved_at = models.DateTimeField(null=True, blank=True)
    rejected_at = models.DateTimeField(null=True, blank=True)
    pr_opening_at = models.DateTimeField(null=True, blank=True)
    pr_opened_at = models.DateTimeField(null=True, blank=True)
    merged_at = models.DateTimeField(null=True, blank=True)
    syncing_at = models.DateTimeField(null=True, blank=True)
    deployed_at = models.DateTimeField(null=True, blank=True)
    healthy_at = models.DateTimeField(null=True, blank=True)
    degraded_at = models.DateTimeField(null=True, blank=True)
    failed_at = models.DateTimeField(null=True, blank=True)
    cancelled_at = models.DateTimeField(null=True, blank=True)
    abandoned_at = models.DateTimeField(null=True, blank=True)
    last_tracked_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = PromotionQuerySet.as_manager()

    class Meta:
        ordering = ["-requested_at", "-id"]
        indexes = [models.Index(fields=["state", "-requested_at"], name="promotion_state_time")]

    def __str__(self) -> str:
        return f"promotion #{self.pk} {self.source_env_id}→{self.target_env_id} ({self.state})"

    def get_absolute_url(self) -> str:
        return reverse("promotions:detail", args=[self.pk])

    @property
    def is_in_flight(self) -> bool:
        return self.state in IN_FLIGHT_STATES

    @property
    def is_final(self) -> bool:
        return self.state in FINAL_STATES

    @property
    def is_cancellable(self) -> bool:
        return self.state in CANCELLABLE_STATES

    @property
    def gates_shown(self) -> list[Any]:
        """The gates a page shows: the latest evaluation while open, the requested ones once final.

        A completed change keeps the list its requester saw (and its approvers decided on); a later
        re-evaluation (at PR time) must not rewrite what the page says the change passed.
        """
        if self.is_final and self.requested_gates:
            return list(self.requested_gates)
        return list(self.gates or [])

    @property
    def gate_history(self) -> list[ShownSnapshot]:
        """Each gate evaluation, oldest first, labelled and timed (changes.gatehistory)."""
        return snapshots_shown(
            self.gate_evaluations,
            requested_gates=self.requested_gates,
            requested_at=self.requested_at,
            last_gates=self.gates,
        )

    @property
    def awaits_approval(self) -> bool:
        return self.state == PromotionState.REQUESTED

    @property
    def branch_pushed(self) -> bool:
        """The branch is on the forge at `pushed_head_sha`: reviewable, and approvable."""
        return bool(self.branch_pushed_at and self.pushed_head_sha)

    @property
    def badge(self) -> str:
        return "warn" if self.rolled_back_by else STATE_BADGES.get(self.state, "idle")

    @property
    def outcome_display(self) -> str:
        """The state as people read it: a reverted change says so instead of "Healthy"."""
        if self.rolled_back_by:
            return f"Rolled back by #{self.rolled_back_by}"
        return self.get_state_display()

    @property
    def rollback_url(self) -> str:
        return reverse("rollbacks:detail", args=[self.rolled_back_by]) if self.rolled_back_by else ""

    @property
    def lead_time(self) -> timedelta | None:
        """From the request to healthy (or deployed, while it is not healthy yet)."""
        end = self.healthy_at or self.deployed_at
        return end - self.requested_at if end is not None and end >= self.requested_at else None

    @property
    def lead_time_display(self) -> str:
        return format_duration(self.lead_time)

    audit_target_type = "promotion"

    @property
    def audit_scope(self) -> tuple[str, str]:
        """Return ``(project, environment)`` for the audit ledger's scope columns (audit/scope.py).

        A release train spanning several projects gives them comma-separated, sorted.
        """
        projects = sorted({p for p in self.items.values_list("application__project", flat=True) if p})
        return ",".join(projects), self.target_env.name


class PromotionItem(models.Model):
    """One app of a promotion: what the source runs, what the target had, what it gets."""

    promotion = models.ForeignKey(Promotion, on_delete=models.CASCADE, related_name="items")
    application = models.ForeignKey(
        "inventory.Application", on_delete=models.PROTECT, related_name="promotion_items"
    )
    # Copy of promotion.target_env so the partial unique index can cover it.
    target_env = models.ForeignKey("inventory.Environment", on_delete=models.PROTECT, related_name="+")
    active = models.BooleanField(default=True, help_text="holds the app x target env in-flight slot")
    source_revision = models.CharField(max_length=64, blank=True, help_text="Git revision the source runs")
    source_versions = models.JSONField(default=list, blank=True, help_text="image references the source runs")
    target_revision_before = models.CharField(
        max_length=64, blank=True, help_text="Git revision the target ran when the promotion was requested"
    )
    deployed_revision = models.CharField(
        max_length=64, blank=True, help_text="Git revision the target runs once the promotion is deployed"
    )
    target_versions_before = models.JSONField(default=list, blank=True)
    target_versions_after = models.JSONField(default=list, blank=True)
    version_before = models.CharField(max_length=200, blank=True)
    version_after = models.CharField(max_length=200, blank=True)
    paths = models.JSONField(default=list, blank=True, help_text="files the PR changes for this app")
    # The preview the requester saw (commits and file diff), kept for the approver and the record.
    commits = models.JSONField(default=list, blank=True, help_text="commits shown at the request")
    diff = models.TextField(blank=True, help_text="file diff shown at the request")
    deployed_at = models.DateTimeField(null=True, blank=True)
    healthy_at = models.DateTimeField(null=True, blank=True)
    # Argo CD's operationState of the sync that deployed the merge (change records carry it).
    sync_result = models.JSONField(null=True, blank=True)
    detail = models.TextField(blank=True)

    class Meta:
        ordering = ["application__name"]
        constraints = [
            models.UniqueConstraint(
                fields=["application", "target_env"],
                condition=Q(active=True),
                name="uniq_inflight_promotion_item",
                violation_error_message="another promotion of this app into this environment is in flight",
            ),
            models.UniqueConstraint(fields=["promotion", "application"], name="uniq_promotion_app"),
        ]

    def __str__(self) -> str:
        return f"{self.application_id}: {self.version_before} → {self.version_after}"

    @property
    def diff_lines(self) -> list[tuple[str, str]]:
        """The stored request-time diff, classified for display (added/removed/context lines)."""
        return classify_diff(self.diff)


class ApprovalDecision(models.TextChoices):
    APPROVE = "approve", "Approve"
    REJECT = "reject", "Reject"


class ApprovalQuerySet(models.QuerySet):
    def valid(self) -> ApprovalQuerySet:
        """Decisions that still count (not invalidated by a branch that moved)."""
        return self.filter(invalidated_at__isnull=True)

    def approving(self, head_sha: str) -> ApprovalQuerySet:
        """Valid approvals of the commit `head_sha`."""
        return self.valid().filter(decision=ApprovalDecision.APPROVE, head_sha=head_sha)


class Approval(models.Model):
    """An approver's decision on a promotion (four-eyes: never the requester)."""

    promotion = models.ForeignKey(Promotion, on_delete=models.CASCADE, related_name="approvals")
    approver = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    approver_name = models.CharField(max_length=150)
    decision = models.CharField(max_length=8, choices=ApprovalDecision.choices)
    comment = models.TextField(blank=True)
    at = models.DateTimeField(default=timezone.now)
    # The branch head the approver reviewed (the promotion's `pushed_head_sha` then): the approval
    # holds for exactly that commit.
    head_sha = models.CharField(max_length=64, blank=True)
    # Set when the branch moved off `head_sha` (changes.lifecycle.change_head_moved): it no longer counts.
    invalidated_at = models.DateTimeField(null=True, blank=True)

    objects = ApprovalQuerySet.as_manager()

    class Meta:
        ordering = ["at", "id"]
        constraints = [
            models.UniqueConstraint(
                fields=["promotion", "approver"],
                condition=Q(invalidated_at__isnull=True),
                name="uniq_approval_per_user",
            )
        ]

    def __str__(self) -> str:
        return f"{self.approver_name} {self.decision} #{self.promotion_id} at {self.head_sha[:12]}"

    @property
    def is_valid(self) -> bool:
        return self.invalidated_at is None


class PromotionBlockQuerySet(models.QuerySet):
    def active(self) -> PromotionBlockQuerySet:
        return self.filter(cleared_at__isnull=True)


class PromotionBlock(models.Model):
    """A version that must not be promoted into an environment (set by a rollback) until cleared.

    Shared contract with rollbacks/: create with `promotion_block_create`, clear with
    `promotion_block_clear` (promotions.services). A promotion that would ship `blocked_version`
    (an image tag/digest or image reference) or `blocked_revision` into `environment` is refused by
    the `promotion_block` gate.
    """

    application = models.ForeignKey(
        "inventory.Application", on_delete=models.CASCADE, related_name="promotion_blocks"
    )
    environment = models.ForeignKey(
        "inventory.Environment", on_delete=models.CASCADE, related_name="promotion_blocks"
    )
    blocked_version = models.CharField(max_length=300)
    blocked_revision = models.CharField(max_length=64, blank=True)
    reason = models.TextField(blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now)
    cleared_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    cleared_at = models.DateTimeField(null=True, blank=True)
    source_type = models.CharField(max_length=32, blank=True, help_text='e.g. "rollback"')
    source_id = models.CharField(max_length=64, blank=True)

    objects = PromotionBlockQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["application", "environment", "blocked_version"],
                condition=Q(cleared_at__isnull=True),
                name="uniq_active_promotion_block",
            )
        ]

    def __str__(self) -> str:
        return f"block {self.blocked_version} of {self.application_id} in {self.environment_id}"

    audit_target_type = "promotion_block"

    @property
    def audit_scope(self) -> tuple[str, str]:
        """Return ``(project, environment)`` for the audit ledger's scope columns (audit/scope.py)."""
        return self.application.project, self.environment.name

    @property
    def is_active(self) -> bool:
        return self.cleared_at is None


def glob_regex(pattern: str) -> str:
    """Translate a role grant's shell glob (``pay*``) into an anchored PostgreSQL regex."""
    return "^" + "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern) + "$"


def new_correlation_id() -> str:
    return uuid.uuid4().hex
