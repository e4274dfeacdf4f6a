"""Promotion services: preview, request, approve/reject, open the PR, track it, cancel; blocks.

Every state change writes its audit event in the same transaction (and, for production-like
targets, updates the change record through `audit.services.change_record_sync`).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.core.exceptions import PermissionDenied
from django.db import IntegrityError, transaction
from django.db.models import F, Q, Value
from django.db.models.functions import Coalesce
from django.utils import timezone

from accounts.permissions import ensure_role, has_role
from accounts.roles import Role
from audit.services import audit_event_record
from gitopsportal.durations import format_duration
from gitopsportal.logging import current_request_id
from integrations.gitrepo import GitWorkspace, InvalidRef, validate_ref_name
from inventory.models import Application, Environment, GitRepository

from . import gates as g
from . import gitops, observed
from .models import (
    CANCELLABLE_STATES,
    IN_FLIGHT_STATES,
    Approval,
    ApprovalDecision,
    Promotion,
    PromotionBlock,
    PromotionItem,
    PromotionState,
    new_correlation_id,
)
from .pullrequests import (
    PullRequestPermanent,
    PullRequestResult,
    PullRequestRetryable,
    PullRequestSpec,
    pull_request_close_and_delete_branch,
    pull_request_ensure,
    pull_request_refresh,
)
from .strategies import EditPlan, SourceState, StrategyError, env_dir, plan_edits

logger = logging.getLogger(__name__)
S = PromotionState
SYSTEM = "promotions"
PR_LABELS = ("promotion",)
MAX_PR_ATTEMPTS = 8
PR_POLL_SECONDS = 300
# Merged/deployed promotions are tracked at every sweep (SWEEP_INTERVAL_SECONDS) unless tracked
# this recently (by a follow-up task or a webhook).
ROLLOUT_POLL_SECONDS = 5


def sweep_message_expiry() -> float:
    """Seconds a sweeper's tracking message stays valid: a few sweeps, then the next sweep re-sends it."""
    return float(getattr(settings, "SWEEP_EXPIRES_SECONDS", 30.0))


