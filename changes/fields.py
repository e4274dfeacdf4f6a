"""The pull-request columns every kind of change carries (an abstract model: no table of its own)."""

from __future__ import annotations

from django.db import models


class PullRequestRecord(models.Model):
    """Where a change's pull request stands on the forge, as the lifecycle records it."""

    pr_url = models.CharField(max_length=500, blank=True)
    pr_head_sha = models.CharField(max_length=64, blank=True)
    # The commit the portal pushed to the change's branch, recorded before the push: only a branch
    # or PR at this commit is the portal's own (changes.pullrequests, trust).
    pushed_head_sha = models.CharField(max_length=64, blank=True)
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

    class Meta:
        abstract = True

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
