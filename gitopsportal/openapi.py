"""The OpenAPI 3.1 document of /api/v1, merged from each app's `openapi.py` fragment."""

from __future__ import annotations

import copy
from importlib import import_module
from typing import Any

from django.http import HttpRequest, JsonResponse
from django.views.decorators.http import require_GET

FRAGMENT_MODULES = ("inventory.openapi", "promotions.openapi", "rollbacks.openapi", "audit.openapi")

ERROR_SCHEMA = {
    "type": "object",
    "required": ["error"],
    "properties": {"error": {"type": "string"}},
    "additionalProperties": True,
}


# Every endpoint can answer these through api.http.api_view; fragments need not repeat them.
COMMON_ERRORS = {
    "400": "invalid input",
    "401": "not authenticated",
    "403": "not allowed for this role or project",
    "404": "not found, or not visible to you",
    "405": "method not allowed",
    "415": "the body must be application/json",
}
HTTP_METHODS = ("get", "post", "put", "patch", "delete")


def _with_common_errors(paths: dict[str, Any]) -> dict[str, Any]:
    for operations in paths.values():
        for method, operation in operations.items():
            if method not in HTTP_METHODS or not isinstance(operation, dict):
                continue
            responses = operation.setdefault("responses", {})
            for status, description in COMMON_ERRORS.items():
                responses.setdefault(
                    status,
                    {
                        "description": description,
                        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
                    },
                )
    return paths


def build_schema() -> dict[str, Any]:
    """Assemble the document; paths are relative to /api/v1."""
    paths: dict[str, Any] = {}
    schemas: dict[str, Any] = {"Error": ERROR_SCHEMA}
    for module_name in FRAGMENT_MODULES:
        module = import_module(module_name)
        paths.update(copy.deepcopy(getattr(module, "PATHS", {})))
        schemas.update(getattr(module, "SCHEMAS", {}))
    paths = _with_common_errors(paths)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "GitOps Portal API",
            "version": "1",
            "description": "Read what runs where; request promotions and rollbacks; export audit evidence. "
            "Authenticate with a session or `Authorization: Bearer <token>` (manage.py create_api_token USER).",
        },
        "servers": [{"url": "/api/v1"}],
        "security": [{"bearerAuth": []}, {"sessionAuth": []}],
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "bearerAuth": {"type": "http", "scheme": "bearer"},
                "sessionAuth": {"type": "apiKey", "in": "cookie", "name": "sessionid"},
            },
        },
    }


@require_GET
def schema_view(request: HttpRequest) -> JsonResponse:
    return JsonResponse(build_schema())
