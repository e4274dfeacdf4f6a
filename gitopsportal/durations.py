"""Moved to core.durations."""

# transitional: removed once lifecycle/rooms/auditsink have merged
from core.durations import format_duration  # noqa: F401
