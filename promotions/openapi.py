"""OpenAPI fragment for this app's endpoints (merged by gitopsportal.openapi)."""

from __future__ import annotations

from changes.checklist import OVERRIDE_MIN_REASON
from changes.checks import CHECKS_SCHEMA
from changes.syncs import OVERRIDE_MIN_REASON as SYNC_OVERRIDE_MIN_REASON
from changes.syncview import SYNC_JSON_SCHEMA

_STR = {"type": "string"}
_NSTR = {"type": ["string", "null"]}
_TIME = {"type": ["string", "null"], "format": "date-time"}
_STRS = {"type": "array", "items": {"type": "string"}}
_ERR = {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
_PROMOTION = {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/Promotion"}}}}
_ID = {"name": "id", "in": "path", "required": True, "schema": {"type": "integer"}}
_REFUSED = {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/PromotionRefused"}}}}
_COMMENT = {
    "required": False,
    "content": {
        "application/json": {
            "schema": {"type": "object", "properties": {"comment": _STR}, "additionalProperties": False}
        }
    },
}
_COMMON = {
    "401": {"description": "not authenticated", **_ERR},
    "403": {"description": "missing role for this promotion's project/environment, or four-eyes", **_ERR},
    "404": {"description": "no such promotion (or not visible)", **_ERR},
}


_APPROVE = {
    "required": False,
    "content": {
        "application/json": {
            "schema": {
                "type": "object",
                "properties": {
                    "comment": _STR,
                    "head_sha": {
                        **_STR,
                        "description": "the branch head the approver reviewed; 409 when the branch "
                        "is not at it (the approval binds to the pushed head SHA)",
                    },
                },
                "additionalProperties": False,
            }
        }
    },
}


_OVERRIDE = {
    "required": True,
    "content": {
        "application/json": {
            "schema": {
                "type": "object",
                "required": ["reason"],
                "properties": {
                    "reason": {
                        **_STR,
                        "minLength": OVERRIDE_MIN_REASON,
                        "description": "why overriding is safe (written to the promotion, its gates "
                        "and the ledger); 400 when missing or shorter",
                    }
                },
                "additionalProperties": False,
            }
        }
    },
}


def _action(op: str, summary: str, role: str, body: dict | None = None, extra: dict | None = None) -> dict:
    return {
        "post": {
            "operationId": op,
            "summary": summary,
            "description": f"Requires the {role} role for every app's project and the target environment.",
            "tags": ["promotions"],
            "parameters": [_ID],
            "requestBody": body or _COMMENT,
            "responses": {
                "200": {"description": "the promotion after the decision", **_PROMOTION},
                "409": {"description": "not in a state that allows it", **_REFUSED},
                **_COMMON,
                **(extra or {}),
            },
        }
    }


def _sync_action(op: str, summary: str, description: str, body: dict | None = None) -> dict:
    """A POST on the portal-driven sync of a merged promotion (`sync: portal` environments)."""
    return {
        "post": {
            "operationId": op,
            "summary": summary,
            "description": description,
            "tags": ["promotions"],
            "parameters": [_ID],
            **({"requestBody": body} if body else {}),
            "responses": {
                "200": {"description": "the promotion, its `sync` as it is now", **_PROMOTION},
                "409": {"description": "refused: the sync is not in a state that allows it", **_ERR},
                **_COMMON,
                **({"400": {"description": "reason not a string", **_ERR}} if body else {}),
            },
        }
    }


SYNC_OVERRIDE_BODY = {
    "required": True,
    "content": {
        "application/json": {
            "schema": {
                "type": "object",
                "required": ["reason"],
                "properties": {
                    "reason": {
                        **_STR,
                        "minLength": SYNC_OVERRIDE_MIN_REASON,
                        "maxLength": 2000,
                        "description": "why syncing outside the window is safe (written to the ledger); "
                        "409 when shorter",
                    }
                },
                "additionalProperties": False,
            }
        }
    },
}


PATHS: dict = {
    "/promotions": {
        "get": {
            "operationId": "listPromotions",
            "summary": "Promotions, newest first (50 per page)",
            "tags": ["promotions"],
            "parameters": [
                {"name": n, "in": "query", "required": False, "schema": _STR, "description": d}
                for n, d in (
                    ("state", "a state, or in_flight / final"),
                    ("to", "target environment"),
                    ("app", "application name"),
                    ("mine", "1: only mine"),
                    ("override", "1: only sync-window overrides (emergency changes)"),
                    ("page", "page number"),
                )
            ],
            "responses": {
                "200": {
                    "description": "a page of promotions",
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "properties": {
                                    "promotions": {
                                        "type": "array",
                                        "items": {"$ref": "#/components/schemas/Promotion"},
                                    },
                                    "page": {"type": "integer"},
                                    "has_next": {"type": "boolean"},
                                },
                            }
                        }
                    },
                },
                "401": _COMMON["401"],
            },
        },
        "post": {
            "operationId": "requestPromotion",
            "summary": "Request a promotion of one app, or several (a release train), from one environment to the next",
            "description": "Same gates and permissions as the browser: release_manager for every app's project. "
            "Environments that need no approval open the pull request right away.",
            "tags": ["promotions"],
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {"schema": {"$ref": "#/components/schemas/PromotionRequest"}}
                },
            },
            "responses": {
                "201": {"description": "requested", **_PROMOTION},
                "400": {"description": "invalid body", **_ERR},
                "409": {"description": "a gate failed or another promotion is in flight", **_REFUSED},
                **_COMMON,
            },
        },
    },
    "/promotions/{id}": {
        "get": {
            "operationId": "getPromotion",
            "summary": "A promotion: state, timestamps, pull request",
            "tags": ["promotions"],
            "parameters": [_ID],
            "responses": {"200": {"description": "the promotion", **_PROMOTION}, **_COMMON},
        }
    },
    "/promotions/{id}/approve": _action(
        "approvePromotion",
        "Approve the pushed branch head (approver; never the requester; 409 before the branch is pushed)",
        "approver",
        _APPROVE,
        {
            "503": {
                "description": "the forge could not confirm the branch head (nothing recorded): "
                "retry; the body has `retryable` and `retry_after` seconds",
                **_ERR,
            }
        },
    ),
    "/promotions/{id}/checklist-override": _action(
        "overrideChecklistPromotion",
        "Override the blocking zero-downtime checklist with a reason (approver; never the requester)",
        "approver",
        _OVERRIDE,
        {"400": {"description": "reason missing or too short", **_ERR}},
    ),
    "/promotions/{id}/reject": _action(
        "rejectPromotion", "Reject (approver; never the requester)", "approver"
    ),
    "/promotions/{id}/cancel": _action(
        "cancelPromotion",
        "Cancel before merge: closes the pull request and deletes its branch",
        "release_manager",
    ),
    "/promotions/{id}/sync-retry": _sync_action(
        "retrySyncPromotion",
        "Ask Argo CD again for a sync the portal gave up (release manager or approver)",
        "Requires the release_manager or approver role for every app's project and the target "
        "environment. Only a failed sync (`sync.state` failed) is retried: 409 otherwise. Writes "
        "`promotion.sync_retried` and starts a new deadline.",
    ),
    "/promotions/{id}/sync-override": _sync_action(
        "overrideSyncWindowPromotion",
        "Sync now although the sync window is closed (approver; never the requester)",
        "Requires the approver role for every app's project and the target environment; 403 for the "
        "requester (four-eyes). Only a sync waiting for a window (or retrying) is overridden: 409 "
        "otherwise. Writes `promotion.sync_window_overridden`; Argo CD may still refuse a sync in a "
        "deny window without manual syncs.",
        SYNC_OVERRIDE_BODY,
    ),
}

