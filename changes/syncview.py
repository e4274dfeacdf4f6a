"""What the promotion and rollback pages show of a portal-driven sync (template-ready rows)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.contrib.auth.models import User

from audit.models import AuditEvent

from .lifecycle import MERGED, ChangeKind
from .syncs import (
    SYNC_ERROR,
    SYNC_FAILED,
    SYNC_REQUESTED,
    SYNC_WAITING,
    change_sync_may_override,
    change_sync_may_retry,
)

SYNC_ACTIONS = (
    "sync_waiting",
    "sync_window_overridden",
    "sync_requested",
    "sync_error",
    "sync_given_up",
    "sync_retried",
)


@dataclass(frozen=True)
class SyncEvent:
    at: datetime
    actor: str
    label: str
    message: str


@dataclass(frozen=True)
class SyncView:
    """The sync card: who syncs, where it stands, its ledger events, and whether the user may override."""

    label: str
    badge: str
    detail: str
    opens_at: datetime | None
    revision: str
    requested_at: datetime | None
    override_by: str
    override_reason: str
    can_override: bool
    waiting: bool
    window_closed: bool  # waiting for a window (else: for Argo CD to accept the sync)
    failed: bool = False  # given up: Argo CD refused it for good, or the deadline passed
    can_retry: bool = False  # the user may ask for the failed sync again
    events: list[SyncEvent] = field(default_factory=list)
    options: list[str] = field(default_factory=list)


_LABELS = {
    "": ("Sync after the merge", "idle"),
    SYNC_WAITING: ("Waiting for a sync window", "warn"),
    SYNC_REQUESTED: ("Sync requested", "ok"),
    SYNC_ERROR: ("Argo CD did not accept the sync", "bad"),
    SYNC_FAILED: ("Sync failed: not retried until someone asks", "bad"),
}


def change_sync_view(
    *, kind: ChangeKind, change: Any, user: User, retry_roles: tuple[str, ...] = ()
) -> SyncView | None:
    """The sync card of a change into a `sync: portal` environment (None for Argo CD auto-sync)."""
    environment, _apps = kind.sync_scope(change)
    if environment is None or not environment.portal_syncs:
        return None
    label, badge = _LABELS.get(change.sync_state, _LABELS[""])
    events = [
        SyncEvent(e.created_at, e.actor_name, e.get_action_display(), e.message)
        for e in AuditEvent.objects.filter(
            target_type=kind.name,
            target_id=str(change.pk),
            action__in=[f"{kind.name}.{a}" for a in SYNC_ACTIONS],
        ).order_by("sequence")
    ]
    waiting = change.state == MERGED and change.sync_state in (SYNC_WAITING, SYNC_ERROR)
    failed = change.state == MERGED and change.sync_state == SYNC_FAILED
    options = dict(environment.sync_options or {})
    return SyncView(
        label=label,
        badge=badge,
        detail=change.sync_detail,
        opens_at=change.sync_opens_at if change.sync_state == SYNC_WAITING else None,
        revision=change.sync_revision or change.merge_commit_sha,
        requested_at=change.sync_requested_at,
        override_by=change.sync_override_by,
        override_reason=change.sync_override_reason,
        can_override=waiting and change_sync_may_override(kind=kind, change=change, actor=user),
        waiting=waiting,
        window_closed=change.state == MERGED and change.sync_state == SYNC_WAITING,
        failed=failed,
        can_retry=failed
        and bool(retry_roles)
        and change_sync_may_retry(kind=kind, change=change, actor=user, roles=retry_roles),
        events=events,
        options=[key.replace("_", " ") for key, on in sorted(options.items()) if on],
    )


def change_sync_json(change: Any) -> dict[str, Any]:
    """The API shape of a change's portal-driven sync (`state` null: Argo CD syncs it, or not yet)."""
    return {
        "state": change.sync_state or None,
        "revision": change.sync_revision or None,
        "requested_at": change.sync_requested_at,
        "opens_at": change.sync_opens_at if change.sync_state == SYNC_WAITING else None,
        "detail": change.sync_detail or None,
        "apps": change.sync_apps or {},
        "override": {
            "by": change.sync_override_by,
            "reason": change.sync_override_reason,
            "at": change.sync_override_at,
        }
        if change.sync_override_at
        else None,
    }


_TIME = {"type": ["string", "null"], "format": "date-time"}
_TEXT = {"type": ["string", "null"]}
# OpenAPI schema of `change_sync_json` (promotions' and rollbacks' fragments use it).
SYNC_JSON_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "the portal's own Argo CD sync of the merge (environments with `sync: portal`)",
    "properties": {
        "state": {
            "type": ["string", "null"],
            "enum": [None, SYNC_WAITING, SYNC_REQUESTED, SYNC_ERROR, SYNC_FAILED],
            "description": "failed: the portal gave up (Argo CD refused the sync, or transient errors "
            "outlasted the deadline); `detail` holds Argo CD's answer, a person retries it on the page",
        },
        "revision": _TEXT,
        "requested_at": _TIME,
        "opens_at": {**_TIME, "description": "when the closed sync window opens (while waiting)"},
        "detail": _TEXT,
        "apps": {"type": "object", "additionalProperties": {"type": "object"}},
        "override": {
            "type": ["object", "null"],
            "properties": {"by": {"type": "string"}, "reason": {"type": "string"}, "at": _TIME},
        },
    },
}
