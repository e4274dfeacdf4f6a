"""Reads for rollback pages and the API: the rollback plan (preview), lists, details."""

from __future__ import annotations

from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import Any

from django.contrib.auth.models import User
from django.db.models import Min, QuerySet

from accounts.permissions import has_role, project_filter
from accounts.roles import Role
from changes.checklist import (
    CHART_NOT_READ,
    SECRET_SCAN,
    ObjectSource,
    checklist_gates,
    environment_modes,
    secret_scan_gate,
)
from changes.lifecycle import changes_in_flight
from changes.overlayobjects import overlay_objects
from changes.secretscan import BASELINE_PATH, redact_diff
from core.diffs import classify_diff
from integrations.gitrepo import GitError, InvalidRef, validate_sha
from inventory.models import Application, ArgoApplication, Deployment, Environment, GitRepository
from inventory.revisions import app_revision
from promotions.models import Promotion

from . import history
from .models import RollbackRequest

MAX_DIFF_CHARS = 200_000


@dataclass(frozen=True)
class RollbackTarget:
    """One earlier deployment the environment can be rolled back to (one row per revision)."""

    deployment_id: int
    revision: str
    version: str
    deployed_at: Any
    who: str

    @property
    def short_sha(self) -> str:
        return self.revision[:8]


MAX_TARGETS = 12


def rollback_targets(deployments: list[Deployment], current_revision: str) -> list[RollbackTarget]:
    """Return the earlier deployments to pick from, newest first, one per revision (not the current)."""
    seen = {current_revision}
    targets: list[RollbackTarget] = []
    for d in deployments:
        if not d.revision or d.revision in seen:
            continue
        seen.add(d.revision)
        automated = d.automated or d.initiated_by == "automated"
        who = "Argo CD automated sync" if automated else (d.initiated_by or "unknown")
        targets.append(RollbackTarget(d.id, d.revision, d.version, d.deployed_at, who))
    return targets[:MAX_TARGETS]


@dataclass
class RollbackPlan:
    """What a rollback would do, computed from the inventory and the Git mirror.

    `errors` refuse the request; `warnings` are shown and, for "moved on", need a confirmation.
    """

    application: Application
    environment: Environment
    mode: str
    sha_input: str = ""
    current_revision: str = ""
    # The app's own last commit at or before the revision running now (the one definition shown
    # everywhere, inventory.revisions); the revert itself works from `current_revision`.
    current_app_revision: str = ""
    current_version: str = ""
    target_revision: str = ""
    expected_version: str = ""
    observed_deployment_id: int | None = None
    base_branch: str = ""
    paths: list[str] = field(default_factory=list)
    commits: list[history.RevertCommit] = field(default_factory=list)
    diff: str = ""
    diff_truncated: bool = False
    warnings: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    active_rollback: RollbackRequest | None = None
    promotions_in_flight: list[Any] = field(default_factory=list)
    targets: list[RollbackTarget] = field(default_factory=list)
    target_deployment_id: int | None = None
    # The zero-downtime checklist (shown, never blocking: see plan_gates) and the secret scan.
    gates: list[dict[str, Any]] = field(default_factory=list)
    argo_apps: list[ArgoApplication] = field(default_factory=list)  # the page links them in Argo CD

    @property
    def ok(self) -> bool:
        return not self.errors

    @property
    def revert_shas(self) -> list[str]:
        return [c.sha for c in self.commits]

    @property
    def diff_rows(self) -> list[tuple[str, str]]:
        return classify_diff(self.diff)

    def as_dict(self) -> dict[str, Any]:
        return {
            "application": self.application.name,
            "environment": self.environment.name,
            "mode": self.mode,
            "current_revision": self.current_revision,
            "current_version": self.current_version,
            "target_revision": self.target_revision,
            "expected_version": self.expected_version,
            "observed_deployment_id": self.observed_deployment_id,
            "commits": [
                {
                    "sha": c.sha,
                    "subject": c.subject,
                    "author": c.author_name,
                    "merge": c.is_merge,
                    "paths": list(c.paths),
                }
                for c in self.commits
            ],
            "diff": self.diff,
            "warnings": self.warnings,
            "errors": self.errors,
            "gates": self.gates,
        }


