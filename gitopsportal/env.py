"""Moved to core.env."""

# transitional: removed once lifecycle/rooms/auditsink have merged
from core.env import (  # noqa: F401
    check_redis_url,
    env_bool,
    env_choice,
    env_float,
    env_int,
    env_list,
    env_str,
    parse_database_url,
)
