"""Promotion gates: each returns {name, label, passed, blocking, detail, link, transient}.

Shown in the preview, checked when the request is made and again by the task before the PR opens.

Sync-window override policy: a request may carry an override with a written justification
(at least OVERRIDE_MIN_JUSTIFICATION characters) when the requester holds the `approver` role for
the target environment and project in addition to `release_manager` (or is an admin): the person
taking the risk must be someone trusted to approve. The override is still subject to the normal
four-eyes approval, is recorded in the audit trail (`promotion.requested` with
`override_sync_window`), and such emergency changes are listed on /promotions/?override=1 for
after-the-fact review.

Zero-downtime checklist: one gate per failing check, in the target environment's mode (warn or
block; see changes.checklist); an approver other than the requester may override blocking ones with
a reason (promotions.overrides). The secret scan blocks and cannot be overridden.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from datetime import timedelta
from typing import Any

from django.contrib.auth.models import User
from django.urls import reverse
from django.utils import timezone

from accounts.permissions import has_role, is_admin
from accounts.roles import Role
from changes import checklist
from changes.overlayobjects import overlay_objects
from changes.rendered import RenderedChange, rendered_verdict
from inventory.models import Application, Environment

from . import observed
from .models import PromotionBlock, PromotionItem
from .strategies import EditPlan, ImageRef, env_dir

OVERRIDE_MIN_JUSTIFICATION = 10


@dataclass(frozen=True)
class Gate:
    name: str
    label: str
    passed: bool
    blocking: bool
    detail: str
    link: str = ""
    transient: bool = False  # failed because a remote system could not be asked: retry later
    overridable: bool = False  # an approver (not the requester) may override it with a reason
    overridden: str = ""  # the reason, once overridden
    findings: tuple[dict[str, Any], ...] = ()

    @property
    def fails(self) -> bool:
        """A failure that stops the promotion."""
        return self.blocking and not self.passed and not self.overridden

    @property
    def refuses(self) -> bool:
        """A failure that refuses the request itself (an overridable one waits for an approver)."""
        return self.fails and not self.overridable

    @property
    def awaits_render(self) -> bool:
        """A Helm chart's checklist before the request pushes the branch: not passed, not yet failed.

        It still stops an approval until Argo CD's rendering of the pushed branch evaluates it
        (promotions.pullrequests), but nobody has anything to override yet.
        """
        return not self.passed and not self.overridden and checklist.AWAITS_RENDER in self.detail

    @property
    def badge(self) -> str:
        if self.passed:
            return "ok"
        if self.overridden or self.awaits_render:
            return "warn"
        return "bad" if self.blocking else "warn"

    @property
    def status(self) -> str:
        if self.passed:
            return "pass"
        if self.overridden:
            return "overridden"
        if self.awaits_render:
            return "pending"
        return "fail" if self.blocking else "warning"

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def failing(gates: Iterable[Gate]) -> list[Gate]:
    return [g for g in gates if g.fails]


def refusing(gates: Iterable[Gate]) -> list[Gate]:
    return [g for g in gates if g.refuses]


def may_override_sync_window(user: User, application: Application, target_env: Environment) -> bool:
    """Tell whether `user` may override a closed sync window (see module docstring)."""
    if is_admin(user):
        return True
    return has_role(
        user, Role.RELEASE_MANAGER, project=application.project, environment=target_env.name
    ) and has_role(user, Role.APPROVER, project=application.project, environment=target_env.name)


# ---------------------------------------------------------------------------------------------
# Promotion-level gates


def gate_environment_order(source_env: Environment, target_env: Environment) -> Gate:
    """Refuse backwards promotions and skipped environments unless the target allows the skip."""
    label = "Environment order"
    if source_env.pk == target_env.pk:
        return Gate("environment_order", label, False, True, "source and target are the same environment")
    if target_env.order <= source_env.order:
        return Gate(
            "environment_order",
            label,
            False,
            True,
            f"{target_env.name} does not come after {source_env.name}",
        )
    between = list(
        Environment.objects.filter(order__gt=source_env.order, order__lt=target_env.order).values_list(
            "name", flat=True
        )
    )
    if not between:
        return Gate(
            "environment_order",
            label,
            True,
            True,
            f"{target_env.name} is the next environment after {source_env.name}",
        )
    if source_env.name in (target_env.allow_skip_from or []):
        return Gate(
            "environment_order",
            label,
            True,
            True,
            f"skipping {', '.join(between)} is allowed from {source_env.name}",
        )
    return Gate(
        "environment_order",
        label,
        False,
        True,
        f"promoting {source_env.name} → {target_env.name} skips {', '.join(between)}; "
        f"promote to {between[0]} first (or configure {target_env.name}.allow_skip_from)",
    )


# ---------------------------------------------------------------------------------------------
# Per-app gates


def gate_source_healthy(source: observed.EnvState, *, expected_revision: str = "") -> Gate:
    """S is Synced and Healthy on one revision on every cluster, and has been for the soak time."""
    label = f"{source.environment.name} synced and healthy"
    name = "source_healthy"
    if not source.known:
        return Gate(name, label, False, True, source.summary())
    if source.stale:
        return Gate(
            name, label, False, True, "Argo CD could not be read: " + source.summary(), transient=True
        )
    if not source.revision:
        return Gate(name, label, False, True, "clusters run different revisions: " + source.summary())
    if not source.synced or not source.healthy:
        return Gate(name, label, False, True, source.summary())
    if expected_revision and source.revision != expected_revision:
        detail = f"now at {source.revision[:8]}, the request was for {expected_revision[:8]}"
        return Gate(name, label, False, True, detail + "; request a new promotion")
    soak = source.environment.soak_minutes
    if soak:
        since = source.deployed_at
        if since is None:
            return Gate(name, label, False, True, f"deployment time unknown; {soak} min soak required")
        left = since + timedelta(minutes=soak) - timezone.now()
        if left.total_seconds() > 0:
            minutes = int(left.total_seconds() // 60) + 1
            return Gate(
                name, label, False, True, f"soaking: {minutes} more minute(s) of the {soak} min soak time"
            )
    detail = f"Synced and Healthy at {source.revision[:8]} on {len(source.apps)} cluster(s)"
    return Gate(name, label, True, True, detail + (f", soaked {soak} min" if soak else ""))


def gate_sync_window(
    application: Application,
    target_env: Environment,
    *,
    override: bool,
    override_allowed: bool,
    justification: str,
) -> Gate:
    """T's Argo CD sync windows allow a sync now, or a justified override by an allowed user."""
    label = f"{target_env.name} sync window"
    checks = observed.sync_windows(application, target_env)
    if not checks:
        return Gate(
            "sync_window",
            label,
            True,
            True,
            f"no Argo CD application of {application.name} in {target_env.name} yet",
        )
    closed = [c for c in checks if not c.can_sync]
    if not closed:
        return Gate("sync_window", label, True, True, "; ".join(f"{c.app}: {c.detail}" for c in checks))
    detail = "; ".join(f"{c.app}: {c.detail}" for c in closed)
    transient = any(c.error for c in closed)
    if override and not transient:
        if not override_allowed:
            return Gate("sync_window", label, False, True, detail + "; you may not override sync windows")
        if len(justification.strip()) < OVERRIDE_MIN_JUSTIFICATION:
            return Gate(
                "sync_window", label, False, True, detail + "; an override needs a written justification"
            )
        return Gate("sync_window", label, True, True, detail + "; OVERRIDDEN: " + justification.strip()[:300])
    if target_env.portal_syncs and not transient:
        # The portal syncs after the merge (sync: portal) and waits for the window to open.
        return Gate(
            "sync_window", label, False, False, detail + "; the portal syncs after the merge once it opens"
        )
    return Gate("sync_window", label, False, True, detail, transient=transient)