def env_deployments(application: Application, environment: Environment, limit: int = 50) -> list[Deployment]:
    """Return the app's deployments in an environment, newest first."""
    return list(
        Deployment.objects.filter(application=application, environment=environment).order_by(
            "-deployed_at", "-history_id", "-id"
        )[:limit]
    )


def newest_deployment_id(application: Application, environment: Environment) -> int | None:
    return (
        Deployment.objects.filter(application=application, environment=environment)
        .order_by("-deployed_at", "-history_id", "-id")
        .values_list("id", flat=True)
        .first()
    )


def env_argo_apps(application: Application, environment: Environment) -> list[ArgoApplication]:
    return list(
        ArgoApplication.objects.live()
        .filter(application=application, environment=environment)
        .select_related("cluster", "instance")
        .order_by("name")
    )


def promotions_in_flight(application: Application, environment: Environment) -> list[Any]:
    """Return promotions of this app into this environment that are not finished."""
    return changes_in_flight(kind_name="promotion", application=application, environment=environment)


def rollback_plan(
    *,
    application: Application,
    environment: Environment,
    mode: str,
    sha: str = "",
    target_deployment_id: int | None = None,
    fetch: bool = True,
) -> RollbackPlan:
    """Compute what rolling back `application` in `environment` would revert and bring back.

    In "previous" mode the target is the chosen earlier deployment (`target_deployment_id`, one
    of `plan.targets`), by default the one before the current.
    """
    plan = RollbackPlan(
        application=application, environment=environment, mode=mode, sha_input=(sha or "").strip()
    )
    plan.base_branch = environment.branch
    plan.paths = history.app_paths(application, environment)
    if mode not in RollbackRequest.Mode.values:
        plan.errors.append("choose how to roll back: previous deployment or one commit")
        return plan
    repository = application.repository
    if repository is None:
        plan.errors.append(f"{application.name} has no Git repository configured")
        return plan

    deployments = env_deployments(application, environment)
    argo_apps = env_argo_apps(application, environment)
    plan.argo_apps = argo_apps
    if deployments:
        plan.observed_deployment_id = deployments[0].id
        plan.current_revision = deployments[0].revision
        plan.current_version = deployments[0].version
    elif argo_apps:
        plan.current_revision = argo_apps[0].running_revision
        plan.current_version = argo_apps[0].version
    if not plan.current_revision:
        plan.errors.append(f"no deployment of {application.name} in {environment.name} has been observed yet")
        return plan
    plan.current_app_revision = app_revision(application, environment, plan.current_revision).shown
    plan.targets = rollback_targets(deployments, plan.current_revision)
    plan.target_deployment_id = target_deployment_id
    revisions = {a.revision for a in argo_apps if a.revision}
    if len(revisions) > 1:
        plan.warnings.append(
            f"the clusters of {environment.name} run different revisions ({', '.join(sorted(r[:8] for r in revisions))})"
        )

    plan.active_rollback = (
        RollbackRequest.objects.active()
        .for_app_env(application.pk, environment.pk)
        .order_by("-requested_at")
        .first()
    )
    if plan.active_rollback is not None:
        plan.errors.append(
            f"rollback #{plan.active_rollback.pk} of {application.name} in {environment.name} is still in progress"
        )
    plan.promotions_in_flight = promotions_in_flight(application, environment)
    if plan.promotions_in_flight:
        numbers = ", ".join(f"#{p.pk}" for p in plan.promotions_in_flight)
        plan.warnings.append(
            f"a promotion of {application.name} into {environment.name} is in flight ({numbers})"
        )

    try:
        mirror = history.mirror_fresh(repository) if fetch else history.repository_mirror(repository)
        mirror.rev_parse(plan.current_revision)
    except (GitError, InvalidRef) as exc:
        plan.errors.append(f"cannot read the repository {repository.name}: {exc}")
        return plan

    if mode == RollbackRequest.Mode.PREVIOUS:
        _plan_previous(plan, repository, mirror, deployments)
    else:
        _plan_commit(plan, repository, mirror)
    return plan


