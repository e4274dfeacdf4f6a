"""Rollback services, the app's public API; each lives in its room.

State machine (every transition writes its `rollback.*` audit event in the same transaction, and for
production-like environments updates the change record):

    requested ─PR→ pr_open ─merge→ merged ─Argo CD runs it→ deployed ─Healthy→ healthy
        │              │ └→ (emergency: auto_merged once checks pass)
        └→ failed      └→ cancelled (by a user, or the PR was closed on the forge)
    merged → failed: the Argo CD sync of the revert failed, or it is not deployed after
    PROMOTION_DEPLOY_TIMEOUT_MINUTES; deployed → failed: not Healthy after that long.

Rooms: requests.py (permission, request, cancel), pullrequests.py (the revert PR), tracking.py
(merged → deployed → Healthy, the sweeper, webhooks), approvals.py (after-the-fact approval of
emergencies, escalation), records.py (ledger events, change record).
The lifecycle shared with promotions (claims, backoff, PR ensure, tracking, sweeping) is the
`changes` package: network work never runs inside a database transaction.
"""

from __future__ import annotations

from django.core.exceptions import PermissionDenied

from .approvals import (
    rollback_approve_after_the_fact,
    rollback_can_approve_after,
    rollbacks_escalate_unapproved,
)
from .pullrequests import rollback_fail, rollback_pr_open, rollback_url
from .rendered import rollback_rendered
from .requests import (
    RollbackNeedsConfirmation,
    RollbackRefused,
    rollback_cancel,
    rollback_check_permission,
    rollback_request_create,
)
from .tracking import (
    SYNC_RETRY_ROLES,
    rollback_checks,
    rollback_pr_event,
    rollback_status_publish,
    rollback_sync,
    rollback_sync_override,
    rollback_sync_retry,
    rollback_track,
    rollbacks_sweep,
)

__all__ = [
    "SYNC_RETRY_ROLES",
    "PermissionDenied",
    "RollbackNeedsConfirmation",
    "RollbackRefused",
    "rollback_approve_after_the_fact",
    "rollback_can_approve_after",
    "rollback_cancel",
    "rollback_check_permission",
    "rollback_checks",
    "rollback_fail",
    "rollback_pr_event",
    "rollback_pr_open",
    "rollback_rendered",
    "rollback_request_create",
    "rollback_status_publish",
    "rollback_sync",
    "rollback_sync_override",
    "rollback_sync_retry",
    "rollback_track",
    "rollback_url",
    "rollbacks_escalate_unapproved",
    "rollbacks_sweep",
]
