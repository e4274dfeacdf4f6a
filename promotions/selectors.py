"""Read side of promotions: template- and API-ready rows with a constant number of queries."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.contrib.auth.models import User
from django.db.models import Prefetch, Q, QuerySet
from django.http import Http404

from accounts.permissions import has_role, project_filter, project_visible, role_scopes
from accounts.roles import Role
from changes.checklist import overridable_failing
from changes.checks import ChecksPanel, change_checks_live, checks_panel
from core.querytext import query_page, query_text
from inventory.models import Application, ArgoApplication, Environment

from .kind import PROMOTION
from .models import (
    FINAL_STATES,
    Approval,
    ApprovalDecision,
    Promotion,
    PromotionBlock,
    PromotionItem,
    PromotionQuerySet,
    PromotionState,
    glob_regex,
)

S = PromotionState
PAGE_SIZE = 50


def _glob_q(field: str, patterns: list[str]) -> Q:
    """Q matching `field` against shell globs (the role grants' project patterns)."""
    q = Q(pk__in=[])
    for pattern in patterns:
        if not any(c in pattern for c in "*?["):
            q |= Q(**{field: pattern})
        else:
            q |= Q(**{f"{field}__regex": glob_regex(pattern)})
    return q


def visible_promotions(user: User) -> PromotionQuerySet:
    """Promotions whose apps are all in projects the user may see.

    A release train spanning two teams' apps is shown only to someone who may see both: its page
    shows every app's versions, diffs and approvals.
    """
    qs = Promotion.objects.all()
    patterns = project_filter(user)
    if patterns is not None:
        ids = PromotionItem.objects.filter(_glob_q("application__project", patterns)).values("promotion_id")
        hidden = PromotionItem.objects.exclude(_glob_q("application__project", patterns)).values(
            "promotion_id"
        )
        qs = qs.filter(pk__in=ids).exclude(pk__in=hidden)
    return qs


def awaiting_approval(*, user: User) -> QuerySet[Promotion]:
    """Promotions waiting for this user's approval (the approval inbox; four-eyes applied)."""
    if not has_role(user, Role.APPROVER):
        return Promotion.objects.none()
    return Promotion.objects.awaiting_approval_by(user, role_scopes(user, Role.APPROVER))


def approval_inbox_count(*, user: User) -> int:
    """Count the promotions waiting for this user's approval, in one query (the header badge)."""
    if not getattr(user, "is_authenticated", False):
        return 0
    return awaiting_approval(user=user).count()


def _with_items(qs: PromotionQuerySet) -> PromotionQuerySet:
    return qs.with_related().prefetch_related(
        Prefetch(
            "items",
            queryset=PromotionItem.objects.select_related("application").order_by("application__name"),
        ),
        Prefetch("approvals", queryset=Approval.objects.order_by("at", "id")),
    )


@dataclass(frozen=True)
class ListFilters:
    state: str = ""
    target: str = ""
    app: str = ""
    override: bool = False
    mine: bool = False
    needs_approval: bool = False
    page: int = 1

    @classmethod
    def from_query(cls, query: Any) -> ListFilters:
        page = query_page(query)
        state = query.get("state") or ""
        return cls(
            state=state if state in S.values or state in ("in_flight", "final") else "",
            target=query_text(query, "to", limit=64),
            app=query_text(query, "app"),
            override=query.get("override") in ("1", "true", "on"),
            mine=query.get("mine") in ("1", "true", "on"),
            needs_approval=query.get("needs_approval") in ("1", "true", "on"),
            page=page,
        )


@dataclass
class PromotionPage:
    rows: list[Promotion]
    page: int
    has_next: bool
    has_previous: bool


def promotion_list(*, user: User, filters: ListFilters) -> PromotionPage:
    """A page of promotions, newest first, with items and approvals prefetched."""
    qs = visible_promotions(user)
    if filters.state == "in_flight":
        qs = qs.in_flight()
    elif filters.state == "final":
        qs = qs.filter(state__in=FINAL_STATES)
    elif filters.state:
        qs = qs.filter(state=filters.state)
    if filters.target:
        qs = qs.filter(target_env__name=filters.target)
    if filters.app:
        qs = qs.filter(items__application__name=filters.app)
    if filters.override:
        # Sync windows overridden at the request, or after the merge by an approver (`sync: portal`).
        qs = qs.filter(Q(override_sync_window=True) | Q(sync_override_at__isnull=False))
    if filters.mine:
        qs = qs.filter(requested_by=user)
    if filters.needs_approval:
        qs = qs.filter(pk__in=awaiting_approval(user=user).values("pk"))
    start = (filters.page - 1) * PAGE_SIZE
    rows = list(_with_items(qs.distinct().order_by("-requested_at", "-id"))[start : start + PAGE_SIZE + 1])
    return PromotionPage(
        rows=rows[:PAGE_SIZE],
        page=filters.page,
        has_next=len(rows) > PAGE_SIZE,
        has_previous=filters.page > 1,
    )


def promotion_get(*, user: User, pk: int) -> Promotion:
    """One promotion the user may see: every app's project (404 otherwise: no existence leak)."""
    promotion = _with_items(Promotion.objects.filter(pk=pk)).first()
    if promotion is None:
        raise Http404("no such promotion")
    projects = {i.application.project for i in promotion.items.all()}
    if projects and not all(project_visible(user, p) for p in projects):
        raise Http404("no such promotion")
    return promotion


@dataclass(frozen=True)
class Step:
    key: str
    label: str
    at: datetime | None
    state: str  # done | current | pending | bad | skipped

    @property
    def done(self) -> bool:
        return self.state == "done"


TIMELINE = (
    ("requested", "Requested", "requested_at"),
    ("branch_pushed", "Branch pushed", "branch_pushed_at"),
    ("approved", "Approved", "approved_at"),
    ("pr_opened", "PR opened", "pr_opened_at"),
    ("merged", "Merged", "merged_at"),
    ("syncing", "Syncing", "syncing_at"),
    ("deployed", "Deployed", "deployed_at"),
    ("healthy", "Healthy", "healthy_at"),
)
_ENDINGS: dict[str, tuple[str, str]] = {
    S.REJECTED: ("Rejected", "rejected_at"),
    S.FAILED: ("Failed", "failed_at"),
    S.CANCELLED: ("Cancelled", "cancelled_at"),
    S.ABANDONED: ("Abandoned (PR closed)", "abandoned_at"),
    S.DEGRADED: ("Degraded", "degraded_at"),
}


def promotion_timeline(promotion: Promotion) -> list[Step]:
    """Steps requested → approved → PR opened → merged → syncing → deployed → healthy, with times."""
    steps: list[Step] = []
    current_marked = False
    ended = promotion.state in _ENDINGS
    for key, label, attr in TIMELINE:
        at = getattr(promotion, attr)
        if at is not None:
            steps.append(Step(key, label, at, "done"))
        elif not ended and not current_marked and promotion.state != S.HEALTHY:
            steps.append(Step(key, label, None, "current"))
            current_marked = True
        else:
            steps.append(Step(key, label, None, "skipped" if ended else "pending"))
    if ended:
        label, attr = _ENDINGS[promotion.state]
        # Put the ending right after the last step that happened.
        last_done = max((i for i, s in enumerate(steps) if s.done), default=-1)
        steps = [*steps[: last_done + 1], Step(promotion.state, label, getattr(promotion, attr), "bad")]
    return steps


def promotion_checks(promotion: Promotion, *, live: bool) -> ChecksPanel:
    """The checks panel of a promotion: as tracking stored it, or read from the forge now (`live`)."""
    approved = promotion.approved_at is not None
    if not live:
        return checks_panel(promotion, kind=PROMOTION, approved=approved)
    return change_checks_live(
        kind=PROMOTION,
        change=promotion,
        repository=promotion.repository,
        required=promotion.target_env.required_checks,
        approved=approved,
    )


@dataclass(frozen=True)
class Abilities:
    approve: bool
    reject: bool
    cancel: bool
    decided: bool
    is_requester: bool
    required_approvals: int
    approvals: int
    waiting_for_branch: bool  # awaiting approval, but the branch to review is not pushed yet
    # Blocking checklist gates still waiting for an approver's override (shown to everyone).
    checklist_pending: tuple[str, ...] = ()
    override_checklist: bool = False


def promotion_abilities(promotion: Promotion, user: User) -> Abilities:
    """What the user may do with this promotion (the services check again)."""
    projects = sorted({i.application.project for i in promotion.items.all()})
    env = promotion.target_env.name
    is_requester = promotion.requested_by_id == getattr(user, "pk", None)
    head = promotion.pushed_head_sha
    valid = [a for a in promotion.approvals.all() if a.is_valid]
    approvals = [a for a in valid if a.decision == ApprovalDecision.APPROVE and a.head_sha == head]
    decided = any(a.approver_id == user.pk for a in valid)
    approver = all(has_role(user, Role.APPROVER, project=p, environment=env) for p in projects)
    rm = all(has_role(user, Role.RELEASE_MANAGER, project=p, environment=env) for p in projects)
    target = promotion.target_env
    may_decide = promotion.state == S.REQUESTED and approver and not is_requester and not decided
    pending = overridable_failing(promotion.gates or [])
    return Abilities(
        approve=may_decide and promotion.branch_pushed,
        reject=may_decide,
        cancel=promotion.is_cancellable and (is_requester or rm),
        decided=decided,
        is_requester=is_requester,
        required_approvals=max(1, target.approvals_required) if target.requires_approval else 0,
        approvals=len(approvals),
        waiting_for_branch=promotion.state == S.REQUESTED and not promotion.branch_pushed,
        checklist_pending=tuple(str(g.get("label")) for g in pending),
        override_checklist=bool(pending) and promotion.state == S.REQUESTED and approver and not is_requester,
    )


def promotion_can_request(*, user: User) -> bool:
    """Tell whether "New promotion" applies: the user is a release manager somewhere."""
    return has_role(user, Role.RELEASE_MANAGER)


def promotable_applications(*, user: User) -> list[Application]:
    """Apps the user may promote (release_manager somewhere in their project)."""
    patterns = project_filter(user, Role.RELEASE_MANAGER)
    qs = Application.objects.select_related("repository").order_by("name")
    if patterns is not None:
        qs = qs.filter(_glob_q("project", patterns))
    return list(qs[:500])


def next_environment(source: Environment) -> Environment | None:
    return Environment.objects.filter(order__gt=source.order).order_by("order", "name").first()


def active_blocks(*, application: Application | None = None) -> QuerySet[PromotionBlock]:
    qs = PromotionBlock.objects.active().select_related("application", "environment", "created_by")
    if application is not None:
        qs = qs.filter(application=application)
    return qs


def promotion_argo_apps(promotion: Promotion) -> list[ArgoApplication]:
    """Return the Argo CD applications of a promotion's apps in its target environment."""
    return list(
        ArgoApplication.objects.live()
        .filter(application__in=promotion.items.values("application"), environment=promotion.target_env)
        .select_related("instance", "cluster")
        .order_by("name")
    )