def _plan_previous(
    plan: RollbackPlan, repository: GitRepository, mirror: Any, deployments: list[Deployment]
) -> None:
    chosen = plan.target_deployment_id
    if chosen is not None and chosen not in {t.deployment_id for t in plan.targets}:
        plan.errors.append(
            f"choose one of the earlier deployments of {plan.application.name} in {plan.environment.name} listed"
        )
        return
    previous = next(
        (
            d
            for d in deployments
            if d.revision and d.revision != plan.current_revision and (chosen is None or d.id == chosen)
        ),
        None,
    )
    if previous is not None:
        plan.target_deployment_id = previous.id
    if previous is None:
        plan.errors.append(
            f"no earlier deployment of {plan.application.name} in {plan.environment.name} is known: "
            "revert a commit instead"
        )
        return
    plan.target_revision = previous.revision
    try:
        if not mirror.is_ancestor(previous.revision, plan.current_revision):
            plan.errors.append(
                f"the previous deployment ({previous.revision[:8]}) is not an ancestor of what "
                f"{plan.environment.name} runs ({plan.current_revision[:8]}): revert a commit instead"
            )
            return
        plan.commits = history.commits_moving_env(
            repository,
            mirror,
            old=previous.revision,
            new=plan.current_revision,
            paths=plan.paths,
        )
    except (GitError, InvalidRef) as exc:
        plan.errors.append(f"cannot read the history between the deployments: {exc}")
        return
    if not plan.commits:
        plan.errors.append(
            f"no commit between {previous.revision[:8]} and {plan.current_revision[:8]} changed "
            f"{plan.application.name} in {plan.environment.name}"
        )
        return
    plan.expected_version = previous.version or history.env_version_at(
        mirror, previous.revision, plan.environment, plan.application
    )
    _finish_plan(plan, mirror, rev_a=plan.current_revision, rev_b=previous.revision)


def _plan_commit(plan: RollbackPlan, repository: GitRepository, mirror: Any) -> None:
    try:
        sha = validate_sha(plan.sha_input)
    except InvalidRef:
        plan.errors.append("enter a commit SHA (7 to 40 hexadecimal characters)")
        return
    try:
        commit = history.commit_details(repository, mirror, sha)
    except InvalidRef:
        plan.errors.append(
            f"commit {sha} is not in the repository, so not in the history of {plan.environment.name}"
        )
        return
    except GitError as exc:
        plan.errors.append(f"cannot read commit {sha}: {exc}")
        return
    if not mirror.is_ancestor(commit.sha, plan.current_revision):
        plan.errors.append(
            f"commit {commit.short_sha} is not in the history of what {plan.environment.name} runs "
            f"({plan.current_revision[:8]}): it was never deployed there"
        )
        return
    if not any(history.touches(p, plan.paths) for p in commit.paths):
        plan.errors.append(
            f"commit {commit.short_sha} does not change {plan.application.name} in {plan.environment.name} "
            f"({', '.join(plan.paths)})"
        )
        return
    if not commit.parents:
        plan.errors.append(f"commit {commit.short_sha} is the root commit and cannot be reverted")
        return
    plan.commits = [commit]
    env_file = f"{plan.environment.app_path(plan.application.name)}/kustomization.yaml"
    if env_file in commit.paths:
        plan.expected_version = history.env_version_at(
            mirror, commit.parents[0], plan.environment, plan.application
        )
    else:
        plan.expected_version = plan.current_version
    _finish_plan(plan, mirror, rev_a=commit.sha, rev_b=commit.parents[0])


