"""Who is acting, from where: set per request by middleware, per task by Celery signals."""

from __future__ import annotations

import contextvars
from dataclasses import dataclass


@dataclass(frozen=True)
class ActorContext:
    ip_address: str = ""
    user_agent: str = ""
    auth_method: str = ""
    system_name: str = ""  # the task name when a Celery task acts with no user


_context: contextvars.ContextVar[ActorContext | None] = contextvars.ContextVar("audit_actor", default=None)


def current_actor_context() -> ActorContext:
    return _context.get() or ActorContext()


def set_actor_context(value: ActorContext | None) -> contextvars.Token:
    return _context.set(value)


def reset_actor_context(token: contextvars.Token) -> None:
    _context.reset(token)
