"""Rollback pull requests: the revert branch, title and body of a rollback's PR.

The lifecycle (changes.lifecycle) claims the rollback, calls `_build` through `change_pr_open`
and records the PR; this module only says what the PR of a rollback contains.
"""

from __future__ import annotations

from django.conf import settings
from django.urls import reverse

from changes.branchcheck import change_branch_verify
from changes.lifecycle import ChangeFailed, change_branch_trust, change_fail, change_pr_open
from changes.pullrequests import (
    PullRequestResult,
    PullRequestSpec,
    branch_name_unguessable,
    pull_request_ensure,
)
from changes.renderedsummary import body_cap, pr_body_limit, rendered_summary_markdown, summary_limit
from integrations.gitrepo import GitError, GitWorkspace, InvalidRef, RevertConflict

from .kind import ROLLBACK
from .models import RollbackRequest
from .records import rollback_title
from .rendered import rollback_rendered


def rollback_url(rollback: RollbackRequest) -> str:
    return settings.PORTAL_BASE_URL.rstrip("/") + reverse("rollbacks:detail", args=[rollback.pk])


def _quote(text: str) -> str:
    return "\n".join(f"> {line}" for line in text.splitlines()) or "> —"


def _pr_body(rollback: RollbackRequest) -> str:
    lines = [
        f"Rollback #{rollback.pk} of **{rollback.application.name}** in **{rollback.environment.name}**, "
        f"requested by {rollback.requested_by_name} through the GitOps Portal.",
        "",
        "**Reason**",
        "",
        _quote(rollback.reason),
        "",
        f"**Incident:** {rollback.incident or '—'}",
        "",
        f"**Runs now:** `{rollback.current_revision[:12]}` ({rollback.current_version or 'unknown version'})",
        f"**After the rollback:** {rollback.expected_version or 'unchanged version'}",
        "",
        "**Reverted commits** (newest first), on these paths only:",
        "",
        *[f"- {sha}" for sha in rollback.revert_shas],
        "",
        *[f"- `{path}`" for path in rollback.paths],
        "",
        "What these commits changed elsewhere (other apps, other environments) stays as it is.",
        "",
    ]
    if rollback.emergency:
        lines += [
            "**Emergency:** the portal merges this PR once the required checks pass.",
            "",
            "Justification:",
            "",
            _quote(rollback.emergency_justification),
            "",
        ]
    lines.append(f"Details and live status: {rollback_url(rollback)}")
    link = f"{rollback_url(rollback)}#rendered"
    repository = rollback.application.repository
    forge = repository.forge_kind if repository else ""
    if rollback.pushed_head_sha or rollback.pr_head_sha:
        section = rendered_summary_markdown(
            rollback_rendered(rollback, branch_ok=False), link=link, limit=summary_limit(forge)
        )
    else:
        section = f"### Rendered by Argo CD\n\nRendered after the branch is pushed: {link}"
    return body_cap("\n".join(lines), section, limit=pr_body_limit(forge))


def rollback_pr_open(*, rollback_id: int) -> RollbackRequest | None:
    """Revert the commits on the rollback branch, push it and open the PR (idempotent).

    Raises PullRequestRetryable for transient failures (the task retries); permanent failures and
    revert conflicts mark the rollback failed. Returns None when another worker holds the row.
    """
    outcome = change_pr_open(kind=ROLLBACK, change_id=rollback_id, build=_build)
    if outcome == "not-claimed":
        return None
    return RollbackRequest.objects.select_related("application__repository", "environment").get(
        pk=rollback_id
    )


def rollback_branch_verify(*, rollback_id: int) -> str:
    """Check the revert branch head with the forge (changes.branchcheck); returns the outcome."""
    return change_branch_verify(kind=ROLLBACK, change_id=rollback_id).outcome


def rollback_fail(*, rollback_id: int, reason: str) -> bool:
    """Mark a rollback failed (not merged yet) with a readable reason."""
    return change_fail(kind=ROLLBACK, change_id=rollback_id, reason=reason, extra={"conflict_files": []})


def _at_head(rollback: RollbackRequest, head: str) -> RollbackRequest:
    """The rollback as it is once its branch is pushed at `head` (for the PR body's rendered section)."""
    if head and not rollback.pushed_head_sha:
        rollback.pushed_head_sha = head
    return rollback


def _build(rollback: RollbackRequest) -> PullRequestResult:
    repository = rollback.application.repository
    if repository is None:
        raise ChangeFailed("the application has no Git repository configured")
    if not rollback.branch:
        # A row from before branch names were unguessable: choose (and keep) one now.
        rollback.branch = branch_name_unguessable(rollback.branch_prefix)
        RollbackRequest.objects.filter(pk=rollback.pk).update(branch=rollback.branch)
    spec = PullRequestSpec(
        repository=repository,
        branch=rollback.branch,
        base=rollback.base_branch,
        title=rollback_title(rollback),
        body=_pr_body(rollback),
        # The revert branch is pushed by this call: the body summarises its rendering once it is.
        body_for=lambda head: _pr_body(_at_head(rollback, head)),
        labels=("rollback",),
        trust=change_branch_trust(kind=ROLLBACK, change=rollback),
    )
    trailers = {"Rollback-Id": str(rollback.pk), "Requested-By": rollback.requested_by_name}

    def prepare(ws: GitWorkspace) -> str | None:
        # Only the app x environment's paths: a release train's other apps keep their changes.
        created = ws.revert_paths(rollback.revert_shas, paths=rollback.paths, trailers=trailers)
        return created[-1] if created else None

    try:
        return pull_request_ensure(spec=spec, prepare_branch=prepare)
    except RevertConflict as exc:
        files = list(exc.files)
        raise ChangeFailed(
            f"reverting {exc.sha[:8]} conflicts with later changes on {rollback.base_branch}; nothing was pushed",
            fields={"conflict_files": files},
            extra={"conflict_files": files},
        ) from None
    except (GitError, InvalidRef) as exc:
        # Local revert errors (e.g. "produced no change: already reverted?") are permanent.
        raise ChangeFailed(f"the revert failed, nothing was pushed: {exc}") from None
