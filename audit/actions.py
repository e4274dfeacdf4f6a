"""Every audit event ``action`` the portal writes: one documented enumeration (docs/audit.md).

The values are part of the ledger's format: exported ledgers and their hashes contain them, so a
value is never renamed or removed. A new kind of event adds a member here (and a row to
docs/audit.md); :func:`audit.services.audit_event_record` refuses any action not listed.
"""

from __future__ import annotations

from django.db import models


class AuditAction(models.TextChoices):
    # Sign-in, identity and access (accounts, gitopsportal signals).
    AUTH_LOGIN = "auth.login", "signed in"
    AUTH_LOGOUT = "auth.logout", "signed out"
    AUTH_LOGIN_FAILED = "auth.login_failed", "sign-in failed"
    AUTH_LOCKED_OUT = "auth.locked_out", "locked out after failed sign-ins"
    AUTH_DENIED = "auth.denied", "access denied"
    USER_CREATED = "user.created", "user created"
    USER_UPDATED = "user.updated", "user updated"
    USER_PRIVILEGES_CHANGED = "user.privileges_changed", "superuser, staff or active flag changed"
    AUTH_IDENTITY_LINKED = "auth.identity_linked", "SSO identity (issuer + subject) linked to a user"
    ROLE_GRANTED = "role.granted", "role granted"
    ROLE_GRANT_CHANGED = "role.grant_changed", "role grant changed"
    ROLE_REVOKED = "role.revoked", "role revoked"
    ROLE_SYNCED = "role.synced", "roles synced from the identity provider"
    TOKEN_CREATED = "token.created", "API token created"
    TOKEN_REVOKED = "token.revoked", "API token revoked"
    SECRETS_ROTATED = "secrets.rotated", "encrypted secrets rotated"

    # Observed state (inventory: configuration, Argo CD poller, Git ingest).
    INVENTORY_CONFIG_APPLIED = "inventory.config_applied", "configuration applied"
    INVENTORY_ENVIRONMENTS_INFERRED = "inventory.environments_inferred", "environments inferred"
    ARGOCD_INSTANCE_STALE = "argocd.instance_stale", "Argo CD instance unreachable"
    ARGOCD_INSTANCE_RECOVERED = "argocd.instance_recovered", "Argo CD instance reachable again"
    ARGOCD_APPLICATIONS_REMOVED = "argocd.applications_removed", "Argo CD applications removed"
    INVENTORY_OWNERSHIP_CONFLICT = "inventory.ownership_conflict", "Argo CD app refused by the app it names"
    INVENTORY_STRATEGY_DISCOVERED = "inventory.strategy_discovered", "promotion strategy read from Argo CD"
    DEPLOYMENT_OBSERVED = "deployment.observed", "deployment observed"

    # Promotions (stage -> prod by pull request) and their blocks.
    PROMOTION_REQUESTED = "promotion.requested", "promotion requested"
    PROMOTION_APPROVAL_RECORDED = "promotion.approval_recorded", "promotion approval recorded"
    PROMOTION_APPROVED = "promotion.approved", "promotion approved"
    PROMOTION_REJECTED = "promotion.rejected", "promotion rejected"
    PROMOTION_CHECKLIST_OVERRIDDEN = (
        "promotion.checklist_overridden",
        "blocking zero-downtime checklist overridden by an approver",
    )
    PROMOTION_CANCELLED = "promotion.cancelled", "promotion cancelled"
    PROMOTION_PR_OPENED = "promotion.pr_opened", "promotion pull request opened"
    PROMOTION_BRANCH_REPLACED = "promotion.branch_replaced", "promotion moved to a fresh branch"
    PROMOTION_BRANCH_PUSHED = "promotion.branch_pushed", "promotion branch pushed for review"
    PROMOTION_BRANCH_MOVED = (
        "promotion.branch_moved",
        "promotion branch moved off the pushed head: approvals invalidated",
    )
    PROMOTION_FAILED = "promotion.failed", "promotion failed"
    PROMOTION_MERGED = "promotion.merged", "promotion merged"
    PROMOTION_ABANDONED = "promotion.abandoned", "promotion abandoned (pull request closed)"
    PROMOTION_TRACKING_ERROR = "promotion.tracking_error", "promotion tracking error"
    PROMOTION_CHECKS_FAILED = "promotion.checks_failed", "a required check of the promotion PR failed"
    PROMOTION_CHECKS_PASSED = "promotion.checks_passed", "the required checks of the promotion PR passed"
    PROMOTION_DEPLOY_TIMED_OUT = "promotion.deploy_timed_out", "promotion deploy timed out"
    PROMOTION_SYNC_FAILED = "promotion.sync_failed", "promotion sync failed"
    PROMOTION_SYNC_WAITING = "promotion.sync_waiting", "promotion sync waiting for a sync window"
    PROMOTION_SYNC_REQUESTED = "promotion.sync_requested", "promotion sync requested by the portal"
    PROMOTION_SYNC_ERROR = "promotion.sync_error", "Argo CD did not accept the promotion's sync"
    PROMOTION_SYNC_GIVEN_UP = (
        "promotion.sync_given_up",
        "the portal stopped retrying the promotion's sync (Argo CD refused it, or the deadline passed)",
    )
    PROMOTION_SYNC_RETRIED = "promotion.sync_retried", "promotion's failed sync retried by a person"
    PROMOTION_SYNC_WINDOW_OVERRIDDEN = (
        "promotion.sync_window_overridden",
        "promotion sync window overridden by an approver",
    )
    PROMOTION_DEPLOYED = "promotion.deployed", "promotion deployed"
    PROMOTION_HEALTHY = "promotion.healthy", "promotion healthy"
    PROMOTION_DEGRADED = "promotion.degraded", "promotion degraded"
    PROMOTION_ROLLED_BACK = "promotion.rolled_back", "promotion reverted by a rollback"
    PROMOTION_BLOCK_CREATED = "promotion.block_created", "version blocked from promotion"
    PROMOTION_BLOCK_CLEARED = "promotion.block_cleared", "version block cleared"

    # Rollbacks (Git revert pull requests).
    ROLLBACK_REQUESTED = "rollback.requested", "rollback requested"
    ROLLBACK_REFUSED = (
        "rollback.refused",
        "rollback refused: its commits change apps outside the requester's scope",
    )
    ROLLBACK_PR_OPENED = "rollback.pr_opened", "rollback pull request opened"
    ROLLBACK_BRANCH_REPLACED = "rollback.branch_replaced", "rollback moved to a fresh branch"
    ROLLBACK_BRANCH_PUSHED = "rollback.branch_pushed", "rollback revert branch pushed"
    ROLLBACK_BRANCH_MOVED = "rollback.branch_moved", "rollback branch moved off the pushed head"
    ROLLBACK_FAILED = "rollback.failed", "rollback failed"
    ROLLBACK_CANCELLED = "rollback.cancelled", "rollback cancelled"
    ROLLBACK_AUTO_MERGED = "rollback.auto_merged", "emergency rollback merged by the portal"
    ROLLBACK_MERGED = "rollback.merged", "rollback merged"
    ROLLBACK_TRACKING_ERROR = "rollback.tracking_error", "rollback tracking error"
    ROLLBACK_CHECKS_FAILED = "rollback.checks_failed", "a required check of the rollback PR failed"
    ROLLBACK_CHECKS_PASSED = "rollback.checks_passed", "the required checks of the rollback PR passed"
    ROLLBACK_DEPLOY_TIMED_OUT = "rollback.deploy_timed_out", "rollback deploy timed out"
    ROLLBACK_SYNC_FAILED = "rollback.sync_failed", "rollback sync failed"
    ROLLBACK_SYNC_WAITING = "rollback.sync_waiting", "rollback sync waiting for a sync window"
    ROLLBACK_SYNC_REQUESTED = "rollback.sync_requested", "rollback sync requested by the portal"
    ROLLBACK_SYNC_ERROR = "rollback.sync_error", "Argo CD did not accept the rollback's sync"
    ROLLBACK_SYNC_GIVEN_UP = (
        "rollback.sync_given_up",
        "the portal stopped retrying the rollback's sync (Argo CD refused it, or the deadline passed)",
    )
    ROLLBACK_SYNC_RETRIED = "rollback.sync_retried", "rollback's failed sync retried by a person"
    ROLLBACK_SYNC_WINDOW_OVERRIDDEN = (
        "rollback.sync_window_overridden",
        "rollback sync window overridden by an approver",
    )
    ROLLBACK_NOT_HEALTHY = "rollback.not_healthy", "rollback deployed but not healthy"
    ROLLBACK_DEPLOYED = "rollback.deployed", "rollback deployed"
    ROLLBACK_HEALTHY = "rollback.healthy", "rollback healthy"
    ROLLBACK_APPROVED_AFTER_THE_FACT = (
        "rollback.approved_after_the_fact",
        "emergency rollback approved after the fact",
    )
    ROLLBACK_APPROVAL_ESCALATED = "rollback.approval_escalated", "emergency rollback approval escalated"

    # Forge webhooks.
    WEBHOOK_REJECTED = "webhook.rejected", "webhook rejected"

    # Insight: findings and notification subscriptions.
    DRIFT_DETECTED = "drift.detected", "drift detected"
    DRIFT_RESOLVED = "drift.resolved", "drift resolved"
    EXCEPTION_DETECTED = "exception.detected", "exception detected"
    EXCEPTION_RESOLVED = "exception.resolved", "exception resolved"
    INSIGHT_SUBSCRIPTION_CREATED = "insight.subscription_created", "subscription created"
    INSIGHT_SUBSCRIPTION_UPDATED = "insight.subscription_updated", "subscription updated"
    INSIGHT_SUBSCRIPTION_DELETED = "insight.subscription_deleted", "subscription deleted"

    # The ledger itself.
    AUDIT_EXPORTED = "audit.exported", "audit trail exported"
