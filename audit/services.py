"""Append events to the hash-chained ledger, in the caller's transaction."""

from __future__ import annotations

from typing import Any

from django.db import connection, transaction
from django.utils import timezone

from gitopsportal.logging import current_request_id

from .chain import event_hash
from .context import current_actor_context
from .models import GENESIS_HASH, AuditEvent

# Any fixed 64-bit number: the key of the PostgreSQL advisory lock that serialises appends.
AUDIT_CHAIN_LOCK_KEY = 0x6175646974636861

_REDACTED_KEYS = {"token", "password", "secret", "authorization", "api_key", "private_key"}


def _redact(value: Any) -> Any:
    """Drop anything that looks like a credential from before/after payloads."""
    if isinstance(value, dict):
        return {
            k: ("[redacted]" if any(word in str(k).lower() for word in _REDACTED_KEYS) else _redact(v))
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [_redact(v) for v in value]
    return value


def _lock_chain() -> None:
    """Serialise appends for the rest of the transaction."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [AUDIT_CHAIN_LOCK_KEY])
    # SQLite (the demo) takes the database write lock at BEGIN IMMEDIATE: appends are already serial.


def audit_event_record(
    *,
    action: str,
    actor: Any = None,
    target_type: str = "",
    target_id: str | int = "",
    target_label: str = "",
    app: str = "",
    environment: str = "",
    cluster: str = "",
    shas: list[str] | tuple[str, ...] = (),
    pr_url: str = "",
    before: Any = None,
    after: Any = None,
    message: str = "",
    out_of_band: bool = False,
    correlation_id: str | None = None,
    system_name: str | None = None,
) -> AuditEvent:
    """Append one event to the ledger inside the current transaction (or a new one)."""
    context = current_actor_context()
    is_user = actor is not None and getattr(actor, "is_authenticated", False)
    if is_user:
        actor_name = actor.get_username()
        actor_type = "token" if context.auth_method == "token" else "user"
    elif system_name or context.system_name:
        actor_name = f"system:{system_name or context.system_name}"
        actor_type = "system"
    else:
        actor_name = "anonymous"
        actor_type = "anonymous"
    with transaction.atomic():
        _lock_chain()
        last = AuditEvent.objects.order_by("-sequence").values_list("sequence", "hash").first()
        sequence, prev_hash = (last[0] + 1, last[1]) if last else (1, GENESIS_HASH)
        event = AuditEvent(
            sequence=sequence,
            created_at=timezone.now(),
            actor_id=actor.pk if is_user else None,
            actor_name=actor_name,
            actor_type=actor_type,
            auth_method=(context.auth_method or "session") if is_user else "",
            ip_address=context.ip_address[:64],
            user_agent=context.user_agent[:300],
            action=action,
            target_type=target_type,
            target_id=str(target_id),
            target_label=str(target_label)[:300],
            app=app,
            environment=environment,
            cluster=cluster,
            shas=list(shas),
            pr_url=pr_url,
            correlation_id=(correlation_id or current_request_id() or "")[:64],
            out_of_band=out_of_band,
            before=_redact(before),
            after=_redact(after),
            message=message,
            prev_hash=prev_hash,
        )
        event.hash = event_hash(event_as_record(event))
        event.save(force_insert=True)
    return event


def event_as_record(event: AuditEvent) -> dict[str, Any]:
    """Return the event as the dict that is hashed and exported."""
    return {
        "sequence": event.sequence,
        "created_at": event.created_at,
        "actor_id": event.actor_id,
        "actor_name": event.actor_name,
        "actor_type": event.actor_type,
        "auth_method": event.auth_method,
        "ip_address": event.ip_address,
        "user_agent": event.user_agent,
        "action": event.action,
        "target_type": event.target_type,
        "target_id": event.target_id,
        "target_label": event.target_label,
        "app": event.app,
        "environment": event.environment,
        "cluster": event.cluster,
        "shas": event.shas,
        "pr_url": event.pr_url,
        "correlation_id": event.correlation_id,
        "out_of_band": event.out_of_band,
        "before": event.before,
        "after": event.after,
        "message": event.message,
        "prev_hash": event.prev_hash,
        "hash": event.hash,
    }