def _finish_plan(plan: RollbackPlan, mirror: Any, *, rev_a: str, rev_b: str) -> None:
    """Add the resulting diff (rev_a → rev_b on the app x environment's paths) and scope notes.

    The PR reverts the commits on `plan.paths` only (rollbacks.pullrequests), so this diff is what
    the PR contains when the branch has not moved on those paths.
    """
    touched = sorted({p for c in plan.commits for p in c.paths})
    try:
        diff = mirror.diff(rev_a, rev_b, plan.paths) if touched else ""
    except (GitError, InvalidRef) as exc:
        plan.warnings.append(f"the diff could not be computed: {exc}")
        diff = ""
    plan.gates = plan_gates(plan, mirror, diff=diff, rev_after=rev_b)
    if any(not gate["passed"] and gate["name"] == SECRET_SCAN for gate in plan.gates):
        # Nobody can override a secret: the request is refused, and the page never shows its value.
        plan.errors += [
            f"{gate['label']}: {gate['detail']}" for gate in plan.gates if gate["name"] == SECRET_SCAN
        ]
        diff = redact_diff(diff)
    if len(diff) > MAX_DIFF_CHARS:
        diff, plan.diff_truncated = diff[:MAX_DIFF_CHARS], True
    plan.diff = diff
    env_path = plan.environment.app_path(plan.application.name)
    base_path = history.app_base_path(plan.application)
    outside = [p for p in touched if not history.touches(p, [env_path])]
    if any(history.touches(p, [base_path]) for p in outside):
        plan.warnings.append(
            f"the revert changes {base_path}, shared by every environment of {plan.application.name}"
        )
    others = [p for p in outside if not history.touches(p, [base_path])]
    if others:
        shown = ", ".join(others[:5]) + (f" and {len(others) - 5} more" if len(others) > 5 else "")
        plan.warnings.append(
            f"the reverted commits also change files outside this app and environment; the rollback "
            f"leaves those as they are: {shown}"
        )
    merges = [c.short_sha for c in plan.commits if c.is_merge]
    if merges:
        plan.warnings.append(
            f"merge commits are reverted against their first parent, on this app's paths only: "
            f"{', '.join(merges)}"
        )


def plan_gates(plan: RollbackPlan, mirror: Any, *, diff: str, rev_after: str) -> list[dict[str, Any]]:
    """The rollback's secret scan (blocking, nobody overrides) and zero-downtime checklist (shown).

    The secret scan covers the revert's whole diff (the lines it adds), with the `.secrets.baseline`
    of the branch the PR targets. The checklist runs on the overlay as the revert leaves it (the
    revision rolled back to), in the environment's modes, but never blocks: a rollback restores a
    state that ran before, and holding it back during an incident would prolong the outage; its
    findings are shown on the plan and the rollback, and recorded with the request.
    """
    head = ""
    try:
        head = mirror.branch_head(plan.base_branch) or ""
    except (GitError, InvalidRef):
        head = ""
    baseline = _read(mirror, head, BASELINE_PATH) if head else None
    gates = [secret_scan_gate(app=plan.application.name, unified_diff=diff, baseline_text=baseline)]
    overlay = plan.environment.app_path(plan.application.name)
    objects, problems = (
        overlay_objects(lambda path: _read(mirror, rev_after, path), overlay) if rev_after else ([], [])
    )
    if plan.application.strategy == "helm-values":
        objects, problems = [], [CHART_NOT_READ.format(then="see Argo CD's rendered diff of the revert")]
    sources = [
        ObjectSource(plan.environment.name, tuple(objects), "", f"read from {overlay} at {rev_after[:8]}")
    ]
    found = checklist_gates(
        app=plan.application.name,
        modes=environment_modes(plan.environment, plan.application),
        sources=sources if objects else [],
        unavailable="; ".join(problems[:3]),
    )
    for gate in found:
        if not gate["passed"] and gate["blocking"]:
            gate["detail"] += " (shown, not blocking: a rollback restores what ran before)"
        gate["blocking"] = gate["overridable"] = False
    return gates + found


def rollback_baseline(rollback: RollbackRequest) -> str | None:
    """The `.secrets.baseline` at the head of the branch the rollback's PR targets (None: no file)."""
    repository = rollback.application.repository
    if repository is None:
        return None
    mirror = history.mirror_fresh(repository)
    try:
        head = mirror.branch_head(rollback.base_branch) or ""
    except (GitError, InvalidRef):
        return None
    return _read(mirror, head, BASELINE_PATH) if head else None


