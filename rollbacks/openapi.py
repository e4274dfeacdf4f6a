"""OpenAPI fragment for this app's endpoints (merged by gitopsportal.openapi)."""

from changes.checks import CHECKS_SCHEMA
from changes.syncs import OVERRIDE_MIN_REASON as SYNC_OVERRIDE_MIN_REASON
from changes.syncview import SYNC_JSON_SCHEMA

_ERROR = {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
_ROLLBACK = {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/Rollback"}}}}
_ID = {"name": "id", "in": "path", "required": True, "schema": {"type": "integer"}}

PATHS: dict = {
    "/rollbacks": {
        "get": {
            "summary": "List rollbacks visible to the caller (newest first, at most 100)",
            "tags": ["rollbacks"],
            "parameters": [
                {"name": "state", "in": "query", "schema": {"type": "string"}},
                {"name": "app", "in": "query", "schema": {"type": "string"}},
                {"name": "environment", "in": "query", "schema": {"type": "string"}},
            ],
            "responses": {
                "200": {
                    "description": "Rollbacks",
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "properties": {
                                    "rollbacks": {
                                        "type": "array",
                                        "items": {"$ref": "#/components/schemas/Rollback"},
                                    }
                                },
                            }
                        }
                    },
                },
                "401": {"description": "Not authenticated", **_ERROR},
            },
        },
        "post": {
            "summary": "Request a rollback: a Git-revert pull request (role oncall for the app's project and env)",
            "tags": ["rollbacks"],
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/RollbackRequest"}}},
            },
            "responses": {
                "201": {"description": "Requested; the PR is opened by a background task", **_ROLLBACK},
                "400": {
                    "description": "Refused (invalid input, SHA not in the environment's history...)",
                    **_ERROR,
                },
                "401": {"description": "Not authenticated", **_ERROR},
                "403": {"description": "Not on call for this app and environment", **_ERROR},
                "404": {"description": "Unknown application or environment", **_ERROR},
                "409": {
                    "description": "The environment moved on since `observed_deployment_id` (or a promotion is "
                    "in flight): review `warnings` and `plan`, then send again with `confirm: true`",
                    **_ERROR,
                },
            },
        },
    },
    "/rollbacks/{id}": {
        "get": {
            "summary": "One rollback: state, timestamps, PR, time to restore",
            "tags": ["rollbacks"],
            "parameters": [_ID],
            "responses": {
                "200": {"description": "The rollback", **_ROLLBACK},
                "401": {"description": "Not authenticated", **_ERROR},
                "404": {"description": "Unknown or not visible", **_ERROR},
            },
        }
    },
    "/rollbacks/{id}/cancel": {
        "post": {
            "summary": "Cancel a rollback whose PR is not merged (closes the PR, deletes the branch)",
            "tags": ["rollbacks"],
            "parameters": [_ID],
            "responses": {
                "200": {"description": "Cancelled", **_ROLLBACK},
                "403": {"description": "Not on call for this app and environment", **_ERROR},
                "404": {"description": "Unknown or not visible", **_ERROR},
                "409": {"description": "Already merged or finished", **_ERROR},
            },
        }
    },
    "/rollbacks/{id}/sync-retry": {
        "post": {
            "operationId": "retrySyncRollback",
            "summary": "Ask Argo CD again for a revert sync the portal gave up (on call or approver)",
            "description": "Only a failed sync (`sync.state` failed) is retried: 409 otherwise. Writes "
            "`rollback.sync_retried` and starts a new deadline.",
            "tags": ["rollbacks"],
            "parameters": [_ID],
            "responses": {
                "200": {"description": "The rollback, its `sync` as it is now", **_ROLLBACK},
                "401": {"description": "Not authenticated", **_ERROR},
                "403": {"description": "Not on call or approver for this app and environment", **_ERROR},
                "404": {"description": "Unknown or not visible", **_ERROR},
                "409": {"description": "The sync has not failed: nothing to retry", **_ERROR},
            },
        }
    },
    "/rollbacks/{id}/sync-override": {
        "post": {
            "operationId": "overrideSyncWindowRollback",
            "summary": "Sync the revert now although the sync window is closed (approver; never the requester)",
            "description": "Writes `rollback.sync_window_overridden`; Argo CD may still refuse a sync in a "
            "deny window without manual syncs.",
            "tags": ["rollbacks"],
            "parameters": [_ID],
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {
                        "schema": {
                            "type": "object",
                            "required": ["reason"],
                            "properties": {
                                "reason": {
                                    "type": "string",
                                    "minLength": SYNC_OVERRIDE_MIN_REASON,
                                    "maxLength": 2000,
                                    "description": "why syncing outside the window is safe (the ledger); "
                                    "409 when shorter",
                                }
                            },
                            "additionalProperties": False,
                        }
                    }
                },
            },
            "responses": {
                "200": {"description": "The rollback, its `sync` as it is now", **_ROLLBACK},
                "400": {"description": "reason not a string", **_ERROR},
                "401": {"description": "Not authenticated", **_ERROR},
                "403": {
                    "description": "Not an approver for this app and environment, or the requester",
                    **_ERROR,
                },
                "404": {"description": "Unknown or not visible", **_ERROR},
                "409": {"description": "No sync waits for a window, or the reason is too short", **_ERROR},
            },
        }
    },
}

