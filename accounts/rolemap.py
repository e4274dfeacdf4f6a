"""Parse OIDC_ROLE_MAP: which identity-provider group grants which portal role, and where.

The format is a comma-separated list of ``group=role[:project[:environment]]`` entries, for example
``platform-admins=admin,payments-release=release_manager:payments-*,prod-approvers=approver:*:prod``.
A group may appear several times (one entry per role). This module imports no Django models so
settings.py can validate the map at start-up.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from django.core.exceptions import ImproperlyConfigured

from .roles import ALL_ROLES

_PROJECT = re.compile(r"^[A-Za-z0-9*?\[\]._-]{1,200}$")
_ENVIRONMENT = re.compile(r"^(\*|[A-Za-z0-9_-]{1,64})$")


@dataclass(frozen=True)
class RoleMapping:
    """One entry: members of ``group`` hold ``role`` on ``project`` (glob) in ``environment``."""

    group: str
    role: str
    project: str = "*"
    environment: str = "*"


def parse_role_map(raw: str, *, variable: str = "OIDC_ROLE_MAP") -> tuple[RoleMapping, ...]:
    """Return the mappings, or raise ImproperlyConfigured naming the bad entry."""
    mappings: list[RoleMapping] = []
    for entry in (part.strip() for part in (raw or "").split(",")):
        if not entry:
            continue
        group, sep, grant = entry.rpartition("=")
        group = group.strip()
        if not sep or not group or not grant.strip():
            raise ImproperlyConfigured(
                f"{variable}: expected group=role[:project[:environment]], got {entry!r}"
            )
        role, _, scope = grant.strip().partition(":")
        project, _, environment = scope.partition(":")
        project, environment = project or "*", environment or "*"
        if role not in ALL_ROLES:
            raise ImproperlyConfigured(
                f"{variable}: unknown role {role!r} in {entry!r}; roles: {', '.join(ALL_ROLES)}"
            )
        if not _PROJECT.match(project):
            raise ImproperlyConfigured(f"{variable}: bad project pattern {project!r} in {entry!r}")
        if not _ENVIRONMENT.match(environment):
            raise ImproperlyConfigured(f"{variable}: bad environment {environment!r} in {entry!r}")
        mappings.append(RoleMapping(group=group, role=role, project=project, environment=environment))
    return tuple(mappings)


def grants_for_groups(groups: object, mappings: tuple[RoleMapping, ...]) -> set[tuple[str, str, str]]:
    """Return the (role, project, environment) grants that these IdP groups confer.

    ``groups`` comes from a token claim: a list of strings normally, a single string from some
    providers; anything else confers nothing.
    """
    if isinstance(groups, str):
        names = {groups}
    elif isinstance(groups, list | tuple | set | frozenset):
        names = {g for g in groups if isinstance(g, str)}
    else:
        names = set()
    return {(m.role, m.project, m.environment) for m in mappings if m.group in names}
