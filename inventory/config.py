"""The portal's YAML configuration (GITOPSPORTAL_CONFIG) or the argocd CLI's environment variables.

`load_config()` parses and validates; every error names the file, the line and the key, e.g.
``config/portal.yaml line 12: environments[2].branch: must be a string``. Strings may use
``${VAR}`` / ``${VAR:-default}`` so that ports and tokens come from the environment. Tokens are
given as ``token``, ``token_file`` or ``token_env`` and never appear in an error message.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap
from ruamel.yaml.error import MarkedYAMLError

from core.zerodowntime import CHECK_IDS, modes_validate

from .configreader import ConfigError, ConfigNode, plain, slug_read, token_read, unique_check, url_check

DEFAULT_APP_LABEL = "app.kubernetes.io/name"
DEFAULT_ENV_LABEL = "env"
DEFAULT_CLUSTER_LABEL = "cluster"
DEFAULT_PATH_PATTERN = "environments/{env}/{app}"
DEFAULT_BASE_PATTERN = "apps/{app}"
FORGE_KINDS = ("github", "gitea", "gitlab")
STRATEGIES = ("kustomize-images", "helm-values", "copy-paths")
# Promotion order used when environments are inferred from labels (no config file).
INFERRED_ORDER = (
    "dev",
    "development",
    "test",
    "qa",
    "int",
    "stage",
    "staging",
    "uat",
    "preprod",
    "prod",
    "production",
)


@dataclass(frozen=True)
class InstanceConfig:
    name: str
    url: str
    token: str = field(repr=False)
    verify_tls: bool = True
    allow_http: bool = False
    cluster_env_label: str = DEFAULT_ENV_LABEL


@dataclass(frozen=True)
class RepositoryConfig:
    name: str
    url: str
    default_branch: str = "main"
    forge: str = "github"
    api_url: str = ""
    full_name: str = ""
    web_url: str = ""
    token: str = field(default="", repr=False)
    webhook_secret: str = field(default="", repr=False)
    allow_http: bool = False
    base_path_pattern: str = DEFAULT_BASE_PATTERN


@dataclass(frozen=True)
class EnvironmentConfig:
    name: str
    order: int
    branch: str = "main"
    path_pattern: str = DEFAULT_PATH_PATTERN
    requires_approval: bool = False
    approvals_required: int = 1
    soak_minutes: int = 0
    production_like: bool = False
    rollback_auto_merge: bool = False
    allow_skip_from: tuple[str, ...] = ()
    # Checks (status contexts) an automatic merge needs at the PR head; "any" (or none named):
    # every reported check, and at least one.
    required_checks: tuple[str, ...] = ()
    # Zero-downtime checklist: check id -> off | warn | block, for the checks that differ from
    # the defaults (core.zerodowntime.default_modes: stricter when production_like).
    checklist: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Override:
    app: str
    env: str | None = None
    cluster: str | None = None


@dataclass(frozen=True)
class MappingConfig:
    app_label: str = DEFAULT_APP_LABEL
    env_label: str = DEFAULT_ENV_LABEL
    cluster_label: str = DEFAULT_CLUSTER_LABEL
    name_pattern: re.Pattern[str] | None = None
    overrides: dict[str, Override] = field(default_factory=dict)


@dataclass(frozen=True)
class ApplicationConfig:
    name: str
    project: str = ""
    repository: str = ""
    strategy: str = "kustomize-images"
    strategy_options: dict[str, Any] = field(default_factory=dict)
    argocd_projects: tuple[str, ...] = ()
    argocd_instances: tuple[str, ...] = ()


@dataclass(frozen=True)
class OwnershipRule:
    """Pin the apps whose name matches the glob `apps` to Argo CD projects (and instances)."""

    apps: str
    argocd_projects: tuple[str, ...]
    argocd_instances: tuple[str, ...] = ()


@dataclass(frozen=True)
class PortalConfig:
    source: str
    instances: tuple[InstanceConfig, ...] = ()
    repositories: tuple[RepositoryConfig, ...] = ()
    environments: tuple[EnvironmentConfig, ...] = ()
    mapping: MappingConfig = field(default_factory=MappingConfig)
    applications: tuple[ApplicationConfig, ...] = ()
    ownership: tuple[OwnershipRule, ...] = ()
    default_repository: str = ""
    infer_environments: bool = False


# ---------------------------------------------------------------------------------------------
# Sections
def _instances(node: ConfigNode) -> tuple[InstanceConfig, ...]:
    out: list[InstanceConfig] = []
    for item in node.items():
        item.mapping(
            (
                "name",
                "url",
                "token",
                "token_file",
                "token_env",
                "verify_tls",
                "allow_http",
                "cluster_env_label",
            )
        )
        allow_http = item.boolean("allow_http", False)
        url = item.string("url", required=True)
        url_check(item, "url", url, allow_http=allow_http)
        out.append(
            InstanceConfig(
                name=slug_read(item),
                url=url.rstrip("/"),
                token=token_read(item, required=True),
                verify_tls=item.boolean("verify_tls", True),
                allow_http=allow_http,
                cluster_env_label=item.string("cluster_env_label", DEFAULT_ENV_LABEL),
            )
        )
    unique_check(node, [i.name for i in out], "name")
    return tuple(out)


def _repositories(node: ConfigNode) -> tuple[RepositoryConfig, ...]:
    out: list[RepositoryConfig] = []
    keys = (
        "name", "url", "default_branch", "forge", "api_url", "full_name", "web_url", "token", "token_file",
        "token_env", "webhook_secret", "allow_http", "base_path_pattern",
    )  # fmt: skip
    for item in node.items():
        item.mapping(keys)
        allow_http = item.boolean("allow_http", False)
        url = item.string("url", required=True)
        url_check(item, "url", url, allow_http=allow_http)
        forge = item.string("forge", "github")
        if forge not in FORGE_KINDS:
            raise item.fail(f"must be one of {', '.join(FORGE_KINDS)}", "forge", item.line_of("forge"))
        api_url = item.string("api_url")
        if api_url:
            url_check(item, "api_url", api_url, allow_http=allow_http)
        full_name = item.string("full_name")
        if not full_name:
            full_name = urlsplit(url).path.strip("/").removesuffix(".git")
        if full_name.count("/") < 1:
            raise item.fail("must be owner/repo", "full_name", item.line_of("full_name"))
        base_pattern = item.string("base_path_pattern", DEFAULT_BASE_PATTERN)
        _check_pattern(item, "base_path_pattern", base_pattern, needs_env=False)
        out.append(
            RepositoryConfig(
                name=slug_read(item),
                url=url,
                default_branch=item.string("default_branch", "main"),
                forge=forge,
                api_url=api_url.rstrip("/"),
                full_name=full_name,
                web_url=item.string("web_url").rstrip("/"),
                token=token_read(item, required=False),
                webhook_secret=item.string("webhook_secret", secret=True),
                allow_http=allow_http,
                base_path_pattern=base_pattern.strip("/"),
            )
        )
    unique_check(node, [r.name for r in out], "name")
    return tuple(out)


def _check_pattern(node: ConfigNode, key: str, pattern: str, *, needs_env: bool) -> None:
    if "{app}" not in pattern:
        raise node.fail("must contain {app}", key, node.line_of(key))
    leftover = re.sub(r"\{(app|env)\}", "", pattern)
    if "{" in leftover or "}" in leftover:
        raise node.fail("only {app} and {env} placeholders are allowed", key, node.line_of(key))
    if pattern.startswith("/") or ".." in pattern.split("/"):
        raise node.fail("must be a relative path inside the repository", key, node.line_of(key))


def _required_checks(item: ConfigNode) -> tuple[str, ...]:
    """Read `required_checks`: a list of check names, or the word `any`."""
    if isinstance(item.value.get("required_checks"), str):
        if item.string("required_checks").strip() != "any":
            raise item.fail("must be a list of check names or `any`", "required_checks")
        return ("any",)
    return item.strings("required_checks")


def _checklist(item: ConfigNode) -> dict[str, str]:
    """Read `checklist`: check id -> off | warn | block (a YAML `off`/`false` reads as off)."""
    node = item.child("checklist")
    if node is None:
        return {}
    if not isinstance(node.value, dict):
        raise node.fail(
            f"must be a mapping of check id to off, warn or block (checks: {', '.join(CHECK_IDS)})"
        )
    out: dict[str, str] = {}
    for key, value in node.value.items():
        mode = "off" if value is False else value
        try:
            out.update(modes_validate({key: mode}))
        except ValueError as exc:
            raise node.fail(str(exc).removeprefix(f"{key}: "), str(key), node.line_of(str(key))) from None
    return out


def _environments(node: ConfigNode) -> tuple[EnvironmentConfig, ...]:
    out: list[EnvironmentConfig] = []
    keys = (
        "name", "branch", "path_pattern", "requires_approval", "approvals_required", "soak_minutes",
        "production_like", "rollback_auto_merge", "allow_skip_from", "required_checks", "checklist",
    )  # fmt: skip
    for order, item in enumerate(node.items()):
        item.mapping(keys)
        pattern = item.string("path_pattern", DEFAULT_PATH_PATTERN)
        _check_pattern(item, "path_pattern", pattern, needs_env=True)
        branch = item.string("branch", "main")
        if not branch or branch.startswith("-") or " " in branch or ".." in branch:
            raise item.fail("is not a valid branch name", "branch", item.line_of("branch"))
        out.append(
            EnvironmentConfig(
                name=slug_read(item),
                order=order,
                branch=branch,
                path_pattern=pattern.strip("/"),
                requires_approval=item.boolean("requires_approval", False),
                approvals_required=item.integer("approvals_required", 1, minimum=1),
                soak_minutes=item.integer("soak_minutes", 0),
                production_like=item.boolean("production_like", False),
                rollback_auto_merge=item.boolean("rollback_auto_merge", False),
                allow_skip_from=item.strings("allow_skip_from"),
                required_checks=_required_checks(item),
                checklist=_checklist(item),
            )
        )
    names = [e.name for e in out]
    unique_check(node, names, "name")
    for item, env in zip(node.items(), out, strict=True):
        for other in env.allow_skip_from:
            if other not in names:
                raise item.fail(
                    f"unknown environment {other!r}", "allow_skip_from", item.line_of("allow_skip_from")
                )
    return tuple(out)


def _mapping(node: ConfigNode | None) -> MappingConfig:
    if node is None:
        return MappingConfig()
    node.mapping(("labels", "name_pattern", "overrides"))
    labels = node.child("labels")
    app_label, env_label, cluster_label = DEFAULT_APP_LABEL, DEFAULT_ENV_LABEL, DEFAULT_CLUSTER_LABEL
    if labels is not None:
        labels.mapping(("app", "env", "cluster"))
        app_label = labels.string("app", DEFAULT_APP_LABEL)
        env_label = labels.string("env", DEFAULT_ENV_LABEL)
        cluster_label = labels.string("cluster", DEFAULT_CLUSTER_LABEL)
    pattern = None
    raw = node.string("name_pattern")
    if raw:
        try:
            pattern = re.compile(raw)
        except re.error as exc:
            raise node.fail(
                f"not a valid regular expression: {exc}", "name_pattern", node.line_of("name_pattern")
            ) from None
        if "app" not in pattern.groupindex:
            raise node.fail("needs a named group (?P<app>...)", "name_pattern", node.line_of("name_pattern"))
        extra = set(pattern.groupindex) - {"app", "env", "cluster"}
        if extra:
            raise node.fail(
                f"unknown named group(s): {', '.join(sorted(extra))}",
                "name_pattern",
                node.line_of("name_pattern"),
            )
    overrides: dict[str, Override] = {}
    over = node.child("overrides")
    if over is not None:
        over.mapping(tuple(str(k) for k in over.value) if isinstance(over.value, dict) else ())
        for argo_name in over.value:
            entry = over.child(str(argo_name))
            if entry is None:
                raise over.fail("must be a mapping with app (and env, cluster)", str(argo_name))
            entry.mapping(("app", "env", "cluster"))
            overrides[str(argo_name)] = Override(
                app=entry.string("app", required=True),
                env=entry.string("env") or None,
                cluster=entry.string("cluster") or None,
            )
    return MappingConfig(app_label, env_label, cluster_label, pattern, overrides)


def _applications(
    node: ConfigNode | None, repos: tuple[RepositoryConfig, ...]
) -> tuple[ApplicationConfig, ...]:
    if node is None:
        return ()
    out: list[ApplicationConfig] = []
    repo_names = {r.name for r in repos}
    for item in node.items():
        item.mapping(
            (
                "name",
                "project",
                "repository",
                "strategy",
                "strategy_options",
                "argocd_projects",
                "argocd_instances",
            )
        )
        strategy = item.string("strategy", "kustomize-images")
        if strategy not in STRATEGIES:
            raise item.fail(f"must be one of {', '.join(STRATEGIES)}", "strategy", item.line_of("strategy"))
        repo = item.string("repository")
        if repo and repo not in repo_names:
            raise item.fail(f"unknown repository {repo!r}", "repository", item.line_of("repository"))
        options = item.child("strategy_options")
        if options is not None and not isinstance(options.value, dict):
            raise options.fail("must be a mapping")
        out.append(
            ApplicationConfig(
                name=item.string("name", required=True),
                project=item.string("project"),
                repository=repo,
                strategy=strategy,
                strategy_options=plain(options.value) if options is not None else {},
                argocd_projects=item.strings("argocd_projects"),
                argocd_instances=item.strings("argocd_instances"),
            )
        )
    unique_check(node, [a.name for a in out], "name")
    return tuple(out)


def _ownership(node: ConfigNode | None) -> tuple[OwnershipRule, ...]:
    if node is None:
        return ()
    out: list[OwnershipRule] = []
    for item in node.items():
        item.mapping(("apps", "argocd_projects", "argocd_instances"))
        projects = item.strings("argocd_projects")
        if not projects:
            raise item.fail("is required (the Argo CD projects these apps belong to)", "argocd_projects")
        out.append(
            OwnershipRule(
                apps=item.string("apps", required=True),
                argocd_projects=projects,
                argocd_instances=item.strings("argocd_instances"),
            )
        )
    return tuple(out)


# ---------------------------------------------------------------------------------------------
# Entry points

TOP_KEYS = (
    "argocd", "repositories", "environments", "mapping", "applications", "ownership", "default_repository",
)  # fmt: skip


def parse_config(text: str, source: str) -> PortalConfig:
    """Parse YAML text into a PortalConfig; raise ConfigError naming line and key."""
    yaml = YAML(typ="rt")
    try:
        data = yaml.load(text)
    except MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = f" line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{source}{line}: not valid YAML: {exc.problem or exc.context}") from None
    if data is None:
        data = CommentedMap()
    root = ConfigNode(data, "", 1, source).mapping(TOP_KEYS)
    instances_node = root.child("argocd")
    if instances_node is None:
        raise root.fail("is required (a list of Argo CD instances)", "argocd")
    instances = _instances(instances_node)
    repos_node = root.child("repositories")
    repos = _repositories(repos_node) if repos_node is not None else ()
    envs_node = root.child("environments")
    envs = _environments(envs_node) if envs_node is not None else ()
    default_repo = root.string("default_repository", repos[0].name if repos else "")
    if default_repo and default_repo not in {r.name for r in repos}:
        raise root.fail(
            f"unknown repository {default_repo!r}", "default_repository", root.line_of("default_repository")
        )
    applications = _applications(root.child("applications"), repos)
    ownership = _ownership(root.child("ownership"))
    names = {i.name for i in instances}
    for key, pinned in [("applications", a.argocd_instances) for a in applications] + [
        ("ownership", r.argocd_instances) for r in ownership
    ]:
        unknown = sorted(set(pinned) - names)
        if unknown:
            raise root.fail(
                f"argocd_instances names unknown Argo CD instance(s): {', '.join(unknown)}",
                key,
                root.line_of(key),
            )
    return PortalConfig(
        source=source,
        instances=instances,
        repositories=repos,
        environments=envs,
        mapping=_mapping(root.child("mapping")),
        applications=applications,
        ownership=ownership,
        default_repository=default_repo,
        infer_environments=not envs,
    )


def config_from_env(environ: dict[str, str] | os._Environ[str] | None = None) -> PortalConfig | None:
    """Build a one-instance config from the argocd CLI's variables, or None when they are unset."""
    env = os.environ if environ is None else environ
    server = (env.get("ARGOCD_SERVER") or "").strip()
    if not server:
        return None
    token = (env.get("ARGOCD_AUTH_TOKEN") or "").strip()
    if not token:
        raise ConfigError(
            "ARGOCD_AUTH_TOKEN: required when ARGOCD_SERVER is set (and no GITOPSPORTAL_CONFIG)"
        )
    plaintext = _env_flag(env, "ARGOCD_PLAINTEXT")
    insecure = _env_flag(env, "ARGOCD_INSECURE")
    url = server if "://" in server else f"{'http' if plaintext else 'https'}://{server}"
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"ARGOCD_SERVER: expected host[:port] or an http(s) URL, got {server!r}")
    if parts.scheme == "http" and not plaintext:
        raise ConfigError("ARGOCD_SERVER: an http:// URL needs ARGOCD_PLAINTEXT=true")
    return PortalConfig(
        source="environment",
        instances=(
            InstanceConfig(
                name="argocd", url=url.rstrip("/"), token=token, verify_tls=not insecure, allow_http=plaintext
            ),
        ),
        infer_environments=True,
    )


def _env_flag(env: Any, name: str) -> bool:
    raw = (env.get(name) or "").strip().lower()
    if raw in ("", "0", "false", "no", "off"):
        return False
    if raw in ("1", "true", "yes", "on"):
        return True
    raise ConfigError(f"{name}: expected true/false, got {raw!r}")


def load_config(path: str | None = None) -> PortalConfig | None:
    """Load GITOPSPORTAL_CONFIG (or `path`), else the ARGOCD_* variables; None when neither is set."""
    path = path if path is not None else (settings.GITOPSPORTAL_CONFIG or "")
    if not path:
        return config_from_env()
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise ConfigError(f"GITOPSPORTAL_CONFIG: cannot read {path!r}: {exc.strerror}") from None
    return parse_config(text, path)


__all__ = [
    "EnvironmentConfig",
    "InstanceConfig",
    "MappingConfig",
    "Override",
    "OwnershipRule",
    "PortalConfig",
    "RepositoryConfig",
    "config_from_env",
    "load_config",
    "parse_config",
]
