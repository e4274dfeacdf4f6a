"""Canonical JSON and hashing of audit events, shared by the ledger, exports and offline verification."""

from __future__ import annotations

import hashlib
import json
from datetime import datetime
from typing import Any

# The fields that make up an event's hash, in a fixed order; adding one is a format change.
HASHED_FIELDS: tuple[str, ...] = (
    "sequence",
    "created_at",
    "actor_id",
    "actor_name",
    "actor_type",
    "auth_method",
    "ip_address",
    "user_agent",
    "action",
    "target_type",
    "target_id",
    "target_label",
    "app",
    "environment",
    "cluster",
    "shas",
    "pr_url",
    "correlation_id",
    "out_of_band",
    "before",
    "after",
    "message",
    "prev_hash",
)


def _number(value: float) -> float | int:
    # PostgreSQL's jsonb stores numbers as numeric: no negative zero, and an integral float beyond
    # 2**53 comes back written in full (an int to Python). Hash the form the database gives back.
    if value == 0:
        return 0.0
    if value.is_integer() and abs(value) >= 1e16:
        return int(value)
    return value


def _json_value(value: Any) -> Any:
    if isinstance(value, float):
        return _number(value)
    if isinstance(value, dict):
        return {key: _json_value(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_json_value(item) for item in value]
    return value


def _normalise(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat(timespec="microseconds").replace("+00:00", "Z")
    if isinstance(value, dict | list | tuple | float):
        return _json_value(value)
    return value


def canonical_json(record: dict[str, Any]) -> str:
    """Serialise the hashed fields of an event dict deterministically."""
    payload = {field: _normalise(record.get(field)) for field in HASHED_FIELDS}
    return json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def event_hash(record: dict[str, Any]) -> str:
    return hashlib.sha256(canonical_json(record).encode("utf-8")).hexdigest()
