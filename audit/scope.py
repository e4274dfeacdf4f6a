"""Who may see which events: a scope of (project glob, environment) pairs, applied in SQL.

An event carries ``project`` (the Argo CD project(s) of its target, comma-separated and sorted when
a change spans several, e.g. a release train) and ``environment``. A scope is the list of grants of
a scoped auditor; ``None`` means everything. An event is in scope when one grant covers it: its
project glob matches one of the event's projects and its environment is ``*`` or the event's.
Events without a project (sign-ins, settings) are outside every project-scoped grant.

This module knows nothing about users or roles: the pages build the scope from the grants
(:func:`audit.selectors.audit_scope`); the sink only filters by it.

Target objects tell the ledger their scope by duck typing (no import of the domain apps):

``audit_scope`` (property) -> ``(project, environment)``
    On any model that is the target of events. ``audit_event_record(target=obj)`` reads it;
    without ``target`` it loads the object named by ``(target_type, target_id)`` from the model
    whose class attribute ``audit_target_type`` equals ``target_type``.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

from django.apps import apps
from django.db.models import Model, Q

ANY = "*"


@dataclass(frozen=True)
class ScopeGrant:
    """One grant of a scoped auditor: a project glob (``payments-*``) and an environment (or ``*``)."""

    project: str = ANY
    environment: str = ANY

    def covers(self, *, project: str, environment: str) -> bool:
        """Tell whether the grant reaches an event of these (comma-separated) projects and environment."""
        env_ok = self.environment == ANY or self.environment == environment
        if self.project == ANY:
            return env_ok
        pattern = re.compile(_glob_regex(self.project))
        return env_ok and bool(project) and bool(pattern.search(project))


AuditScope = tuple[ScopeGrant, ...]


def _glob_regex(glob: str) -> str:
    """Translate a project glob to a regex matching one item of a comma-separated list.

    Written for both PostgreSQL (``~``) and Python's ``re``: ``*`` and ``?`` stay within one item.
    """
    parts = []
    i = 0
    while i < len(glob):
        char = glob[i]
        if char == "*":
            parts.append("[^,]*")
        elif char == "?":
            parts.append("[^,]")
        elif char == "[" and "]" in glob[i + 2 :]:
            end = glob.index("]", i + 2)
            body = glob[i + 1 : end]
            body = "^" + body[1:] if body.startswith("!") else body
            parts.append("[" + body.replace("\\", "\\\\") + "]")
            i = end
        else:
            parts.append(re.escape(char))
        i += 1
    return "(^|,)" + "".join(parts) + "(,|$)"


def scope_q(scope: AuditScope | None, *, project_field: str = "project", env_field: str = "environment") -> Q:
    """Return the filter of the rows a scope may see (works for events and change records)."""
    if scope is None:
        return Q()
    q = Q(pk__in=[])  # no grant: nothing
    for grant in scope:
        part = Q()
        if grant.project != ANY:
            part &= Q(**{f"{project_field}__regex": _glob_regex(grant.project)})
        if grant.environment != ANY:
            part &= Q(**{env_field: grant.environment})
        q |= part
    return q


def in_scope(scope: AuditScope | None, *, project: str, environment: str) -> bool:
    """Tell whether a row of these project(s) and environment is visible in the scope."""
    if scope is None:
        return True
    return any(grant.covers(project=project, environment=environment) for grant in scope)


@functools.cache
def _models_by_target_type() -> dict[str, type[Model]]:
    """Map each declared ``audit_target_type`` to its model (the registry is fixed once loaded)."""
    return {
        model.audit_target_type: model for model in apps.get_models() if hasattr(model, "audit_target_type")
    }


def target_scope(*, target: object | None, target_type: str, target_id: str) -> tuple[str, str] | None:
    """Ask the target object for its ``(project, environment)``; None when it has no scope."""
    if target is None and target_type and target_id:
        model = _models_by_target_type().get(target_type)
        if model is not None:
            target = model._default_manager.filter(pk=target_id).first() if target_id.isdigit() else None
    scope = getattr(target, "audit_scope", None)
    if scope is None:
        return None
    project, environment = scope
    return str(project or ""), str(environment or "")