_GATE = {
    "type": "object",
    "required": ["name", "passed", "blocking", "detail"],
    "properties": {
        "name": _STR,
        "label": _STR,
        "passed": {"type": "boolean"},
        "blocking": {"type": "boolean"},
        "detail": _STR,
        "link": _STR,
        "transient": {"type": "boolean"},
        "overridable": {
            "type": "boolean",
            "description": "a blocking zero-downtime checklist gate an approver (not the requester) may override",
        },
        "overridden": {"type": "string", "description": "the approver's reason, once overridden"},
        "findings": {
            "type": "array",
            "description": "checklist: kind, namespace, name, container, destination, message; "
            "secret scan: file, line, detector (never the secret)",
            "items": {"type": "object"},
        },
    },
}

SCHEMAS: dict = {
    "PromotionRequest": {
        "type": "object",
        "required": ["apps", "from"],
        "properties": {
            "apps": {"type": "array", "items": _STR, "minItems": 1, "maxItems": 50},
            "from": _STR,
            "to": {**_STR, "description": "default: the next environment after `from`"},
            "note": _STR,
            "override_justification": {
                **_STR,
                "description": "override a closed sync window (needs release_manager + approver)",
            },
        },
        "additionalProperties": False,
    },
    "Gate": _GATE,
    "PromotionRefused": {
        "type": "object",
        "required": ["error"],
        "properties": {"error": _STR, "gates": {"type": "array", "items": _GATE}, "conflict": _STR},
    },
    "Promotion": {
        "type": "object",
        "required": ["id", "state", "source", "target", "apps", "timestamps"],
        "properties": {
            "id": {"type": "integer"},
            "state": {
                "type": "string",
                "enum": [
                    "requested",
                    "approved",
                    "pr_opening",
                    "pr_open",
                    "merged",
                    "deployed",
                    "healthy",
                    "rejected",
                    "failed",
                    "cancelled",
                    "abandoned",
                    "degraded",
                ],
            },
            "source": _STR,
            "target": _STR,
            "repository": _STR,
            "requested_by": _STR,
            "note": _STR,
            "override_sync_window": {"type": "boolean"},
            "override_justification": _STR,
            "apps": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "app": _STR,
                        "source_revision": _STR,
                        "source_versions": _STRS,
                        "target_revision_before": _STR,
                        "deployed_revision": _STR,
                        "version_before": _STR,
                        "version_after": _STR,
                        "paths": _STRS,
                        "deployed_at": _TIME,
                        "healthy_at": _TIME,
                    },
                },
            },
            "approvals": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "approver": _STR,
                        "decision": _STR,
                        "comment": _STR,
                        "at": _TIME,
                        "head_sha": {**_NSTR, "description": "the branch head approved (or rejected)"},
                        "invalidated_at": {
                            **_TIME,
                            "description": "set when the branch moved off head_sha: the approval no longer counts",
                        },
                    },
                },
            },
            "branch": {
                "type": ["object", "null"],
                "description": "the promotion branch, pushed when the promotion is requested",
                "properties": {
                    "name": _STR,
                    "pushed_head_sha": {**_NSTR, "description": "the commit approvers review and approve"},
                    "pushed_at": _TIME,
                },
            },
            "pull_request": {
                "type": ["object", "null"],
                "properties": {
                    "number": {"type": ["integer", "null"]},
                    "url": _STR,
                    "branch": _STR,
                    "head_sha": _STR,
                },
            },
            "merge_commit_sha": _NSTR,
            "failure_reason": _NSTR,
            "last_error": _NSTR,
            "tracking_error": {**_NSTR, "description": "a permanent tracking problem (e.g. the PR is gone)"},
            "checks": CHECKS_SCHEMA,
            "sync": SYNC_JSON_SCHEMA,
            "lead_time_seconds": {
                "type": ["integer", "null"],
                "description": "request → healthy (or deployed)",
            },
            "attempts": {"type": "integer"},
            "gates": {"type": "array", "items": {"type": "object"}},
            "gate_evaluations": {
                "type": "array",
                "description": "each evaluation of the gates, oldest first: its label (at request, on "
                "Argo CD's rendering, at PR opening, after an approver's checklist override), its time "
                "and the gates as they were then",
                "items": {
                    "type": "object",
                    "properties": {
                        "label": _STR,
                        "at": _TIME,
                        "gates": {"type": "array", "items": {"type": "object"}},
                    },
                },
            },
            "correlation_id": _STR,
            "timestamps": {"type": "object", "additionalProperties": _TIME},
            "url": _STR,
        },
    },
}