class PromotionRefused(Exception):
    """The request cannot go ahead; `gates` explain why, `link` points at a conflicting promotion."""

    def __init__(self, message: str, *, gates: Sequence[g.Gate] = (), link: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.gates = list(gates)
        self.link = link


# =============================================================================================
# Blocks (shared with rollbacks/)


@transaction.atomic
def promotion_block_create(
    *,
    application: Application,
    environment: Environment,
    blocked_version: str,
    blocked_revision: str = "",
    reason: str = "",
    actor: Any = None,
    source_type: str = "",
    source_id: str = "",
) -> PromotionBlock:
    """Block promoting `blocked_version` of an app into an environment; idempotent per version."""
    existing = (
        PromotionBlock.objects.select_for_update()
        .filter(application=application, environment=environment, blocked_version=blocked_version)
        .active()
        .first()
    )
    if existing is not None:
        return existing
    block = PromotionBlock.objects.create(
        application=application,
        environment=environment,
        blocked_version=blocked_version[:300],
        blocked_revision=blocked_revision[:64],
        reason=reason,
        created_by=actor if getattr(actor, "is_authenticated", False) else None,
        source_type=source_type[:32],
        source_id=str(source_id)[:64],
    )
    audit_event_record(
        action="promotion.block_created",
        actor=actor,
        target_type="promotion_block",
        target_id=block.pk,
        target_label=f"{application.name}@{blocked_version} in {environment.name}",
        app=application.name,
        environment=environment.name,
        shas=[blocked_revision] if blocked_revision else [],
        after={"blocked_version": blocked_version, "source_type": source_type, "source_id": str(source_id)},
        message=reason,
        system_name=None if actor else SYSTEM,
    )
    return block


@transaction.atomic
def promotion_block_clear(*, block: PromotionBlock, actor: Any) -> PromotionBlock:
    """Clear a block (release_manager of the app's project); clearing twice is a no-op."""
    application, environment = block.application, block.environment
    ensure_role(actor, Role.RELEASE_MANAGER, project=application.project, environment=environment.name)
    now = timezone.now()
    updated = PromotionBlock.objects.filter(pk=block.pk, cleared_at__isnull=True).update(
        cleared_at=now, cleared_by=actor
    )
    block.refresh_from_db()
    if updated:
        audit_event_record(
            action="promotion.block_cleared",
            actor=actor,
            target_type="promotion_block",
            target_id=block.pk,
            target_label=f"{application.name}@{block.blocked_version} in {environment.name}",
            app=application.name,
            environment=environment.name,
            before={"active": True},
            after={"active": False},
        )
    return block


# =============================================================================================
# Preview


@dataclass
class ItemPreview:
    application: Application
    source: observed.EnvState
    target: observed.EnvState
    plan: EditPlan | None
    error: str
    gates: list[g.Gate]
    commits: list[gitops.ChangelogEntry] = field(default_factory=list)
    paths: list[str] = field(default_factory=list)

    @property
    def source_revision(self) -> str:
        return self.source.revision

    @property
    def source_versions(self) -> list[str]:
        return list(self.source.images)

    @property
    def failing(self) -> list[g.Gate]:
        return g.failing(self.gates)

    @property
    def diff_lines(self) -> list[tuple[str, str]]:
        from .selectors import diff_lines

        return diff_lines(self.plan.diff) if self.plan else []


@dataclass
class PromotionPreview:
    source_env: Environment
    target_env: Environment
    repository: GitRepository | None
    base_sha: str
    gates: list[g.Gate]
    items: list[ItemPreview]
    override_requested: bool = False
    override_allowed: bool = False

    @property
    def all_gates(self) -> list[g.Gate]:
        return self.gates + [gate for item in self.items for gate in item.gates]

    @property
    def failing(self) -> list[g.Gate]:
        return g.failing(self.all_gates)

    @property
    def ok(self) -> bool:
        return bool(self.items) and not self.failing

    @property
    def diff(self) -> str:
        return "".join(item.plan.diff for item in self.items if item.plan)

    @property
    def needs_override(self) -> bool:
        return any(
            gate.name == "sync_window" and not gate.passed and not gate.transient for gate in self.all_gates
        )


def _single_repository(applications: Sequence[Application]) -> GitRepository:
    repos = {app.repository_id for app in applications}
    if None in repos:
        missing = ", ".join(a.name for a in applications if a.repository_id is None)
        raise PromotionRefused(f"no GitOps repository is configured for {missing}")
    if len(repos) != 1:
        raise PromotionRefused("a release train must stay within one repository (one pull request)")
    repository = applications[0].repository
    assert repository is not None
    return repository


def promotion_preview(
    *,
    actor: Any,
    applications: Sequence[Application],
    source_env: Environment,
    target_env: Environment,
    override: bool = False,
    justification: str = "",
    exclude_promotion_id: int | None = None,
) -> PromotionPreview:
    """Compute what a promotion would do: commits, exact diff, versions before → after, gates."""
    if not applications:
        raise PromotionRefused("choose at least one application")
    repository = _single_repository(applications)
    order_gate = g.gate_environment_order(source_env, target_env)
    try:
        base = validate_ref_name(target_env.branch)
        mirror = gitops.mirror_for(repository)
        base_sha = mirror.branch_head(base) or ""
    except InvalidRef as exc:
        raise PromotionRefused(f"bad branch for {target_env.name}: {exc}") from None
    except Exception as exc:
        logger.warning("mirror of %s unavailable: %s", repository.name, exc)
        raise PromotionRefused(f"the repository {repository.name} cannot be read right now: {exc}") from None
    if not base_sha:
        raise PromotionRefused(f"branch {target_env.branch} of {repository.name} does not exist")
    read_target = gitops.reader(mirror, base_sha)
    allowed_all = all(g.may_override_sync_window(actor, app, target_env) for app in applications)
    items: list[ItemPreview] = []
    for app in applications:
        source = observed.env_state(app, source_env)
        target = observed.env_state(app, target_env)
        rev = source.revision
        known_rev = bool(rev) and gitops.ensure_commit(mirror, rev)
        read_source = gitops.reader(mirror, rev) if known_rev else (lambda _path: None)
        plan: EditPlan | None = None
        error = ""
        if not rev:
            error = f"the revision {source_env.name} runs is unknown: {source.summary()}"
        elif not known_rev:
            error = f"revision {rev[:12]} that {source_env.name} runs is not in {repository.name}"
        else:
            try:
                plan = plan_edits(
                    app=app,
                    source_env=source_env,
                    target_env=target_env,
                    source=SourceState(rev, source.images, read_source),
                    read_target=read_target,
                )
            except StrategyError as exc:
                error = str(exc)
        versions = (plan.versions_after if plan else []) or list(source.images)
        item_gates = [
            g.gate_source_healthy(source),
            g.gate_sync_window(
                app, target_env, override=override, override_allowed=allowed_all, justification=justification
            ),
            g.gate_in_flight(app, target_env, exclude_promotion_id=exclude_promotion_id),
            g.gate_promotion_block(app, target_env, versions=versions, revision=rev),
            g.gate_zero_downtime(app, source_env, target_env, read_source),
            g.gate_changes(plan, error),
        ]
        commits: list[gitops.ChangelogEntry] = []
        if known_rev:
            commits = _changelog(mirror, repository, app, source_env, rev, plan)
        items.append(
            ItemPreview(
                application=app,
                source=source,
                target=target,
                plan=plan,
                error=error,
                gates=item_gates,
                commits=commits,
                paths=[e.path for e in plan.edits if e.changed] if plan else [],
            )
        )
    return PromotionPreview(
        source_env=source_env,
        target_env=target_env,
        repository=repository,
        base_sha=base_sha,
        gates=[order_gate],
        items=items,
        override_requested=override,
        override_allowed=allowed_all,
    )


# =============================================================================================
# Request, approve, reject, cancel


def _apps_label(promotion: Promotion, names: Iterable[str] | None = None) -> str:
    names = list(names) if names is not None else [i.application.name for i in promotion.items.all()]
    return ",".join(names)[:200]


def _audit(
    promotion: Promotion,
    action: str,
    *,
    actor: Any = None,
    before: Any = None,
    after: Any = None,
    message: str = "",
) -> None:
    items = list(promotion.items.select_related("application"))
    audit_event_record(
        action=action,
        actor=actor,
        target_type="promotion",
        target_id=promotion.pk,
        target_label=f"promotion #{promotion.pk} {promotion.source_env.name} → {promotion.target_env.name}",
        app=_apps_label(promotion, [i.application.name for i in items]),
        environment=promotion.target_env.name,
        shas=[s for s in (promotion.merge_commit_sha, promotion.pr_head_sha) if s],
        pr_url=promotion.pr_url,
        before=before,
        after={
            "state": promotion.state,
            "items": [
                {"app": i.application.name, "before": i.version_before, "after": i.version_after}
                for i in items
            ],
            **(after or {}),
        },
        message=message,
        correlation_id=promotion.correlation_id or None,
        system_name=None if actor is not None else SYSTEM,
    )
    _change_record(promotion, items)


OUTCOMES = {
    S.HEALTHY: "succeeded",
    S.FAILED: "failed",
    S.DEGRADED: "failed",
    S.REJECTED: "abandoned",
    S.CANCELLED: "abandoned",
    S.ABANDONED: "abandoned",
}


def _revision_label(revisions: Iterable[str]) -> str:
    """One revision as is; several (clusters disagree) as their short SHAs, comma-separated."""
    unique = sorted({r for r in revisions if r})
    if len(unique) == 1:
        return unique[0]
    return ",".join(r[:12] for r in unique)[:64]


def change_record_source_id(promotion: Promotion, app_name: str) -> str:
    """The change record of one app of a promotion: `<promotion id>:<app>` (evidence: the promotion)."""
    return f"{promotion.pk}:{app_name}"


def _change_record(promotion: Promotion, items: Sequence[PromotionItem]) -> None:
    """Mirror the promotion into one audit change record per app (production-like targets only).

    One record per app keeps project-scoped auditors' view exact for release trains; the
    evidence page of each lists the promotion's ledger events (source id `<promotion id>:<app>`).
    """
    if not promotion.target_env.production_like:
        return
    from audit.services import change_record_sync

    approvers = [a.approver_name for a in promotion.approvals.all() if a.decision == ApprovalDecision.APPROVE]
    gates = [
        {"name": gate.get("name", "?"), "passed": bool(gate.get("passed")), "detail": gate.get("detail", "")}
        for gate in (promotion.gates or [])
        if isinstance(gate, dict)
    ]
    outcome = OUTCOMES.get(promotion.state, "pending")
    clusters = _clusters_by_app(promotion, items)
    for item in items:
        app = item.application
        change_record_sync(
            kind="promotion",
            source_type="promotion",
            source_id=change_record_source_id(promotion, app.name),
            app=app.name,
            environment=promotion.target_env.name,
            title=_record_title(promotion, item, len(items))[:300],
            project=app.project,
            clusters=clusters.get(app.pk, []),
            requester_name=promotion.requested_by_name,
            approvers=approvers,
            pr_number=promotion.pr_number,
            pr_url=promotion.pr_url,
            revision_before=item.target_revision_before,
            revision_after=item.deployed_revision or promotion.merge_commit_sha,
            versions_before={app.name: item.version_before} if item.version_before else {},
            versions_after={app.name: item.version_after} if item.version_after else {},
            gates=gates,
            requested_at=promotion.requested_at,
            approved_at=promotion.approved_at,
            pr_opened_at=promotion.pr_opened_at,
            merged_at=promotion.merged_at,
            deployed_at=item.deployed_at or promotion.deployed_at,
            healthy_at=item.healthy_at or promotion.healthy_at,
            outcome=outcome,
            emergency=promotion.override_sync_window,
            justification=promotion.override_justification,
        )


def _clusters_by_app(promotion: Promotion, items: Sequence[PromotionItem]) -> dict[int, list[str]]:
    from inventory.models import ArgoApplication

    clusters: dict[int, list[str]] = {}
    for app_id, name in (
        ArgoApplication.objects.live()
        .filter(application__in=[i.application_id for i in items], environment=promotion.target_env)
        .exclude(cluster__isnull=True)
        .order_by("cluster__name")
        .values_list("application_id", "cluster__name")
    ):
        clusters.setdefault(app_id, []).append(name)
    return clusters


def _record_title(promotion: Promotion, item: PromotionItem, count: int) -> str:
    title = (
        f"Promote {item.application.name} {item.version_before} → {item.version_after} "
        f"to {promotion.target_env.name}"
    )
    return title + (f" (release train #{promotion.pk}, {count} apps)" if count > 1 else "")


def _enqueue_pr_open(promotion_id: int) -> None:
    from .tasks import promotion_pr_open_task

    transaction.on_commit(lambda: promotion_pr_open_task.delay(promotion_id))


def _enqueue_track(promotion_id: int, follow: int = 0) -> None:
    from .tasks import promotion_track_task

    transaction.on_commit(lambda: promotion_track_task.delay(promotion_id, follow))


def _enqueue_close(promotion_id: int) -> None:
    from .tasks import promotion_close_pr_task

    transaction.on_commit(lambda: promotion_close_pr_task.delay(promotion_id))


def promotion_request_create(
    *,
    actor: Any,
    applications: Sequence[Application],
    source_env: Environment,
    target_env: Environment,
    note: str = "",
    override_justification: str = "",
) -> Promotion:
    """Request a promotion (release_manager of each app's project) after checking every gate."""
    for app in applications:
        ensure_role(actor, Role.RELEASE_MANAGER, project=app.project, environment=target_env.name)
    override = bool(override_justification.strip())
    preview = promotion_preview(
        actor=actor,
        applications=applications,
        source_env=source_env,
        target_env=target_env,
        override=override,
        justification=override_justification,
    )
    failing = preview.failing
    if failing:
        link = next((gate.link for gate in failing if gate.name == "in_flight" and gate.link), "")
        raise PromotionRefused(
            "; ".join(f"{gate.label}: {gate.detail}" for gate in failing), gates=failing, link=link
        )
    return _create(
        actor=actor, preview=preview, note=note, justification=override_justification if override else ""
    )


@transaction.atomic
def _create(*, actor: Any, preview: PromotionPreview, note: str, justification: str) -> Promotion:
    assert preview.repository is not None
    overridden = any(gate.name == "sync_window" and "OVERRIDDEN" in gate.detail for gate in preview.all_gates)
    promotion = Promotion.objects.create(
        source_env=preview.source_env,
        target_env=preview.target_env,
        repository=preview.repository,
        requested_by=actor,
        requested_by_name=actor.get_username(),
        note=note,
        override_sync_window=overridden,
        override_justification=justification.strip() if overridden else "",
        correlation_id=(current_request_id() or new_correlation_id())[:64],
        gates=[gate.as_dict() for gate in preview.all_gates],
    )
    try:
        with transaction.atomic():
            for item in preview.items:
                assert item.plan is not None
                PromotionItem.objects.create(
                    promotion=promotion,
                    application=item.application,
                    target_env=preview.target_env,
                    source_revision=item.source_revision,
                    source_versions=item.source_versions,
                    target_versions_before=item.plan.versions_before,
                    target_versions_after=item.plan.versions_after,
                    version_before=item.plan.version_before[:200],
                    version_after=item.plan.version_after[:200],
                    paths=item.paths,
                    target_revision_before=_revision_label(item.target.revisions)[:64],
                )
    except IntegrityError:
        other = (
            PromotionItem.objects.filter(
                application__in=[i.application for i in preview.items],
                target_env=preview.target_env,
                active=True,
            )
            .exclude(promotion=promotion)
            .values_list("promotion_id", flat=True)
            .first()
        )
        from django.urls import reverse

        raise PromotionRefused(
            f"another promotion (#{other}) of this app into {preview.target_env.name} is in flight",
            link=reverse("promotions:detail", args=[other]) if other else "",
        ) from None
    _audit(
        promotion,
        "promotion.requested",
        actor=actor,
        after={
            "source_env": preview.source_env.name,
            "base_sha": preview.base_sha,
            "override_sync_window": overridden,
            "justification": promotion.override_justification,
            "gates": [{"name": x.name, "status": x.status, "detail": x.detail} for x in preview.all_gates],
        },
        message=note,
    )
    if not preview.target_env.requires_approval:
        now = timezone.now()
        Promotion.objects.filter(pk=promotion.pk).update(state=S.APPROVED, approved_at=now)
        promotion.state, promotion.approved_at = S.APPROVED, now
        _audit(
            promotion,
            "promotion.approved",
            before={"state": S.REQUESTED},
            message=f"{preview.target_env.name} does not require approval",
        )
        _enqueue_pr_open(promotion.pk)
    return promotion


def _projects(promotion: Promotion) -> list[str]:
    return sorted({i.application.project for i in promotion.items.select_related("application")})


def _record_refusal(actor: Any, promotion: Promotion, message: str) -> None:
    audit_event_record(
        action="auth.denied",
        actor=actor,
        target_type="promotion",
        target_id=promotion.pk,
        target_label=f"promotion #{promotion.pk}",
        environment=promotion.target_env.name,
        message=message,
        correlation_id=promotion.correlation_id or None,
    )


def _check_approver(actor: Any, promotion: Promotion, verb: str) -> None:
    for project in _projects(promotion):
        ensure_role(actor, Role.APPROVER, project=project, environment=promotion.target_env.name)
    if promotion.requested_by_id is not None and actor.pk == promotion.requested_by_id:
        message = f"four-eyes: the requester cannot {verb} their own promotion"
        _record_refusal(actor, promotion, message)
        raise PermissionDenied(message)


def promotion_approve(*, promotion: Promotion, actor: Any, comment: str = "") -> Promotion:
    """Approve (approver role, never the requester); N approvals move it to `approved`."""
    _check_approver(actor, promotion, "approve")
    return _decide(promotion=promotion, actor=actor, decision=ApprovalDecision.APPROVE, comment=comment)


def promotion_reject(*, promotion: Promotion, actor: Any, comment: str = "") -> Promotion:
    """Reject (approver role, never the requester): the promotion ends `rejected`."""
    _check_approver(actor, promotion, "reject")
    return _decide(promotion=promotion, actor=actor, decision=ApprovalDecision.REJECT, comment=comment)


@transaction.atomic
def _decide(*, promotion: Promotion, actor: Any, decision: str, comment: str) -> Promotion:
    locked = Promotion.objects.select_for_update(of=("self",)).with_related().get(pk=promotion.pk)
    if locked.state != S.REQUESTED:
        raise PromotionRefused(
            f"promotion #{locked.pk} is {locked.get_state_display().lower()}, not awaiting approval"
        )
    if Approval.objects.filter(promotion=locked, approver=actor).exists():
        raise PromotionRefused("you already decided on this promotion")
    Approval.objects.create(
        promotion=locked,
        approver=actor,
        approver_name=actor.get_username(),
        decision=decision,
        comment=comment,
    )
    now = timezone.now()
    if decision == ApprovalDecision.REJECT:
        Promotion.objects.filter(pk=locked.pk).update(state=S.REJECTED, rejected_at=now)
        PromotionItem.objects.filter(promotion=locked).update(active=False)
        locked.state, locked.rejected_at = S.REJECTED, now
        _audit(locked, "promotion.rejected", actor=actor, before={"state": S.REQUESTED}, message=comment)
        return locked
    target = locked.target_env
    required = max(1, target.approvals_required) if target.requires_approval else 1
    count = locked.approvals.filter(decision=ApprovalDecision.APPROVE).count()
    if count < required:
        _audit(
            locked,
            "promotion.approval_recorded",
            actor=actor,
            after={"approvals": count, "required": required},
            message=comment or f"approval {count} of {required}",
        )
        return locked
    Promotion.objects.filter(pk=locked.pk).update(state=S.APPROVED, approved_at=now)
    locked.state, locked.approved_at = S.APPROVED, now
    _audit(
        locked,
        "promotion.approved",
        actor=actor,
        before={"state": S.REQUESTED},
        after={"approvals": count, "required": required},
        message=comment,
    )
    _enqueue_pr_open(locked.pk)
    return locked


def promotion_cancel(*, promotion: Promotion, actor: Any, reason: str = "") -> Promotion:
    """Cancel before merge (the requester or a release manager of the apps): closes PR, deletes branch."""
    if promotion.requested_by_id != getattr(actor, "pk", None):
        for project in _projects(promotion):
            ensure_role(actor, Role.RELEASE_MANAGER, project=project, environment=promotion.target_env.name)
    elif not any(has_role(actor, Role.RELEASE_MANAGER, project=p) for p in _projects(promotion)):
        ensure_role(actor, Role.RELEASE_MANAGER, project=_projects(promotion)[0])
    return _cancel(promotion=promotion, actor=actor, reason=reason)


@transaction.atomic
def _cancel(*, promotion: Promotion, actor: Any, reason: str) -> Promotion:
    locked = Promotion.objects.select_for_update(of=("self",)).with_related().get(pk=promotion.pk)
    if locked.state not in CANCELLABLE_STATES:
        raise PromotionRefused(
            f"promotion #{locked.pk} is {locked.get_state_display().lower()} and can no longer be cancelled"
        )
    before = locked.state
    now = timezone.now()
    Promotion.objects.filter(pk=locked.pk).update(state=S.CANCELLED, cancelled_at=now, lease_until=None)
    PromotionItem.objects.filter(promotion=locked).update(active=False)
    locked.state, locked.cancelled_at = S.CANCELLED, now
    _audit(locked, "promotion.cancelled", actor=actor, before={"state": before}, message=reason)
    if before in (S.PR_OPENING, S.PR_OPEN) or locked.pr_number or locked.pr_branch:
        _enqueue_close(locked.pk)
    return locked


# =============================================================================================
# Opening the pull request (called by the task)


def _lease() -> timedelta:
    return timedelta(
        seconds=int(getattr(settings, "PROMOTION_PR_LEASE_SECONDS", settings.CELERY_TASK_TIME_LIMIT + 30))
    )


def promotion_claim(*, promotion_id: int) -> bool:
    """Claim the PR opening with a conditional UPDATE; False when another attempt holds it."""
    now = timezone.now()
    return bool(
        Promotion.objects.filter(pk=promotion_id)
        .filter(
            Q(state=S.APPROVED)
            | Q(state=S.PR_OPENING, lease_until__isnull=True)
            | Q(state=S.PR_OPENING, lease_until__lt=now)
        )
        .update(
            state=S.PR_OPENING,
            lease_until=now + _lease(),
            attempts=F("attempts") + 1,
            pr_opening_at=Coalesce(F("pr_opening_at"), Value(now)),
            next_attempt_at=None,
        )
    )


def branch_name(promotion: Promotion, items: Sequence[PromotionItem]) -> str:
    """`promote/<app>/<S>-to-<T>/<id>` (a release train uses `release-train` for the app)."""
    app = items[0].application.name if len(items) == 1 else "release-train"
    name = f"promote/{app}/{promotion.source_env.name}-to-{promotion.target_env.name}/{promotion.pk}"
    try:
        return validate_ref_name(name)
    except InvalidRef as exc:
        raise PullRequestPermanent(f"cannot build a branch name: {exc}") from None


def promotion_pr_open(*, promotion_id: int) -> str:
    """Open (or find) the promotion's PR; idempotent; returns what happened.

    Raises PullRequestRetryable for transient problems (the task retries with backoff); a
    permanent problem marks the promotion failed with a readable reason.
    """
    if not promotion_claim(promotion_id=promotion_id):
        return "not-claimed"
    promotion = Promotion.objects.with_related().get(pk=promotion_id)
    try:
        result = _open_pr(promotion)
    except PullRequestRetryable as exc:
        # The task retries within CELERY_RETRY_BACKOFF_MAX; the sweeper only steps in after that.
        retry_by = timezone.now() + timedelta(seconds=settings.CELERY_RETRY_BACKOFF_MAX + 30)
        Promotion.objects.filter(pk=promotion.pk, state=S.PR_OPENING).update(
            lease_until=None, last_error=str(exc)[:2000], next_attempt_at=retry_by
        )
        if promotion.attempts >= MAX_PR_ATTEMPTS:
            promotion_fail(
                promotion_id=promotion.pk, reason=f"gave up after {promotion.attempts} attempts: {exc}"
            )
            return "failed"
        raise
    except (PullRequestPermanent, StrategyError, PromotionRefused) as exc:
        promotion_fail(promotion_id=promotion.pk, reason=str(exc))
        return "failed"
    return _record_pr(promotion, result)


@transaction.atomic
def _record_pr(promotion: Promotion, result: PullRequestResult) -> str:
    now = timezone.now()
    updated = Promotion.objects.filter(pk=promotion.pk, state=S.PR_OPENING).update(
        state=S.PR_OPEN,
        pr_number=result.number,
        pr_url=result.url[:500],
        pr_head_sha=result.head_sha,
        pr_opened_at=now,
        lease_until=None,
        last_error="",
    )
    promotion.refresh_from_db()
    if not updated:
        # Cancelled while we were opening it: take the PR down again.
        Promotion.objects.filter(pk=promotion.pk).update(pr_number=result.number, pr_url=result.url[:500])
        _enqueue_close(promotion.pk)
        return "cancelled"
    _audit(
        promotion,
        "promotion.pr_opened",
        before={"state": S.PR_OPENING},
        after={"pr_number": result.number, "created": result.created, "warnings": list(result.warnings)},
        message=f"PR #{result.number} {'opened' if result.created else 'found (opened by an earlier attempt)'}",
    )
    _enqueue_track(promotion.pk, follow=0 if result.state == "open" else 12)
    return "opened" if result.created else "found"


def promotion_fail(*, promotion_id: int, reason: str) -> bool:
    """Mark a promotion failed (from any non-final state before merge) with a readable reason."""
    with transaction.atomic():
        promotion = Promotion.objects.select_for_update(of=("self",)).with_related().get(pk=promotion_id)
        if promotion.state not in (S.REQUESTED, S.APPROVED, S.PR_OPENING, S.PR_OPEN):
            return False
        before = promotion.state
        now = timezone.now()
        Promotion.objects.filter(pk=promotion.pk).update(
            state=S.FAILED, failed_at=now, failure_reason=reason[:4000], lease_until=None
        )
        PromotionItem.objects.filter(promotion=promotion).update(active=False)
        promotion.refresh_from_db()
        _audit(promotion, "promotion.failed", before={"state": before}, message=reason[:2000])
    return True


def _open_pr(promotion: Promotion) -> PullRequestResult:
    items = list(promotion.items.select_related("application").order_by("application__name"))
    if not items:
        raise PullRequestPermanent("the promotion has no applications")
    branch = branch_name(promotion, items)
    base = validate_ref_name(promotion.target_env.branch)
    if promotion.pr_branch != branch:
        Promotion.objects.filter(pk=promotion.pk).update(pr_branch=branch, pr_base=base)
        promotion.pr_branch, promotion.pr_base = branch, base
    mirror = gitops.mirror_for(promotion.repository)
    _recheck_gates(promotion, items, mirror)
    approvers = list(
        promotion.approvals.filter(decision=ApprovalDecision.APPROVE).values_list("approver_name", flat=True)
    )
    requester = promotion.requested_by
    trailers = {
        "Promotion-Id": str(promotion.pk),
        "Requested-By": _person(requester, promotion.requested_by_name),
        "Approved-By": ", ".join(approvers) or "not required",
    }
    title = _pr_title(promotion, items)

    def prepare(ws: GitWorkspace) -> str | None:
        def read_target(path: str) -> str | None:
            data = ws.read_file(path)
            return data.decode("utf-8") if data is not None else None

        for item in items:
            source = SourceState(
                item.source_revision, tuple(item.source_versions), gitops.reader(mirror, item.source_revision)
            )
            plan = plan_edits(
                app=item.application,
                source_env=promotion.source_env,
                target_env=promotion.target_env,
                source=source,
                read_target=read_target,
            )
            for edit in plan.edits:
                if edit.changed:
                    ws.write_file(edit.path, edit.after)
        message = (
            f"{title}\n\nPromote from {promotion.source_env.name} to {promotion.target_env.name}.\n"
            + "".join(
                f"- {i.application.name}: {i.version_before} -> {i.version_after} (from {i.source_revision[:12]})\n"
                for i in items
            )
        )
        return ws.commit(
            message,
            author_name=(requester.get_full_name() if requester else "")
            or promotion.requested_by_name
            or "GitOps Portal",
            author_email=(requester.email if requester else "") or "gitops-portal@localhost",
            trailers=trailers,
        )

    reviewers: list[str] = []
    for item in items:
        options = (
            item.application.strategy_options if isinstance(item.application.strategy_options, dict) else {}
        )
        for login in options.get("reviewers") or []:
            if isinstance(login, str) and login not in reviewers:
                reviewers.append(login)
    spec = PullRequestSpec(
        repository=promotion.repository,
        branch=branch,
        base=base,
        title=title,
        body=_pr_body(promotion, items, mirror, approvers),
        labels=PR_LABELS,
        reviewers=reviewers,
    )
    return pull_request_ensure(spec=spec, prepare_branch=prepare)


def _person(user: Any, fallback: str) -> str:
    if user is None:
        return fallback or "unknown"
    name = user.get_username()
    return f"{name} <{user.email}>" if user.email else name


def _recheck_gates(promotion: Promotion, items: Sequence[PromotionItem], mirror: Any) -> None:
    """Gates again, at task time: transient failures retry, others fail the promotion."""
    checks = [g.gate_environment_order(promotion.source_env, promotion.target_env)]
    requester = promotion.requested_by
    for item in items:
        app = item.application
        checks.append(g.gate_in_flight(app, promotion.target_env, exclude_promotion_id=promotion.pk))
        checks.append(
            g.gate_promotion_block(
                app,
                promotion.target_env,
                versions=list(item.target_versions_after) + list(item.source_versions),
                revision=item.source_revision,
            )
        )
        checks.append(
            g.gate_sync_window(
                app,
                promotion.target_env,
                override=promotion.override_sync_window,
                override_allowed=requester is not None
                and g.may_override_sync_window(requester, app, promotion.target_env),
                justification=promotion.override_justification,
            )
        )
        if gitops.has_commit(mirror, item.source_revision):
            read_source = gitops.reader(mirror, item.source_revision)
            checks.append(g.gate_zero_downtime(app, promotion.source_env, promotion.target_env, read_source))
    promotion.gates = [c.as_dict() for c in checks]
    Promotion.objects.filter(pk=promotion.pk).update(gates=promotion.gates)
    failing = g.failing(checks)
    if any(c.transient for c in failing):
        raise PullRequestRetryable("; ".join(f"{c.label}: {c.detail}" for c in failing if c.transient))
    if failing:
        raise PromotionRefused(
            "gate failed at PR time: " + "; ".join(f"{c.label}: {c.detail}" for c in failing)
        )


def _changelog(
    mirror: Any,
    repository: GitRepository,
    app: Application,
    source_env: Environment,
    revision: str,
    plan: EditPlan | None,
    item: PromotionItem | None = None,
) -> list[gitops.ChangelogEntry]:
    """Commits of the app in the source since it last ran what the target runs now."""
    options = app.strategy_options if isinstance(app.strategy_options, dict) else {}
    pattern = str(options.get("base_path") or getattr(repository, "base_path_pattern", "") or "apps/{app}")
    try:
        source_dir = env_dir(source_env, app)
        base_dir = pattern.format(app=app.name)
    except (StrategyError, KeyError, IndexError, ValueError):
        return []
    before = plan.versions_before if plan else (item.target_versions_before if item else [])
    markers = [_marker(v) for v in before]
    first = plan.edits[0].path if plan and plan.edits else (item.paths[0] if item and item.paths else "")
    # The edited file's counterpart in the source directory (same file name).
    source_file = f"{source_dir}/{first.rsplit('/', 1)[-1]}" if first else None
    return gitops.changelog(
        mirror,
        repository,
        source_rev=revision,
        source_paths=[source_dir, base_dir],
        source_file=source_file,
        target_markers=markers,
    )


def _marker(version: str) -> str:
    """The pin to look for in the source file: a tag/digest, or the value of `path=value`."""
    if "=" in version and "/" not in version.split("=", 1)[0]:
        return version.split("=", 1)[1]
    from .strategies import ImageRef

    ref = ImageRef.parse(version)
    return ref.digest or ref.tag or version


def _pr_title(promotion: Promotion, items: Sequence[PromotionItem]) -> str:
    s, t = promotion.source_env.name, promotion.target_env.name
    if len(items) == 1:
        i = items[0]
        return f"Promote {i.application.name} {i.version_before} → {i.version_after} to {t}"
    return f"Release train {s} → {t}: {len(items)} apps"


def _md(text: str) -> str:
    """Neutralise Markdown/HTML in text that comes from commits or users."""
    return (
        text.replace("\\", "\\\\")
        .replace("<", "&lt;")
        .replace(">", "&gt;")
        .replace("|", "\\|")
        .replace("`", "'")
    )


def _pr_body(promotion: Promotion, items: Sequence[PromotionItem], mirror: Any, approvers: list[str]) -> str:
    s, t = promotion.source_env.name, promotion.target_env.name
    link = settings.PORTAL_BASE_URL.rstrip("/") + promotion.get_absolute_url()
    lines = [
        f"Promotion [#{promotion.pk}]({link}) from **{s}** to **{t}**, requested by "
        f"{_md(promotion.requested_by_name)}; approved by {_md(', '.join(approvers)) or 'n/a (not required)'}.",
        "",
        f"The {t} overlay now references exactly what {s} runs (as Argo CD reports it).",
        "",
        "| App | Before | After | Source revision |",
        "|---|---|---|---|",
    ]
    for i in items:
        lines.append(
            f"| {_md(i.application.name)} | `{_md(i.version_before)}` | `{_md(i.version_after)}` | "
            f"`{i.source_revision[:12]}` |"
        )
    lines += ["", "### Changelog"]
    for i in items:
        app = i.application
        entries = _changelog(
            mirror, promotion.repository, app, promotion.source_env, i.source_revision, None, i
        )
        lines.append(f"**{_md(app.name)}**")
        if not entries:
            lines.append("- (no commits found)")
        for e in entries:
            sha = f"[`{e.short_sha}`]({e.url})" if e.url else f"`{e.short_sha}`"
            lines.append(f"- {sha} {_md(e.subject)} ({_md(e.author)})")
    lines += ["", "### Gates"]
    for gate in promotion.gates or []:
        mark = {"pass": "✅", "fail": "❌", "warning": "⚠️"}.get(
            "pass" if gate.get("passed") else ("fail" if gate.get("blocking") else "warning"), ""
        )
        lines.append(f"- {mark} {_md(str(gate.get('label')))}: {_md(str(gate.get('detail')))[:300]}")
    if promotion.override_sync_window:
        lines += ["", f"**Sync window overridden**: {_md(promotion.override_justification)}"]
    lines += ["", f"Correlation id: `{promotion.correlation_id}`"]
    return "\n".join(lines)


# =============================================================================================
# Tracking


def _transition(
    promotion: Promotion,
    *,
    from_states: Sequence[str],
    to: str,
    action: str,
    release: bool = False,
    message: str = "",
    after: dict[str, Any] | None = None,
    **fields: Any,
) -> bool:
    with transaction.atomic():
        updated = Promotion.objects.filter(pk=promotion.pk, state__in=from_states).update(state=to, **fields)
        if not updated:
            return False
        before = promotion.state
        if release:
            PromotionItem.objects.filter(promotion=promotion).update(active=False)
        promotion.refresh_from_db()
        _audit(promotion, action, before={"state": before}, after=after, message=message)
    return True


def promotion_track(*, promotion_id: int) -> str:
    """Advance a promotion from its PR and Argo CD state; safe to call any time, any number of times."""
    promotion = Promotion.objects.with_related().get(pk=promotion_id)
    Promotion.objects.filter(pk=promotion.pk).update(last_tracked_at=timezone.now())
    if promotion.state == S.PR_OPEN and promotion.pr_number:
        try:
            pr = pull_request_refresh(promotion.repository, promotion.pr_number)
        except PullRequestPermanent as exc:
            # Retrying cannot help (PR deleted, token lost access): say so on the page, keep the state.
            _tracking_error(promotion, f"cannot read pull request #{promotion.pr_number}: {exc}")
            return promotion.state
        _tracking_error(promotion, "")
        if pr.merged:
            _transition(
                promotion,
                from_states=[S.PR_OPEN],
                to=S.MERGED,
                action="promotion.merged",
                merged_at=pr.merged_at or timezone.now(),
                merge_commit_sha=pr.merge_commit_sha or "",
                after={"merged_by": pr.merged_by, "merge_commit_sha": pr.merge_commit_sha},
                message=f"PR #{pr.number} merged" + (f" by {pr.merged_by}" if pr.merged_by else ""),
            )
        elif pr.state == "closed":
            _transition(
                promotion,
                from_states=[S.PR_OPEN],
                to=S.ABANDONED,
                action="promotion.abandoned",
                release=True,
                abandoned_at=timezone.now(),
                message=f"PR #{pr.number} was closed without merging",
            )
            return promotion.state
        else:
            return promotion.state
    if promotion.state == S.MERGED and not promotion.merge_commit_sha:
        _tracking_error(promotion, "the forge did not report the merge commit of the pull request")
        _check_deploy_timeout(promotion, detail="the merge commit is unknown")
    elif promotion.state in (S.MERGED, S.DEPLOYED):
        _track_rollout(promotion)
    return promotion.state


def _tracking_error(promotion: Promotion, error: str) -> None:
    """Show (or clear) a permanent tracking problem on the page; the first report is an audit event."""
    error = error[:2000]
    if promotion.tracking_error == error:
        return
    with transaction.atomic():
        updated = (
            Promotion.objects.filter(pk=promotion.pk)
            .exclude(tracking_error=error)
            .update(tracking_error=error)
        )
        promotion.tracking_error = error
        if updated and error:
            audit_event_record(
                action="promotion.tracking_error",
                target_type="promotion",
                target_id=promotion.pk,
                target_label=f"promotion #{promotion.pk} {promotion.source_env.name} → {promotion.target_env.name}",
                app=_apps_label(promotion),
                environment=promotion.target_env.name,
                pr_url=promotion.pr_url,
                after={"state": promotion.state, "error": error},
                message=error,
                correlation_id=promotion.correlation_id or None,
                system_name=SYSTEM,
            )


def deploy_timeout() -> timedelta:
    return timedelta(minutes=int(getattr(settings, "PROMOTION_DEPLOY_TIMEOUT_MINUTES", 30)))


def _check_deploy_timeout(promotion: Promotion, *, detail: str) -> bool:
    """Fail a merged promotion that is still not deployed after PROMOTION_DEPLOY_TIMEOUT_MINUTES."""
    timeout = deploy_timeout()
    if promotion.state != S.MERGED or promotion.merged_at is None:
        return False
    if timezone.now() - promotion.merged_at < timeout:
        return False
    target = promotion.target_env.name
    reason = f"{target} does not run the merged change {format_duration(timeout)} after the merge: {detail}"
    return _transition(
        promotion,
        from_states=[S.MERGED],
        to=S.FAILED,
        action="promotion.deploy_timed_out",
        release=True,
        failed_at=timezone.now(),
        failure_reason=reason[:4000],
        after={"timeout_minutes": int(timeout.total_seconds() // 60)},
        message=reason[:2000],
    )


def _track_rollout(promotion: Promotion) -> None:
    mirror = gitops.mirror_for(promotion.repository)
    merge = promotion.merge_commit_sha
    items = list(promotion.items.select_related("application"))
    states = {item.pk: observed.env_state(item.application, promotion.target_env) for item in items}
    now = timezone.now()

    def contains(revision: str) -> bool:
        if not revision:
            return False
        try:
            return gitops.ensure_commit(mirror, revision) and mirror.is_ancestor(merge, revision)
        except Exception:
            return False

    def runs_merge(view: observed.AppView) -> bool:
        return contains(view.revision) and view.sync_status == "Synced"

    deployed_items = []
    failed_views: list[observed.AppView] = []
    syncing = False
    for item in items:
        state = states[item.pk]
        views = state.apps
        if any(
            v.operation_phase == "Running" or contains(v.revision) or v.sync_status == "OutOfSync"
            for v in views
        ):
            syncing = True
        if views and all(runs_merge(v) for v in views):
            deployed_items.append(item)
            if item.deployed_at is None:
                PromotionItem.objects.filter(pk=item.pk, deployed_at__isnull=True).update(
                    deployed_at=now, deployed_revision=_revision_label(v.revision for v in views)
                )
        # The sync that should apply the merge failed (Argo CD does not retry it by itself).
        failed_views += [
            v
            for v in views
            if v.operation_failed and not runs_merge(v) and contains(v.operation_revision or v.revision)
        ]
    if syncing and promotion.syncing_at is None:
        Promotion.objects.filter(pk=promotion.pk, syncing_at__isnull=True).update(syncing_at=now)
        promotion.syncing_at = now
    if promotion.tracking_error:
        _tracking_error(promotion, "")
    if promotion.state == S.MERGED and failed_views:
        detail = "; ".join(
            f"{v.name}: sync {v.operation_phase.lower()}"
            + (f": {v.operation_message}" if v.operation_message else "")
            for v in failed_views
        )
        reason = f"Argo CD could not sync the merged change into {promotion.target_env.name}: {detail}"
        _transition(
            promotion,
            from_states=[S.MERGED],
            to=S.FAILED,
            action="promotion.sync_failed",
            release=True,
            failed_at=now,
            failure_reason=reason[:4000],
            after={
                "sync": [
                    {
                        "app": v.name,
                        "phase": v.operation_phase,
                        "revision": v.operation_revision or v.revision,
                    }
                    for v in failed_views
                ]
            },
            message=reason[:2000],
        )
        return
    if promotion.state == S.MERGED and items and len(deployed_items) == len(items):
        revisions = sorted({v.revision for s in states.values() for v in s.apps})
        _transition(
            promotion,
            from_states=[S.MERGED],
            to=S.DEPLOYED,
            action="promotion.deployed",
            deployed_at=now,
            syncing_at=Coalesce(F("syncing_at"), Value(now)),
            deployed_revision=_revision_label(revisions),
            after={"revisions": revisions},
            message=f"{promotion.target_env.name} runs a revision containing {merge[:12]}",
        )
    if promotion.state == S.MERGED:
        waiting = [states[i.pk].summary() for i in items if i not in deployed_items]
        _check_deploy_timeout(promotion, detail="; ".join(waiting)[:3000])
        return
    if promotion.state != S.DEPLOYED:
        return
    all_states = list(states.values())
    if all(s.healthy for s in all_states):
        PromotionItem.objects.filter(promotion=promotion, healthy_at__isnull=True).update(healthy_at=now)
        _transition(
            promotion,
            from_states=[S.DEPLOYED],
            to=S.HEALTHY,
            action="promotion.healthy",
            release=True,
            healthy_at=now,
            message=f"{promotion.target_env.name} is Healthy",
        )
    elif any(s.degraded for s in all_states):
        detail = "; ".join(s.summary() for s in all_states if s.degraded)
        _transition(
            promotion,
            from_states=[S.DEPLOYED],
            to=S.DEGRADED,
            action="promotion.degraded",
            release=True,
            degraded_at=now,
            failure_reason=f"{promotion.target_env.name} is degraded after the promotion: {detail}"[:4000],
            message=detail[:2000],
        )
    elif promotion.deployed_at is not None and now - promotion.deployed_at >= deploy_timeout():
        detail = "; ".join(s.summary() for s in all_states if not s.healthy)
        reason = (
            f"{promotion.target_env.name} is not Healthy {format_duration(deploy_timeout())} after the "
            f"deployment: {detail}"
        )
        _transition(
            promotion,
            from_states=[S.DEPLOYED],
            to=S.DEGRADED,
            action="promotion.degraded",
            release=True,
            degraded_at=now,
            failure_reason=reason[:4000],
            after={"timeout_minutes": int(deploy_timeout().total_seconds() // 60)},
            message=reason[:2000],
        )


def promotion_close_pr(*, promotion_id: int) -> str:
    """Close the PR and delete the branch of a cancelled (or failed) promotion; idempotent."""
    promotion = Promotion.objects.with_related().get(pk=promotion_id)
    if promotion.state not in (S.CANCELLED, S.FAILED):
        return "not-cancelled"
    number = promotion.pr_number
    if number is None and promotion.pr_branch:
        # The PR may have been opened by an attempt that was still running when we cancelled.
        from .pullrequests import forge_for

        try:
            found = forge_for(promotion.repository).find_pull_request(
                head=promotion.pr_branch, base=promotion.pr_base or promotion.target_env.branch
            )
        except Exception as exc:
            raise PullRequestRetryable(str(exc)) from None
        number = found.number if found else None
    if number is None and not promotion.pr_branch:
        return "nothing"
    pull_request_close_and_delete_branch(
        repository=promotion.repository,
        number=number,
        branch=promotion.pr_branch,
        comment=f"Promotion #{promotion.pk} was {promotion.state} in the GitOps Portal.",
    )
    return "closed"


# =============================================================================================
# Sweeper


def promotions_sweep(*, now: Any = None) -> dict[str, int]:
    """Re-enqueue work whose message was lost; poll PRs and rollouts as the webhook fallback."""
    from .tasks import promotion_pr_open_task, promotion_track_task

    now = now or timezone.now()
    grace = timedelta(seconds=30)
    reopen = list(
        Promotion.objects.filter(
            Q(state=S.APPROVED, approved_at__lt=now - grace)
            | Q(state=S.PR_OPENING, lease_until__isnull=True, pr_opening_at__lt=now - grace)
            | Q(state=S.PR_OPENING, lease_until__lt=now)
        )
        .filter(Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lt=now))
        .values_list("pk", flat=True)[:200]
    )
    for pk in reopen:
        promotion_pr_open_task.delay(pk)
    # Webhooks drive PR state; polling open PRs is the slow fallback (forge rate limits), while
    # merged promotions are polled at every sweep: Argo CD sends no webhook when the sync finishes.
    # One indexed query; a message not run before the next sweeps is dropped (expires), so a
    # backed-up queue does not pile up duplicates.
    track = list(
        Promotion.objects.filter(
            Q(state=S.PR_OPEN, last_tracked_at__lt=now - timedelta(seconds=PR_POLL_SECONDS))
            | Q(state__in=[S.PR_OPEN, S.MERGED, S.DEPLOYED], last_tracked_at__isnull=True)
            | Q(
                state__in=[S.MERGED, S.DEPLOYED],
                last_tracked_at__lt=now - timedelta(seconds=ROLLOUT_POLL_SECONDS),
            )
        ).values_list("pk", flat=True)[:500]
    )
    expires = sweep_message_expiry()
    for pk in track:
        promotion_track_task.apply_async((pk, 0), expires=expires)
    return {
        "reopened": len(reopen),
        "tracked": len(track),
        "in_flight": Promotion.objects.filter(state__in=IN_FLIGHT_STATES).count(),
    }
