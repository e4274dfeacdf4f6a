"""OpenAPI fragment for this app's endpoints (merged by gitopsportal.openapi)."""

from __future__ import annotations

from typing import Any

from audit.chain import HASHED_FIELDS

_FILTER_PARAMETERS = [
    {"name": "since", "in": "query", "schema": {"type": "string"}, "description": "YYYY-MM-DD or ISO date-time (UTC), inclusive"},
    {"name": "until", "in": "query", "schema": {"type": "string"}, "description": "YYYY-MM-DD (whole day) or ISO date-time, exclusive"},
    {"name": "env", "in": "query", "schema": {"type": "string"}, "description": "environment name"},
    {"name": "app", "in": "query", "schema": {"type": "string"}},
    {"name": "actor", "in": "query", "schema": {"type": "string"}, "description": "username (events: actor; changes: requester, approver or merger)"},
    {"name": "action", "in": "query", "schema": {"type": "string"}, "description": "action or namespace (promotion); for changes the kind"},
    {"name": "text", "in": "query", "schema": {"type": "string"}, "description": "free text in message, target, PR URL, correlation id"},
    {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 500, "default": 100}},
]  # fmt: skip

_NULLABLE_STRING = {"type": ["string", "null"]}
_JSON: dict[str, Any] = {}  # any JSON value

_EVENT_PROPERTIES: dict[str, dict[str, Any]] = {name: {"type": "string"} for name in HASHED_FIELDS}
_EVENT_PROPERTIES.update(
    {
        "sequence": {"type": "integer"},
        "created_at": {"type": "string", "format": "date-time"},
        "actor_id": {"type": ["integer", "null"]},
        "shas": {"type": "array", "items": {"type": "string"}},
        "out_of_band": {"type": "boolean"},
        "before": _JSON,
        "after": _JSON,
        "hash": {"type": "string", "pattern": "^[0-9a-f]{64}$"},
        "prev_hash": {"type": "string", "pattern": "^[0-9a-f]{64}$"},
    }
)

_TIME = {"type": ["string", "null"], "format": "date-time"}

SCHEMAS: dict = {
    "AuditEvent": {
        "type": "object",
        "description": "One ledger event; `hash` is SHA-256 of the canonical JSON of every other field.",
        "required": ["sequence", "created_at", "action", "actor_name", "hash", "prev_hash"],
        "properties": _EVENT_PROPERTIES,
    },
    "AuditEventPage": {
        "type": "object",
        "required": ["events", "next"],
        "properties": {
            "events": {"type": "array", "items": {"$ref": "#/components/schemas/AuditEvent"}},
            "next": {"type": ["integer", "null"], "description": "pass as ?before= for older events"},
        },
    },
    "ChangeRecord": {
        "type": "object",
        "required": ["id", "kind", "app", "environment", "outcome"],
        "properties": {
            "id": {"type": "integer"},
            "kind": {"enum": ["promotion", "rollback", "out_of_band"]},
            "source_type": {"type": "string"},
            "source_id": {"type": "string"},
            "app": {"type": "string"},
            "environment": {"type": "string"},
            "project": {"type": "string"},
            "clusters": {"type": "array", "items": {"type": "string"}},
            "title": {"type": "string"},
            "requester_name": {"type": "string"},
            "approvers": {"type": "array", "items": {"type": "string"}},
            "separation_of_duties_ok": {"type": ["boolean", "null"]},
            "pr_number": {"type": ["integer", "null"]},
            "pr_url": {"type": "string"},
            "merged_by": {"type": "string"},
            "revision_before": {"type": "string"},
            "revision_after": {"type": "string"},
            "versions_before": _JSON,
            "versions_after": _JSON,
            "gates": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {"name": {"type": "string"}, "passed": {"type": "boolean"}, "detail": {}},
                },
            },
            "sync_result": _JSON,
            "requested_at": _TIME,
            "approved_at": _TIME,
            "pr_opened_at": _TIME,
            "merged_at": _TIME,
            "deployed_at": _TIME,
            "healthy_at": _TIME,
            "occurred_at": {"type": "string", "format": "date-time"},
            "lead_time_seconds": {"type": ["integer", "null"]},
            "outcome": {"enum": ["pending", "succeeded", "rolled_back", "failed", "abandoned"]},
            "emergency": {"type": "boolean"},
            "justification": {"type": "string"},
        },
    },
    "ChangeRecordPage": {
        "type": "object",
        "required": ["changes", "next"],
        "properties": {
            "changes": {"type": "array", "items": {"$ref": "#/components/schemas/ChangeRecord"}},
            "next": {**_NULLABLE_STRING, "description": "pass as ?cursor= for older records"},
        },
    },
}

_ERRORS = {
    "400": {"description": "bad filter", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}},
    "401": {"description": "not authenticated", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}},
    "403": {"description": "needs the auditor role", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}},
}  # fmt: skip

PATHS: dict = {
    "/audit/events": {
        "get": {
            "summary": "List audit ledger events, newest first (auditor role)",
            "operationId": "listAuditEvents",
            "tags": ["audit"],
            "parameters": [
                *_FILTER_PARAMETERS,
                {
                    "name": "before",
                    "in": "query",
                    "schema": {"type": "integer"},
                    "description": "keyset cursor: `next` of the previous page",
                },
            ],
            "responses": {
                "200": {
                    "description": "a page of events",
                    "content": {
                        "application/json": {"schema": {"$ref": "#/components/schemas/AuditEventPage"}}
                    },
                },
                **_ERRORS,
            },
        }
    },
    "/audit/changes": {
        "get": {
            "summary": "List change records to production-like environments, newest first (auditor role)",
            "operationId": "listChangeRecords",
            "tags": ["audit"],
            "parameters": [
                *_FILTER_PARAMETERS,
                {
                    "name": "cursor",
                    "in": "query",
                    "schema": {"type": "string"},
                    "description": "keyset cursor: `next` of the previous page",
                },
            ],
            "responses": {
                "200": {
                    "description": "a page of change records",
                    "content": {
                        "application/json": {"schema": {"$ref": "#/components/schemas/ChangeRecordPage"}}
                    },
                },
                **_ERRORS,
            },
        }
    },
}