def gate_in_flight(
    application: Application, target_env: Environment, *, exclude_promotion_id: int | None
) -> Gate:
    """No other promotion of this app into T is in flight."""
    label = "No other promotion in flight"
    items = PromotionItem.objects.filter(application=application, target_env=target_env, active=True)
    if exclude_promotion_id is not None:
        items = items.exclude(promotion_id=exclude_promotion_id)
    other = items.values_list("promotion_id", flat=True).first()
    if other is None:
        return Gate("in_flight", label, True, True, f"none for {application.name} into {target_env.name}")
    return Gate(
        "in_flight",
        label,
        False,
        True,
        f"promotion #{other} of {application.name} into {target_env.name} is still in flight",
        link=reverse("promotions:detail", args=[other]),
    )


def gate_changes(plan: EditPlan | None, error: str) -> Gate:
    label = "Something to promote"
    if plan is None:
        return Gate("changes", label, False, True, error or "the edit could not be computed")
    if not plan.changed:
        return Gate(
            "changes", label, False, True, f"the target already runs {plan.version_after or 'this content'}"
        )
    return Gate("changes", label, True, True, f"{plan.version_before or '?'} → {plan.version_after or '?'}")


def gate_rendered(changes: Iterable[RenderedChange]) -> Gate:
    """Argo CD renders every app x destination at the promotion's head; a failure blocks with its message."""
    verdict = rendered_verdict(list(changes))
    return Gate(
        "rendered",
        verdict.label,
        verdict.passed,
        True,
        verdict.detail[:2000],
        transient=verdict.transient,
    )


