"""Promotion records: how the ledger names a promotion, and its audit change record per app."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from audit.services import change_record_sync
from changes.checks import checks_gate
from inventory.models import ArgoApplication

from .models import ApprovalDecision, Promotion, PromotionItem, PromotionState

S = PromotionState
SYSTEM = "promotions"


def apps_label(promotion: Promotion, names: Iterable[str] | None = None) -> str:
    """The apps of a promotion, comma-separated (the ledger's `app` column)."""
    names = list(names) if names is not None else [i.application.name for i in promotion.items.all()]
    return ",".join(names)[:200]


def target_label(promotion: Promotion) -> str:
    """How the ledger names a promotion."""
    return f"promotion #{promotion.pk} {promotion.source_env.name} → {promotion.target_env.name}"


OUTCOMES: dict[str, str] = {
    S.HEALTHY: "succeeded",
    S.FAILED: "failed",
    S.DEGRADED: "failed",
    S.REJECTED: "abandoned",
    S.CANCELLED: "abandoned",
    S.ABANDONED: "abandoned",
}


def revision_label(revisions: Iterable[str]) -> str:
    """One revision as is; several (clusters disagree) as their short SHAs, comma-separated."""
    unique = sorted({r for r in revisions if r})
    if len(unique) == 1:
        return unique[0]
    return ",".join(r[:12] for r in unique)[:64]


def change_record_source_id(promotion: Promotion, app_name: str) -> str:
    """The change record of one app of a promotion: `<promotion id>:<app>` (evidence: the promotion)."""
    return f"{promotion.pk}:{app_name}"


def promotion_change_records_sync(promotion: Promotion, items: Sequence[PromotionItem]) -> None:
    """Mirror the promotion into one audit change record per app (production-like targets only).

    One record per app keeps project-scoped auditors' view exact for release trains; the
    evidence page of each lists the promotion's ledger events (source id `<promotion id>:<app>`).
    """
    if not promotion.target_env.production_like:
        return
    approvals = [
        a for a in promotion.approvals.all() if a.decision == ApprovalDecision.APPROVE and a.is_valid
    ]
    approvers = [a.approver_name for a in approvals]
    approved_head = next((a.head_sha for a in reversed(approvals) if a.head_sha), "")
    # Each evaluation as it was stored (at request first), labelled and timed: never recomputed.
    gates = [
        {
            "name": gate.get("name", "?"),
            "passed": bool(gate.get("passed")),
            "detail": _gate_detail(promotion, gate),
            "evaluation": snapshot["label"],
            "evaluated_at": snapshot["at"].isoformat() if snapshot["at"] else "",
        }
        for snapshot in promotion.gate_history
        for gate in snapshot["gates"]
        if isinstance(gate, dict)
    ] + checks_gate(promotion)
    outcome = "rolled_back" if promotion.rolled_back_by else OUTCOMES.get(promotion.state, "pending")
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
            approved_head_sha=approved_head,
            pr_number=promotion.pr_number,
            pr_url=promotion.pr_url,
            merged_by=promotion.merged_by,
            # Argo CD's result of the sync that applied the merge (none before it ran).
            sync_result=item.sync_result,
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
            # A sync window overridden at the request or, after the merge, by an approver.
            emergency=promotion.override_sync_window or promotion.sync_override_at is not None,
            justification="\n".join(
                t for t in (promotion.override_justification, promotion.sync_override_note) if t
            ),
            correlation_id=promotion.correlation_id,
        )


def _clusters_by_app(promotion: Promotion, items: Sequence[PromotionItem]) -> dict[int, list[str]]:
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


def _gate_detail(promotion: Promotion, gate: dict) -> str:
    """A gate's detail for the change record; an approver's checklist override is named in it."""
    detail = str(gate.get("detail", ""))
    if gate.get("overridden"):
        who = promotion.checklist_overridden_by_name or "an approver"
        detail += f" [OVERRIDDEN by {who}: {gate['overridden']}]"
    return detail
