"""A rollback's rendered diff: Argo CD renders the app in its environment at the revision it runs now
and at the revert branch's head (changes.rendered compares them).

Once merged, "now" is the revision the rollback reverted from (the live one includes the revert).
"""

from __future__ import annotations

from changes.checklist import secret_scan_gate
from changes.rendered import RenderedChange, change_head_revision, rendered_changes, rendered_verdict
from inventory.models import ArgoApplication

from .models import RollbackRequest
from .selectors import env_argo_apps, rollback_baseline


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


# What Argo CD's rendering of a rollback's pushed head says (`rendered_head_verdict`).
SECRET, UNRENDERED, WAIT = "secret", "unrendered", "wait"
_JUDGED_HEADS: dict[tuple[int, str], tuple[str, str]] = {}


def rendered_head_verdict(rollback: RollbackRequest) -> tuple[str, str]:
    """Judge what Argo CD renders at the pushed head, with the reason: ("", "") when it renders
    clean, (SECRET, findings) when the objects the revert adds or alters hold a secret (the base
    branch's `.secrets.baseline` allowlists), (UNRENDERED, Argo CD's message) when Argo CD cannot
    render it, (WAIT, why) while Argo CD cannot be asked (a timeout, unreachable: asked again on the
    next tracking tick).

    A head's final verdict is kept per process (tracking ticks repeat while the PR is open).
    """
    head = rollback.pushed_head_sha or rollback.pr_head_sha
    if not head:
        return "", ""
    if (rollback.pk, head) in _JUDGED_HEADS:
        return _JUDGED_HEADS[(rollback.pk, head)]
    rendered = rollback_rendered(rollback, branch_ok=False)
    verdict = rendered_verdict(rendered)
    if not verdict.passed and verdict.transient:
        return WAIT, verdict.detail  # never kept: Argo CD is asked again
    if not verdict.passed:
        result = (UNRENDERED, verdict.detail)
    else:
        gate = secret_scan_gate(
            app=rollback.application.name,
            rendered=[r for r in rendered if r.ok],
            baseline_text=rollback_baseline(rollback),
        )
        result = ("", "") if gate["passed"] else (SECRET, f"{gate['label']}: {gate['detail']}")
    if len(_JUDGED_HEADS) > 1000:
        _JUDGED_HEADS.clear()
    _JUDGED_HEADS[(rollback.pk, head)] = result
    return result