RENDERED_PENDING_DETAIL = "rendered after the branch is pushed; a render failure then blocks the promotion"


def gate_rendered_pending() -> Gate:
    """The rendered gate before the branch exists: evaluated once it is pushed (and again at PR time)."""
    return Gate("rendered", "Rendered by Argo CD", True, True, RENDERED_PENDING_DETAIL)


def gate_promotion_block(
    application: Application, target_env: Environment, *, versions: Iterable[str], revision: str
) -> Gate:
    """No active PromotionBlock covers a version (or revision) this promotion would ship."""
    label = "Not blocked by a rollback"
    wanted: set[str] = set()
    for ref in versions:
        image = ImageRef.parse(ref)
        wanted.update(v for v in (ref, str(image), image.tag, image.digest, image.version) if v)
    blocks = list(PromotionBlock.objects.active().filter(application=application, environment=target_env))
    for block in blocks:
        # The version decides; a Git revision is shared by every environment of a single-branch
        # repo, so it only decides when the versions this promotion ships are unknown.
        hit = block.blocked_version in wanted or (
            not wanted and bool(block.blocked_revision) and block.blocked_revision == revision
        )
        if hit:
            detail = (
                f"{block.blocked_version} is blocked in {target_env.name} since "
                f"{timezone.localtime(block.created_at):%Y-%m-%d %H:%M}: {block.reason or 'rolled back'}; "
                "a release manager must clear the block first"
            )
            return Gate("promotion_block", label, False, True, detail, link=_block_link(block))
    return Gate(
        "promotion_block", label, True, True, f"{len(blocks)} active block(s), none for these versions"
    )


def _block_link(block: PromotionBlock) -> str:
    if block.source_type == "rollback" and block.source_id:
        try:
            return reverse("rollbacks:detail", args=[block.source_id])
        except Exception:  # rollbacks may not expose a detail page yet
            return ""
    return ""


# ---------------------------------------------------------------------------------------------
# Zero-downtime checklist and secret scan (changes.checklist): on what the change will run.


def edited_reader(read: Callable[[str], str | None], plan: EditPlan | None) -> Callable[[str], str | None]:
    """Return path → text as the change leaves the target branch (the plan's edits over `read`)."""
    after = {e.path: e.after for e in plan.edits} if plan else {}

    def read_after(path: str) -> str | None:
        return after[path] if path in after else read(path)

    return read_after


def gates_checklist(
    application: Application,
    target_env: Environment,
    *,
    rendered: Sequence[RenderedChange] = (),
    read_after: Callable[[str], str | None] | None = None,
) -> list[Gate]:
    """The app's zero-downtime checklist gates, on Argo CD's rendering or else the overlay files."""
    modes = checklist.environment_modes(target_env, application)
    sources = checklist.sources_from_rendered(rendered)
    unavailable = ""
    if not sources and read_after is not None and application.strategy == "helm-values":
        # The portal never renders a chart itself: Argo CD renders the pushed branch's commit, and the
        # gates are evaluated again on that rendering (changes.gatehistory).
        unavailable = checklist.CHART_NOT_READ.format(then=checklist.AWAITS_RENDER)
    elif not sources and read_after is not None:
        try:
            overlay = env_dir(target_env, application)
            docs, problems = overlay_objects(read_after, overlay)
        except Exception as exc:  # a broken repo shows as a gate, not a crashed page
            docs, problems = [], [f"manifests unreadable: {exc}"]
        if docs:
            sources = [checklist.ObjectSource(target_env.name, tuple(docs), "", f"read from {overlay}")]
        unavailable = "; ".join(problems[:3])
    elif not sources:
        unavailable = "Argo CD's rendering of the change is not available"
    return [
        Gate(**fields)
        for fields in checklist.checklist_gates(
            app=application.name, modes=modes, sources=sources, unavailable=unavailable
        )
    ]


def gate_secret_scan(
    application: Application,
    *,
    plan: EditPlan | None,
    rendered: Sequence[RenderedChange] = (),
    baseline_text: str | None = None,
) -> Gate:
    """Secret scan of the app's file edits (added lines) and rendered objects; nobody overrides it."""
    edits = [(e.path, e.before, e.after) for e in plan.edits if e.changed] if plan else []
    return Gate(
        **checklist.secret_scan_gate(
            app=application.name, file_edits=edits, rendered=rendered, baseline_text=baseline_text
        )
    )
