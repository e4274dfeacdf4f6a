"""Apply the portal configuration: upsert instances, repositories, environments, applications."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from django.db import transaction

from audit.services import audit_event_record

from .config import PortalConfig, load_config
from .models import Application, ArgoInstance, Environment, GitRepository
from .ownership import (
    PIN_CONFIG,
    application_pin_resolve,
    application_pin_set,
    applications_ownership_recheck,
)


@dataclass
class ConfigApplyResult:
    """Labels of the rows a configuration apply created or updated."""

    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.created or self.updated)


def _upsert(
    model: Any, lookup: dict[str, Any], values: dict[str, Any], label: str, result: ConfigApplyResult
) -> Any:
    obj = model.objects.filter(**lookup).first()
    if obj is None:
        obj = model.objects.create(**lookup, **values)
        result.created.append(label)
        return obj
    dirty = [name for name, value in values.items() if getattr(obj, name) != value]
    if dirty:
        for name in dirty:
            setattr(obj, name, values[name])
        obj.save(update_fields=dirty)
        # Secrets are reported by name only.
        result.updated.append(f"{label} ({', '.join(sorted(dirty))})")
    return obj


def _mapping_json(config: PortalConfig) -> dict[str, Any]:
    m = config.mapping
    return {
        "app_label": m.app_label,
        "env_label": m.env_label,
        "cluster_label": m.cluster_label,
        "name_pattern": m.name_pattern.pattern if m.name_pattern else "",
        "overrides": {k: dataclasses.asdict(v) for k, v in sorted(m.overrides.items())},
        "infer_environments": config.infer_environments,
        "default_repository": config.default_repository,
        "ownership": [dataclasses.asdict(rule) for rule in config.ownership],
        # Apps whose strategy the configuration states: the poller never reads one from Argo CD.
        "configured_apps": sorted(a.name for a in config.applications),
    }


@transaction.atomic
def config_apply(*, config: PortalConfig) -> ConfigApplyResult:
    """Upsert instances, repositories, environments and applications declared in the configuration.

    Nothing is deleted: an instance removed from the file keeps its history.
    """
    result = ConfigApplyResult()
    mapping = _mapping_json(config)
    for inst in config.instances:
        _upsert(
            ArgoInstance,
            {"name": inst.name},
            {
                "url": inst.url,
                "token": inst.token,
                "verify_tls": inst.verify_tls,
                "allow_http": inst.allow_http,
                "cluster_env_label": inst.cluster_env_label,
                "mapping": mapping,
            },
            f"argocd:{inst.name}",
            result,
        )
    repos: dict[str, GitRepository] = {}
    for repo_config in config.repositories:
        repos[repo_config.name] = _upsert(
            GitRepository,
            {"name": repo_config.name},
            {
                "url": repo_config.url,
                "default_branch": repo_config.default_branch,
                "forge_kind": repo_config.forge,
                "api_url": repo_config.api_url,
                "full_name": repo_config.full_name,
                "web_url": repo_config.web_url,
                "token": repo_config.token,
                "webhook_secret": repo_config.webhook_secret,
                "allow_http": repo_config.allow_http,
                "base_path_pattern": repo_config.base_path_pattern,
            },
            f"repository:{repo_config.name}",
            result,
        )
    for env in config.environments:
        _upsert(
            Environment,
            {"name": env.name},
            {
                "order": env.order * 10,
                "branch": env.branch,
                "path_pattern": env.path_pattern,
                "requires_approval": env.requires_approval,
                "approvals_required": env.approvals_required,
                "soak_minutes": env.soak_minutes,
                "production_like": env.production_like,
                "rollback_auto_merge": env.rollback_auto_merge,
                "allow_skip_from": list(env.allow_skip_from),
                "required_checks": list(env.required_checks),
                "sync_mode": env.sync,
                "sync_options": dict(env.sync_options),
                "checklist": dict(env.checklist),
            },
            f"environment:{env.name}",
            result,
        )
    default_repo = repos.get(config.default_repository) if config.default_repository else None
    for app in config.applications:
        repo = repos.get(app.repository) if app.repository else default_repo
        values: dict[str, Any] = {"strategy": app.strategy, "strategy_options": app.strategy_options}
        if app.project:
            values["project"] = app.project
        if repo is not None:
            values["repository"] = repo
        _upsert(Application, {"name": app.name}, values, f"application:{app.name}", result)
    _ownership_apply(config=config, rules=mapping["ownership"], result=result)
    if result.changed:
        audit_event_record(
            action="inventory.config_applied",
            target_type="config",
            target_id=config.source,
            target_label=config.source,
            after={"created": result.created, "updated": result.updated},
            message=f"configuration {config.source}: {len(result.created)} created, {len(result.updated)} updated",
            system_name="config",
        )
    return result


def _ownership_apply(*, config: PortalConfig, rules: list[dict[str, Any]], result: ConfigApplyResult) -> None:
    """Pin every app as the configuration says; its project, and the Argo CD apps it owns, follow."""
    configured = {a.name: a for a in config.applications}
    moved = []
    for app in Application.objects.order_by("name"):
        entry = configured.get(app.name)
        before = (app.project, list(app.argocd_projects), list(app.argocd_instances), app.pin_source)
        if entry is not None and entry.argocd_projects:
            application_pin_set(
                app=app, projects=entry.argocd_projects, instances=entry.argocd_instances, source=PIN_CONFIG
            )
        else:
            if app.pin_source == PIN_CONFIG:  # its entry lost the pin: a glob or the first-seen rule again
                application_pin_set(app=app, projects=[], instances=[], source="")
            application_pin_resolve(app=app, rules=rules)
            if not app.argocd_projects:
                first = app.argo_apps.live().exclude(project="").order_by("first_seen_at", "pk").first()
                if first is not None:
                    application_pin_resolve(app=app, rules=rules, first_project=first.project)
        if entry is not None and entry.project:
            app.project = entry.project
        if before == (app.project, list(app.argocd_projects), list(app.argocd_instances), app.pin_source):
            continue
        app.save(update_fields=["project", "argocd_projects", "argocd_instances", "pin_source"])
        result.updated.append(f"application:{app.name} (argocd_projects)")
        moved.append(app)
    if moved:
        applications_ownership_recheck(apps=moved, system="config")


def config_apply_from_settings() -> ConfigApplyResult | None:
    """Apply GITOPSPORTAL_CONFIG (or the ARGOCD_* variables) if any is set."""
    config = load_config()
    return config_apply(config=config) if config is not None else None
