"""OpenAPI fragment for this app's endpoints (merged by gitopsportal.openapi)."""

from __future__ import annotations

_STR = {"type": "string"}
_NSTR = {"type": ["string", "null"]}
_TIME = {"type": ["string", "null"], "format": "date-time"}
_STRS = {"type": "array", "items": {"type": "string"}}
_ERR = {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}


def _q(name: str, description: str) -> dict:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "schema": {"type": "string"},
        "description": description,
    }


PATHS: dict = {
    "/deployments": {
        "get": {
            "operationId": "listDeployments",
            "summary": "What runs where: current state per app, environment and cluster",
            "tags": ["inventory"],
            "parameters": [
                _q("app", "application name"),
                _q("environment", "environment name"),
                _q("cluster", "cluster name"),
                _q("project", "Argo CD project (team)"),
            ],
            "responses": {
                "200": {
                    "description": "current deployments",
                    "content": {
                        "application/json": {"schema": {"$ref": "#/components/schemas/DeploymentList"}}
                    },
                },
                "401": {"description": "not authenticated", **_ERR},
                "403": {"description": "no viewer role", **_ERR},
            },
        }
    },
    "/applications/{name}/history": {
        "get": {
            "operationId": "applicationHistory",
            "summary": "Deployments of an app (every Argo CD history entry ever observed), newest first",
            "tags": ["inventory"],
            "parameters": [
                {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}},
                _q("environment", "environment name"),
                {
                    "name": "limit",
                    "in": "query",
                    "required": False,
                    "schema": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100},
                },
            ],
            "responses": {
                "200": {
                    "description": "the app's deployments",
                    "content": {
                        "application/json": {"schema": {"$ref": "#/components/schemas/ApplicationHistory"}}
                    },
                },
                "400": {"description": "bad parameter", **_ERR},
                "401": {"description": "not authenticated", **_ERR},
                "404": {"description": "unknown (or not visible) application", **_ERR},
            },
        }
    },
}

SCHEMAS: dict = {
    "CurrentDeployment": {
        "type": "object",
        "required": [
            "application",
            "environment",
            "cluster",
            "namespace",
            "revision",
            "target_revision",
            "images",
            "version",
            "sync_status",
            "health_status",
            "deployed_at",
            "stale",
        ],
        "properties": {
            "application": _STR,
            "argo_application": _STR,
            "instance": _STR,
            "project": _STR,
            "environment": _NSTR,
            "cluster": _NSTR,
            "namespace": _STR,
            "revision": {"type": "string", "description": "Git SHA of the last successful sync"},
            "app_revision": {
                "type": "string",
                "description": "the app's revision: the last commit at or before `revision` that changed its "
                "overlay in this environment or its base (`revision` when not ingested yet)",
            },
            "target_revision": _STR,
            "revisions": {**_STRS, "description": "multi-source: one revision per source"},
            "images": _STRS,
            "version": {"type": "string", "description": "image tag or digest"},
            "sync_status": _STR,
            "health_status": _STR,
            "deployed_at": _TIME,
            "stale": {"type": "boolean", "description": "the Argo CD instance could not be polled recently"},
        },
    },
    "DeploymentList": {
        "type": "object",
        "required": ["deployments", "count"],
        "properties": {
            "deployments": {"type": "array", "items": {"$ref": "#/components/schemas/CurrentDeployment"}},
            "count": {"type": "integer"},
        },
    },
    "HistoryEntry": {
        "type": "object",
        "required": ["argo_application", "history_id", "environment", "cluster", "revision", "deployed_at"],
        "properties": {
            "argo_application": _STR,
            "history_id": {"type": "integer"},
            "environment": _NSTR,
            "cluster": _NSTR,
            "revision": _STR,
            "revisions": _STRS,
            "version": _STR,
            "images": _STRS,
            "deployed_at": {"type": "string", "format": "date-time"},
            "deploy_started_at": _TIME,
            "initiated_by": _STR,
            "automated": {"type": "boolean"},
            "out_of_band": {"type": "boolean", "description": "not caused by a portal promotion or rollback"},
        },
    },
    "ApplicationHistory": {
        "type": "object",
        "required": ["application", "history"],
        "properties": {
            "application": _STR,
            "project": _STR,
            "history": {"type": "array", "items": {"$ref": "#/components/schemas/HistoryEntry"}},
        },
    },
}
