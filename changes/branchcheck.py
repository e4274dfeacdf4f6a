"""Is a change's pushed branch still at the portal's own commit? Asked of the forge, now.

The branch is pushed at request time and approvals bind to its recorded head
(`pushed_head_sha`). A push by someone else before the approval used to be noticed only when the
PR opened; `change_branch_verify` asks the forge for the branch head (a typed
`ForgeClient.get_branch_sha`, GitHub's `GET /repos/{owner}/{repo}/git/ref/heads/{branch}`) when an
approver approves and when a push webhook names the branch. A head the portal did not record
goes to `changes.lifecycle.change_head_moved` as foreign: the change fails as tampered with the
same `<kind>.branch_moved` and `<kind>.failed` events as at PR opening. Forge errors raise
(`PullRequestRetryable` / `PullRequestPermanent`) and change nothing: the caller refuses the
approval, or the task retries.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Literal

from integrations.forges import ForgeError

from .lifecycle import (
    DEPLOYED,
    MERGED,
    ChangeKind,
    change_enqueue,
    change_enqueue_push,
    change_head_moved,
    change_kinds,
)
from .pullrequests import BranchMoved, PullRequestPermanent, forge_for, pull_request_error

logger = logging.getLogger(__name__)

Outcome = Literal["ok", "tampered", "missing", "not-pushed", "moved-on"]
# A deleted branch in a push webhook (`after` is all zeros).
NULL_SHA = "0" * 40


@dataclass(frozen=True)
class BranchCheck:
    """What the forge said: `ok` (at `head`, the recorded commit), `tampered` (someone else's commit:
    the change failed), `missing` (the branch is gone; the push task puts it back), `not-pushed`
    (nothing confirmed to check yet) or `moved-on` (the change ended, or the portal moved it itself)."""

    outcome: Outcome
    head: str = ""
    detail: str = ""


def _checkable_states(kind: ChangeKind) -> tuple[str, ...]:
    # Before the merge only: a merged change's branch may be deleted or reused by the forge.
    return tuple(s for s in kind.failable_states if s not in (MERGED, DEPLOYED))


def change_branch_verify(*, kind: ChangeKind, change_id: int) -> BranchCheck:
    """Compare the forge's head of the change's branch with the head the portal recorded.

    Raises `PullRequestRetryable` (forge 5xx, timeout, rate limit) or `PullRequestPermanent`
    (auth, configuration) without changing anything.
    """
    change = kind.load(change_id)
    if change.state not in _checkable_states(kind):
        return BranchCheck("moved-on", detail=f"{kind.name} #{change_id} is {change.state}")
    branch = getattr(change, kind.branch_field, "") if kind.branch_field else ""
    recorded = change.pushed_head_sha
    if not branch or not recorded or change.branch_pushed_at is None:
        return BranchCheck("not-pushed", detail="the branch is not pushed yet")
    repository = kind.repository(change)
    if repository is None:
        raise PullRequestPermanent(f"{kind.name} #{change_id} has no repository to check its branch in")
    try:
        head = forge_for(repository).get_branch_sha(branch)
    except ForgeError as exc:
        raise pull_request_error(exc, f"reading branch {branch} from the forge") from None
    if head == recorded:
        return BranchCheck("ok", head=recorded)
    if head is None:
        if change.state in kind.push_states:
            change_enqueue_push(kind=kind, change_id=change_id)
        return BranchCheck("missing", detail=f"branch {branch} is not on the forge")
    current = kind.load(change_id)
    if current.pushed_head_sha != recorded or current.state in kind.final_states:
        # The portal recorded another head meanwhile (it records before it pushes): its own move.
        return BranchCheck("moved-on", detail="the portal moved the branch itself")
    moved = BranchMoved(
        f"branch {branch} moved from {recorded[:12]} to {head[:12]}, a commit the portal did not make",
        old=recorded,
        new=head,
        foreign=True,
    )
    change_head_moved(kind=kind, change_id=change_id, moved=moved)
    return BranchCheck("tampered", head=head, detail=str(moved))


def changes_branch_pushed_webhook(*, repository: Any, ref: str, after: str) -> list[str]:
    """A push webhook for `ref`: send the check of each unmerged change on that branch whose
    recorded head is not `after` (the portal's own pushes name its recorded head); returns them."""
    prefix = "refs/heads/"
    if not ref.startswith(prefix):
        return []
    branch = ref[len(prefix) :]
    sent: list[str] = []
    for kind in change_kinds():
        if not kind.verify_task or not kind.branch_field:
            continue
        rows = (
            kind.rows()
            .filter(**{kind.branch_field: branch}, state__in=_checkable_states(kind))
            .filter(branch_pushed_at__isnull=False)
            .exclude(pushed_head_sha=after)
        )
        for change in rows:
            loaded = kind.load(change.pk)
            owner = kind.repository(loaded)
            if owner is None or owner.pk != repository.pk:
                continue
            change_enqueue(task=kind.verify_task, args=(change.pk,))
            sent.append(f"{kind.name}:{change.pk}")
    if sent and after == NULL_SHA:
        logger.info("branch %s deleted on the forge; checking %s", branch, ", ".join(sent))
    return sent
