"""Moved to api.http (the JSON API plumbing) and accounts.tokens (bearer tokens)."""

# transitional: removed once lifecycle/rooms/auditsink have merged
from api.http import ApiError, api_not_found, api_view, authenticate_bearer, json_error, read_json  # noqa: F401
