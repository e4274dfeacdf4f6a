"""A rollback's rendered diff: Argo CD renders the app in its environment at the revision it runs now
and at the revert branch's head (changes.rendered compares them).

Once merged, "now" is the revision the rollback reverted from (the live one includes the revert).
"""

from __future__ import annotations

from changes.rendered import RenderedChange, change_head_revision, rendered_changes
from inventory.models import ArgoApplication

from .models import RollbackRequest
from .selectors import env_argo_apps


def rollback_rendered(rollback: RollbackRequest, *, branch_ok: bool = True) -> list[RenderedChange]:
    """Render each Argo CD app of the rollback's environment now and at the revert's head (a page read)."""

    def before(row: ArgoApplication) -> str:
        if rollback.merged_at is not None:
            return rollback.current_revision or row.running_revision
        return row.running_revision

    repo = rollback.application.repository
    return rendered_changes(
        env_argo_apps(rollback.application, rollback.environment),
        before_revision=before,
        after_revision=change_head_revision(rollback, rollback.branch if branch_ok else ""),
        repo_urls=[repo.url] if repo else [],
    )
