"""Decide which Argo CD apps may join a portal app: the app's pinned Argo CD projects and instances.

An Argo CD app names its portal app by a label anyone who may create Argo CD apps can set. So the
name alone never decides: the portal app is pinned to Argo CD projects (and optionally instances),
by its own configuration entry, by an `ownership` glob, or else by the first Argo CD app seen. An
Argo CD app outside the pin is stored with its conflict and attached to nothing; the portal app's
project (the scope users are granted) follows the pin, so moving an app moves its rights.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from fnmatch import fnmatchcase
from typing import Any

from audit.services import audit_event_record

from .appstate import POLLER
from .models import Application, ArgoApplication

PIN_CONFIG = "config"
PIN_GLOB = "glob"
PIN_FIRST_SEEN = "first-seen"


def ownership_rule_for(name: str, rules: Iterable[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    """Return the first `ownership` rule whose glob matches the app name, or None."""
    return next((r for r in rules if fnmatchcase(name, r.get("apps") or "")), None)


def application_pin_set(
    *, app: Application, projects: Sequence[str], instances: Sequence[str], source: str
) -> bool:
    """Pin the app (unsaved) and let its project follow; return whether anything changed.

    The project follows when it is empty or was one of the previously pinned projects: an explicit
    portal project from the configuration is applied after this and wins.
    """
    before = (app.project, list(app.argocd_projects), list(app.argocd_instances), app.pin_source)
    if projects and (not app.project or app.project in app.argocd_projects):
        app.project = projects[0][:200]
    app.argocd_projects = list(projects)
    app.argocd_instances = list(instances)
    app.pin_source = source if projects else ""
    return before != (app.project, list(app.argocd_projects), list(app.argocd_instances), app.pin_source)


def application_pin_resolve(
    *, app: Application, rules: Iterable[Mapping[str, Any]], first_project: str = ""
) -> bool:
    """Pin an app not pinned by its own config entry: its glob rule, else the first-seen project."""
    if app.pin_source == PIN_CONFIG:
        return False
    rule = ownership_rule_for(app.name, rules)
    if rule is not None:
        return application_pin_set(
            app=app,
            projects=rule.get("argocd_projects") or [],
            instances=rule.get("argocd_instances") or [],
            source=PIN_GLOB,
        )
    changed = False
    if app.pin_source == PIN_GLOB:  # the rule went away: pin anew from what runs
        changed = application_pin_set(app=app, projects=[], instances=[], source="")
    if not app.argocd_projects and first_project:
        changed = application_pin_set(app=app, projects=[first_project], instances=[], source=PIN_FIRST_SEEN)
    return changed


def ownership_conflict_of(*, app: Application, project: str, instance: str) -> str:
    """Say why an Argo CD app (project, instance) may not join the portal app, or return ""."""
    if app.argocd_projects and project not in app.argocd_projects:
        pinned = ", ".join(app.argocd_projects)
        return f"Argo CD project {project!r} is not among the projects pinned for {app.name} ({pinned})"[:500]
    if app.argocd_instances and instance not in app.argocd_instances:
        pinned = ", ".join(app.argocd_instances)
        return f"Argo CD instance {instance!r} is not among the instances pinned for {app.name} ({pinned})"[
            :500
        ]
    return ""


def ownership_conflict_record(*, row: ArgoApplication, app: Application, system: str = POLLER) -> None:
    """Audit an Argo CD app newly refused by the portal app it names (once per conflict)."""
    audit_event_record(
        action="inventory.ownership_conflict",
        target_type="argo_application",
        target_id=row.pk or "",
        target_label=f"{row.instance.name}/{row.name}",
        app=app.name,
        project=app.project,
        after={
            "argocd_app": row.name,
            "argocd_project": row.project,
            "instance": row.instance.name,
            "claimed_app": app.name,
            "pinned_projects": list(app.argocd_projects),
            "pinned_instances": list(app.argocd_instances),
        },
        message=f"Argo CD app {row.name} not attached to {app.name}: {row.ownership_conflict}",
        system_name=system,
    )


def applications_ownership_recheck(*, apps: Iterable[Application], system: str = POLLER) -> int:
    """Re-decide every stored Argo CD app claiming these apps after their pins changed.

    Rows outside the new pin are detached (and audited); rows inside it are attached again.
    Returns the number of rows that changed.
    """
    by_name = {a.name: a for a in apps}
    rows = list(
        ArgoApplication.objects.live().filter(claimed_app__in=list(by_name)).select_related("instance")
    )
    changed = 0
    for row in rows:
        app = by_name[row.claimed_app]
        conflict = ownership_conflict_of(app=app, project=row.project, instance=row.instance.name)
        application_id = None if conflict else app.pk
        if (row.application_id, row.ownership_conflict) == (application_id, conflict):
            continue
        was_conflict = row.ownership_conflict
        row.application_id, row.ownership_conflict = application_id, conflict
        row.save(update_fields=["application", "ownership_conflict"])
        if conflict and conflict != was_conflict:
            ownership_conflict_record(row=row, app=app, system=system)
        changed += 1
    return changed


def ownership_conflicts_of(*, app: Application) -> list[ArgoApplication]:
    """Return the live Argo CD apps that name this app but may not join it (for its page)."""
    return list(
        ArgoApplication.objects.live()
        .filter(claimed_app=app.name, application__isnull=True)
        .exclude(ownership_conflict="")
        .select_related("instance")
        .order_by("instance__name", "name")
    )
