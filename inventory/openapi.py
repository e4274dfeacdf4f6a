"""OpenAPI fragment for this app's endpoints (merged by gitopsportal.openapi)."""

PATHS: dict = {}
SCHEMAS: dict = {}