_TIME = {"type": ["string", "null"], "format": "date-time"}
_TEXT_OR_NULL = {"type": ["string", "null"]}

SCHEMAS: dict = {
    "RollbackRequest": {
        "type": "object",
        "required": ["app", "environment", "reason"],
        "properties": {
            "app": {"type": "string"},
            "environment": {"type": "string"},
            "mode": {"type": "string", "enum": ["previous", "commit"], "default": "previous"},
            "sha": {"type": "string", "description": "for mode=commit: the commit to revert (7-40 hex)"},
            "reason": {"type": "string", "maxLength": 4000},
            "incident": {"type": "string", "maxLength": 500, "description": "free text or URL"},
            "target_deployment_id": {
                "type": ["integer", "null"],
                "description": "for mode=previous: the earlier deployment to go back to (default: the one before)",
            },
            "observed_deployment_id": {
                "type": ["integer", "null"],
                "description": "the newest deployment the caller saw; a newer one answers 409",
            },
            "confirm": {"type": "boolean", "default": False},
            "emergency": {
                "type": "boolean",
                "default": False,
                "description": "merge once required checks pass (environment must allow it)",
            },
            "justification": {"type": "string", "description": "required with emergency"},
        },
        "additionalProperties": False,
    },
    "Rollback": {
        "type": "object",
        "required": ["id", "application", "environment", "mode", "state", "revert_shas", "requested_at"],
        "properties": {
            "id": {"type": "integer"},
            "url": {"type": "string"},
            "application": {"type": "string"},
            "environment": {"type": "string"},
            "mode": {"type": "string", "enum": ["previous", "commit"]},
            "state": {
                "type": "string",
                "enum": ["requested", "pr_open", "merged", "deployed", "healthy", "failed", "cancelled"],
            },
            "requested_by": {"type": "string"},
            "reason": {"type": "string"},
            "incident": {"type": "string"},
            "emergency": {"type": "boolean"},
            "emergency_justification": {"type": "string"},
            "current_revision": {"type": "string"},
            "current_version": {"type": "string"},
            "target_revision": _TEXT_OR_NULL,
            "expected_version": {"type": "string"},
            "revert_shas": {"type": "array", "items": {"type": "string"}},
            "branch": {"type": "string"},
            "pushed_head_sha": {**_TEXT_OR_NULL, "description": "the revert commit the portal pushed"},
            "branch_pushed_at": _TIME,
            "pr_number": {"type": ["integer", "null"]},
            "pr_url": _TEXT_OR_NULL,
            "merge_commit_sha": _TEXT_OR_NULL,
            "failure_reason": _TEXT_OR_NULL,
            "conflict_files": {"type": "array", "items": {"type": "string"}},
            "tracking_detail": _TEXT_OR_NULL,
            "tracking_error": _TEXT_OR_NULL,
            "checks": CHECKS_SCHEMA,
            "sync": SYNC_JSON_SCHEMA,
            "requested_at": {"type": "string", "format": "date-time"},
            "pr_opened_at": _TIME,
            "auto_merged_at": _TIME,
            "merged_at": _TIME,
            "deployed_at": _TIME,
            "healthy_at": _TIME,
            "failed_at": _TIME,
            "cancelled_at": _TIME,
            "approved_after_by": _TEXT_OR_NULL,
            "approved_after_head_sha": {
                **_TEXT_OR_NULL,
                "description": "the revert commit the after-the-fact approval was given on",
            },
            "degraded_since": _TIME,
            "time_to_restore_seconds": {"type": ["number", "null"]},
            "time_to_restore_from_degraded_seconds": {"type": ["number", "null"]},
        },
    },
}