def _read(mirror: Any, rev: str, path: str) -> str | None:
    try:
        data = mirror.file_at(rev, path)
    except (GitError, InvalidRef):
        return None
    if data is None:
        return None
    try:
        return str(data.decode("utf-8"))
    except UnicodeDecodeError:
        return None


def moved_on_warnings(plan: RollbackPlan, observed_deployment_id: int | None) -> list[str]:
    """Return reasons to re-confirm: a new deployment since the form opened, a promotion in flight."""
    reasons: list[str] = []
    if observed_deployment_id is not None and plan.observed_deployment_id != observed_deployment_id:
        reasons.append(
            f"{plan.environment.name} has moved on since the form was opened: it now runs "
            f"{plan.current_revision[:8]} ({plan.current_version or 'unknown version'}); review the new preview"
        )
    if plan.promotions_in_flight:
        numbers = ", ".join(f"#{p.pk}" for p in plan.promotions_in_flight)
        reasons.append(
            f"a promotion of {plan.application.name} into {plan.environment.name} is in flight ({numbers})"
        )
    return reasons


def degraded_since(application: Application, environment: Environment) -> Any:
    """Return the earliest degraded observation of the app's Argo CD applications in the env."""
    return (
        ArgoApplication.objects.live()
        .filter(application=application, environment=environment)
        .aggregate(first=Min("degraded_since"))["first"]
    )


def rollback_list(
    *, user: User, state: str = "", app: str = "", environment: str = "", emergency: bool = False
) -> QuerySet:
    """Return the rollbacks the user may see, newest first, with their app and env loaded."""
    qs = RollbackRequest.objects.select_related("application", "environment")
    patterns = project_filter(user, Role.VIEWER)
    if patterns is not None:
        projects = Application.objects.values_list("project", flat=True).distinct()
        visible = [p for p in projects if any(fnmatchcase(p, pattern) for pattern in patterns)]
        qs = qs.filter(application__project__in=visible)
    if state:
        qs = qs.filter(state=state)
    if app:
        qs = qs.filter(application__name=app)
    if environment:
        qs = qs.filter(environment__name=environment)
    if emergency:
        qs = qs.filter(emergency=True)
    return qs


@dataclass(frozen=True)
class NewRollbackChoices:
    """What the "New rollback" form on the list offers: apps and environments the user is on call for."""

    applications: list[Application]
    environments: list[Environment]


def new_rollback_choices(*, user: User) -> NewRollbackChoices | None:
    """Return the "New rollback" choices, or None when the user is on call nowhere (no button)."""
    if not has_role(user, Role.ONCALL):
        return None
    apps = Application.objects.order_by("name")
    patterns = project_filter(user, Role.ONCALL)
    if patterns is not None:
        projects = Application.objects.values_list("project", flat=True).distinct()
        apps = apps.filter(project__in=[p for p in projects if any(fnmatchcase(p, g) for g in patterns)])
    environments = [
        e
        for e in Environment.objects.order_by("order", "name")
        if has_role(user, Role.ONCALL, environment=e.name)
    ]
    applications = list(apps[:500])
    if not applications or not environments:
        return None
    return NewRollbackChoices(applications, environments)


def rollback_detail(*, pk: int) -> RollbackRequest:
    return RollbackRequest.objects.select_related(
        "application", "application__repository", "environment"
    ).get(pk=pk)


def rollback_reverted_promotions(rollback: RollbackRequest) -> list[Promotion]:
    """Return the promotions whose merge commit this rollback reverts (links both ways)."""
    shas = [sha for sha in rollback.revert_shas or [] if sha]
    if not shas:
        return []
    return list(
        Promotion.objects.filter(target_env=rollback.environment, merge_commit_sha__in=shas).order_by("-pk")
    )


def rollback_argo_status(rollback: RollbackRequest) -> list[ArgoApplication]:
    """Return the Argo CD applications the rollback waits for (one per cluster)."""
    return env_argo_apps(rollback.application, rollback.environment)
