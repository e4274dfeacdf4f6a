"""A promotion's rendered diff: Argo CD renders each app x destination of the target environment at
the revision it runs now and at the promotion branch's head (changes.rendered compares them).

Before the merge "now" is what the target's Argo CD Application runs; after it, the revision the
target ran when the promotion was requested (the live revision already includes the change).
"""

from __future__ import annotations

from changes.rendered import RenderedChange, change_head_revision, rendered_changes
from inventory.models import ArgoApplication

from .gates import Gate, gate_rendered
from .models import Promotion
from .selectors import promotion_argo_apps


def promotion_head_revision(promotion: Promotion, *, branch_ok: bool = True) -> str:
    """The revision the promotion produces: the pushed head, the PR head, else (if `branch_ok`) the branch."""
    return change_head_revision(promotion, promotion.pr_branch if branch_ok else "")


def promotion_rendered(promotion: Promotion, *, branch_ok: bool = True) -> list[RenderedChange]:
    """Render each Argo CD app of the promotion's target now and at the promotion's head (a page read)."""
    before_of = {i.application_id: i.target_revision_before for i in promotion.items.all()}

    def before(row: ArgoApplication) -> str:
        if promotion.merged_at is not None:
            return before_of.get(row.application_id or 0) or row.running_revision
        return row.running_revision

    repo = promotion.repository
    return rendered_changes(
        promotion_argo_apps(promotion),
        before_revision=before,
        after_revision=promotion_head_revision(promotion, branch_ok=branch_ok),
        repo_urls=[repo.url] if repo else [],
    )


def promotion_rendered_gate(promotion: Promotion) -> Gate:
    """The `rendered` gate of a promotion whose branch was pushed (blocking on any render failure)."""
    return gate_rendered(promotion_rendered(promotion, branch_ok=False))
