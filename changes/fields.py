"""The pull-request columns every kind of change carries (an abstract model: no table of its own)."""

from __future__ import annotations

from django.conf import settings
from django.db import models

# How the portal's own status reads on a change page: (words, badge colour); never by colour alone.
PORTAL_STATUS_DISPLAY: dict[str, tuple[str, str]] = {
    "pending": ("… pending", "info"),
    "success": ("✓ success", "ok"),
    "failure": ("✗ failure", "bad"),
    "error": ("✗ error", "bad"),
}


class PullRequestRecord(models.Model):
    """Where a change's pull request stands on the forge, as the lifecycle records it."""

    pr_url = models.CharField(max_length=500, blank=True)
    pr_head_sha = models.CharField(max_length=64, blank=True)
    # The commit the portal pushed to the change's branch, recorded before the push: only a branch
    # or PR at this commit is the portal's own (changes.pullrequests, trust).
    pushed_head_sha = models.CharField(max_length=64, blank=True)
    # The commit `pushed_head_sha` was built on: a lost branch is rebuilt on it (same SHA or refused).
    pushed_base_sha = models.CharField(max_length=64, blank=True)
    # When the forge confirmed the branch at `pushed_head_sha` (None: not pushed yet). The change is
    # reviewable (rendered diff, approvals bound to that head) from then on.
    branch_pushed_at = models.DateTimeField(null=True, blank=True)
    merge_commit_sha = models.CharField(max_length=64, blank=True)
    merged_by = models.CharField(max_length=150, blank=True, help_text="forge user who merged the PR")
    # The CI checks of the PR head as tracking last read them (changes.checks): one row per check
    # {name, state, source, url, updated_at, required}, the verdict against the environment's
    # required_checks ("" not read yet | waiting | success | checks_failed), its detail and head.
    checks = models.JSONField(default=list, blank=True)
    checks_verdict = models.CharField(max_length=16, blank=True)
    checks_detail = models.CharField(max_length=500, blank=True)
    checks_sha = models.CharField(max_length=64, blank=True)
    checks_at = models.DateTimeField(null=True, blank=True)
    # The portal's own commit status (PORTAL_STATUS_CONTEXT) as last posted on the forge
    # (changes.portalstatus): the head it was posted on, its state and description. A status is
    # posted only when one of them changes. `portal_status_error`: why the last post was refused
    # (a 403/404: the token lacks "Commit statuses: write"), shown on the change page.
    portal_status_sha = models.CharField(max_length=64, blank=True)
    portal_status_state = models.CharField(max_length=16, blank=True)
    portal_status_description = models.CharField(max_length=140, blank=True)
    portal_status_at = models.DateTimeField(null=True, blank=True)
    portal_status_error = models.CharField(max_length=500, blank=True)

    class Meta:
        abstract = True

    @property
    def portal_status_context(self) -> str:
        """The context of the portal's own commit status (PORTAL_STATUS_CONTEXT)."""
        return str(settings.PORTAL_STATUS_CONTEXT)

    @property
    def portal_status_badge(self) -> tuple[str, str] | None:
        """The portal's last status on the head as the page shows it: (words, colour), or None."""
        if not self.portal_status_state:
            return None
        return PORTAL_STATUS_DISPLAY.get(self.portal_status_state, (self.portal_status_state, "idle"))

    @property
    def checks_badge(self) -> tuple[str, str] | None:
        """The checks of the open PR as the lists show them: (text, badge colour), or None."""
        if getattr(self, "state", "") != "pr_open" or not self.checks_verdict:
            return None
        if self.checks_verdict == "checks_failed":
            failing = sorted(
                {
                    str(row.get("name"))
                    for row in self.checks or []
                    if isinstance(row, dict)
                    and row.get("required")
                    and row.get("state") not in ("success", "neutral", "skipped", "pending", "expected")
                }
            )
            return "CI failed: " + ", ".join(failing), "bad"
        if self.checks_verdict == "success":
            return "checks passed", "ok"
        return "waiting for checks", "info"


class PortalSyncRecord(models.Model):
    """Where the portal's own Argo CD sync of a merged change stands (`sync: portal`, changes.syncs)."""

    # "": not started (or Argo CD's auto-sync applies it); "waiting": a sync window is closed;
    # "requested": Argo CD accepted the sync of every app; "error": the last request failed (tried
    # again); "failed": given up (Argo CD refused it for good, or the deadline passed) until a retry.
    sync_state = models.CharField(max_length=16, blank=True, default="")
    sync_revision = models.CharField(max_length=64, blank=True, help_text="revision the portal syncs to")
    sync_requested_at = models.DateTimeField(null=True, blank=True)
    sync_opens_at = models.DateTimeField(null=True, blank=True, help_text="when the closed window opens")
    sync_next_at = models.DateTimeField(null=True, blank=True, help_text="when the sweeper tries again")
    sync_detail = models.TextField(blank=True)
    sync_attempts = models.PositiveIntegerField(default=0)
    # The first of the current run of transient errors: past PORTAL_SYNC_DEADLINE_MINUTES the
    # portal gives up (sync_state "failed"); cleared by any answer that is not an error.
    sync_error_since = models.DateTimeField(null=True, blank=True)
    # Per Argo CD app: {"revision", "requested_at", "outcome": "requested" | "already"}.
    sync_apps = models.JSONField(default=dict, blank=True)
    # An approver's override of a closed window (never the requester), with the reason.
    sync_override_by = models.CharField(max_length=150, blank=True)
    sync_override_reason = models.TextField(blank=True)
    sync_override_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        abstract = True

    @property
    def sync_override_note(self) -> str:
        """The override as the change record's justification reads it ("" when none)."""
        if self.sync_override_at is None:
            return ""
        return f"sync window overridden by {self.sync_override_by}: {self.sync_override_reason}"
