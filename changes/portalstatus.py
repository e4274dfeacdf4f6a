"""The portal's own commit status on the head of every PR it opens: its verdict, made mergeable-only.

The portal evaluates approvals (bound to the head SHA), Argo CD's rendering, the zero-downtime
checklist, the secret scan and the required CI checks; the PR itself lives on the forge, where a
person could merge it regardless. So the portal posts a commit status with the context
PORTAL_STATUS_CONTEXT (`gitops-portal/gates`) on the change's head, and the GitOps repository's
branch protection requires it (docs/security.md), the way Kargo, Telefonistka and Atlantis do:

- `pending`: approvals or gates are outstanding (awaiting approval, Argo CD not asked yet);
- `success`: approved (where the kind needs it) and every blocking gate passes or was overridden;
- `failure`: a blocking gate fails (rendering error, secret finding, a checklist block nobody
  overrode), the branch was tampered with, or the change failed, was rejected or cancelled.

A kind computes its verdict (`ChangeKind.status_verdict` -> `PortalStatus` or None: nothing to say,
e.g. once merged); this module posts it, once per (head, state, description): the last one posted
is kept on the change row (`PullRequestRecord.portal_status_*`), so retries, tracking ticks and
every ledger event that enqueues a publish cost no forge call unless the verdict changed.

Errors: a 5xx, timeout or rate limit raises `PullRequestRetryable` (the task retries with backoff;
tracking ticks and the sweeper publish again) and never fails the change. A refusal (403/404: the
token lacks "Commit statuses: write"; 422) is logged once, kept in `portal_status_error` and shown on
the change page as "could not post the portal's status: …"; the change goes on.

The portal's own context is never one of the environment's required CI checks (changes.checks
drops it), or the portal would wait on itself.

Posting a status writes no ledger event: it is an external effect that mirrors verdicts each of which
is already in the ledger (request, gates, approvals, invalidation, overrides, failure); the row keeps
what was last posted and when.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from integrations.forges import CommitStatusState, ForgeError, status_description

from .lifecycle import ChangeKind, change_enqueue
from .pullrequests import PullRequestError, PullRequestRetryable, forge_for, pull_request_error

logger = logging.getLogger(__name__)

ERROR_PREFIX = "could not post the portal's status: "


@dataclass(frozen=True)
class PortalStatus:
    """What the portal says about a change on its head: state, a short reason, and the head."""

    state: CommitStatusState
    description: str
    sha: str


def portal_status_context() -> str:
    """The context the portal posts its status under (PORTAL_STATUS_CONTEXT)."""
    return str(settings.PORTAL_STATUS_CONTEXT)


def portal_page_url(path: str) -> str:
    """An absolute link to a portal page (PORTAL_BASE_URL + path): the status's target_url."""
    return str(settings.PORTAL_BASE_URL).rstrip("/") + path


def gates_status(
    gates: list[dict[str, Any]], *, sha: str, approved: bool, approval_wait: str = ""
) -> PortalStatus:
    """Judge stored gates (dicts: name, label, passed, blocking, overridden, transient, detail).

    A blocking gate that failed and was not overridden fails (one whose remote system could not be
    asked, `transient`, waits instead); otherwise an outstanding approval waits; else success.
    """
    failing = [
        g
        for g in gates
        if isinstance(g, dict) and g.get("blocking") and not g.get("passed") and not g.get("overridden")
    ]
    final = [g for g in failing if not g.get("transient")]
    if final:
        first = final[0]
        more = f" (+{len(final) - 1} more)" if len(final) > 1 else ""
        label = first.get("label") or first.get("name")
        return PortalStatus("failure", f"Blocked: {label}: {first.get('detail') or 'failed'}{more}", sha)
    if failing:
        return PortalStatus("pending", f"Waiting: {failing[0].get('label')} could not be evaluated yet", sha)
    if not approved:
        return PortalStatus("pending", approval_wait or "Waiting for approval in the GitOps Portal", sha)
    return PortalStatus("success", "Approved in the GitOps Portal; all blocking gates passed", sha)


def _posted(change: Any) -> tuple[str, str, str]:
    return (change.portal_status_sha, change.portal_status_state, change.portal_status_description)


def change_status_publish(*, kind: ChangeKind, change_id: int, sha: str = "") -> str:
    """Post the change's verdict as the portal's commit status if it changed; return the outcome.

    "posted", "unchanged" (already posted: no forge call), "skipped" (nothing to post: no head or
    repository, or the change is past its merge), "refused" (the forge refused it for good: kept in
    `portal_status_error`). Raises `PullRequestRetryable` on transient forge errors. `sha` posts on
    another head than the kind's (a tampered branch's foreign head).
    """
    change = kind.load(change_id)
    verdict = kind.status_verdict(change)
    if verdict is None:
        return "skipped"
    head = sha or verdict.sha
    repository = kind.repository(change)
    if not head or repository is None:
        return "skipped"
    wanted = (head, verdict.state, status_description(verdict.description))
    if _posted(change) == wanted:
        return "unchanged"
    with transaction.atomic():
        # The row lock makes concurrent publishers (a task retry, a tracking tick) post once.
        locked = kind.rows().select_for_update().filter(pk=change_id).first()
        if locked is None:
            return "skipped"
        if _posted(locked) == wanted:
            return "unchanged"
        rows = kind.rows().filter(pk=change_id)
        try:
            forge_for(repository).set_commit_status(
                head,
                state=verdict.state,
                context=portal_status_context(),
                description=wanted[2],
                target_url=kind.page_url(change),
            )
        except (ForgeError, PullRequestError) as exc:
            error = (
                pull_request_error(exc, "posting the portal's status") if isinstance(exc, ForgeError) else exc
            )
            if isinstance(error, PullRequestRetryable):
                raise error from None
            message = (ERROR_PREFIX + str(exc))[:500]
            if locked.portal_status_error != message:
                logger.warning("%s %s: %s", kind.name, change_id, message)
            # Kept as attempted: it is posted again when the verdict changes, not on every tick.
            rows.update(
                portal_status_sha=head,
                portal_status_state=verdict.state,
                portal_status_description=wanted[2],
                portal_status_at=timezone.now(),
                portal_status_error=message,
            )
            return "refused"
        rows.update(
            portal_status_sha=head,
            portal_status_state=verdict.state,
            portal_status_description=wanted[2],
            portal_status_at=timezone.now(),
            portal_status_error="",
        )
    logger.info("%s %s: portal status %s at %s", kind.name, change_id, verdict.state, head[:12])
    return "posted"


def change_status_refresh(*, kind: ChangeKind, change_id: int) -> str:
    """Publish from a tracking tick or task step: a transient forge error is logged, never raised."""
    try:
        return change_status_publish(kind=kind, change_id=change_id)
    except PullRequestRetryable as exc:
        logger.warning("%s %s: portal status not posted (tried again): %s", kind.name, change_id, exc)
        return "retry"


def change_status_enqueue(*, kind: ChangeKind, change_id: int, sha: str = "") -> None:
    """Enqueue the kind's status task after commit (approvals, overrides: web requests)."""
    if kind.status_task:
        change_enqueue(task=kind.status_task, args=(change_id, sha))
