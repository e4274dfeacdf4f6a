"""Promotion pull requests: the branch content, title and body of a promotion's PR; closing it.

The branch is pushed when the promotion is requested (`promotion_branch_push`, through
`change_branch_push`), so the approver reviews exactly the commit that will be merged; after the
approval the lifecycle claims the promotion, calls `_build` through `change_pr_open` (which reuses
the pushed branch) and records the PR. This module only says what the branch and PR contain.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from typing import Any

from django.conf import settings
from django.contrib.auth.models import User
from django.utils import timezone

from changes.branchcheck import change_branch_verify
from changes.checklist import gate_key, is_checklist_gate, secret_scan_gate
from changes.gatehistory import AT_PR_OPENING, ON_RENDERING, gate_snapshot, snapshots_append
from changes.lifecycle import (
    ChangeFailed,
    change_branch_push,
    change_branch_trust,
    change_fail,
    change_pr_open,
)
from changes.portalstatus import change_status_refresh
from changes.pullrequests import (
    BranchResult,
    PrepareBranch,
    PullRequestPermanent,
    PullRequestResult,
    PullRequestRetryable,
    PullRequestSpec,
    branch_ensure,
    branch_name_unguessable,
    forge_for,
    pull_request_close_and_delete_branch,
    pull_request_ensure,
)
from changes.rendered import RenderedChange
from changes.renderedsummary import (
    body_cap,
    md_escape,
    pr_body_limit,
    rendered_summary_markdown,
    summary_limit,
)
from changes.secretscan import BASELINE_PATH
from integrations.gitrepo import GitWorkspace, InvalidRef, TreeWorkspace, validate_ref_name

from . import gates as g
from . import gitops
from .kind import PROMOTION
from .models import Promotion, PromotionItem, PromotionState
from .preview import PromotionRefused, changelog
from .rendered import promotion_head_revision, promotion_rendered
from .selectors import promotion_argo_apps
from .strategies import SourceState, StrategyError, plan_edits

S = PromotionState
logger = logging.getLogger(__name__)
PR_LABELS = ("promotion",)


def branch_name(promotion: Promotion, items: Sequence[PromotionItem]) -> str:
    """`promote/<app>/<S>-to-<T>/<id>-<random>` (a release train uses `release-train` for the app).

    The random suffix is chosen once (first claim) and kept in `pr_branch`, so retries reuse it.
    """
    if promotion.pr_branch:
        return promotion.pr_branch
    app = items[0].application.name if len(items) == 1 else "release-train"
    name = f"promote/{app}/{promotion.source_env.name}-to-{promotion.target_env.name}/{promotion.pk}"
    try:
        return branch_name_unguessable(name)
    except InvalidRef as exc:
        raise PullRequestPermanent(f"cannot build a branch name: {exc}") from None


def promotion_pr_open(*, promotion_id: int) -> str:
    """Open (or find) the promotion's PR; idempotent; returns what happened.

    Raises PullRequestRetryable for transient problems (the task retries with backoff); a
    permanent problem marks the promotion failed with a readable reason.
    """
    outcome = change_pr_open(kind=PROMOTION, change_id=promotion_id, build=_build)
    if outcome != "not-claimed":
        change_status_refresh(kind=PROMOTION, change_id=promotion_id)
    return outcome


def promotion_branch_push(*, promotion_id: int) -> str:
    """Push a requested promotion's branch (before approval); idempotent; returns what happened.

    Once pushed, the gates are evaluated again on Argo CD's rendering of exactly that commit, so
    the approver decides on the rendered diff, the checklist and the secret scan of what will merge.
    Raises PullRequestRetryable for transient problems (the task retries with backoff).
    """
    outcome = change_branch_push(kind=PROMOTION, change_id=promotion_id, build=_push)
    if outcome in ("pushed", "found"):
        try:
            promotion_gates_on_rendering(promotion_id=promotion_id)
        except Exception:  # the push stands; the page renders lazily and the PR opening re-checks
            logger.warning(
                "gates on the rendering of promotion %s not evaluated", promotion_id, exc_info=True
            )
        change_status_refresh(kind=PROMOTION, change_id=promotion_id)
    return outcome


def promotion_gates_on_rendering(*, promotion_id: int) -> list[dict[str, Any]]:
    """Store the gates of a requested promotion as its pushed head renders; never raises on a failing gate.

    A failing gate here is shown to the approver (and a blocking one stops the approval); the PR
    opening evaluates them again and is what fails the promotion.
    """
    promotion = Promotion.objects.select_related(
        "source_env", "target_env", "repository", "requested_by"
    ).get(pk=promotion_id)
    if promotion.state != PromotionState.REQUESTED or not promotion.pushed_head_sha:
        return list(promotion.gates or [])
    items = list(promotion.items.select_related("application").order_by("application__name"))
    checks = _evaluate_gates(promotion, items, gitops.mirror_for(promotion.repository), label=ON_RENDERING)[0]
    return [c.as_dict() for c in checks]


def promotion_branch_verify(*, promotion_id: int) -> str:
    """Check the promotion branch head with the forge (changes.branchcheck); returns the outcome."""
    return change_branch_verify(kind=PROMOTION, change_id=promotion_id).outcome


def promotion_fail(*, promotion_id: int, reason: str) -> bool:
    """Mark a promotion failed (from any non-final state before merge) with a readable reason."""
    return change_fail(kind=PROMOTION, change_id=promotion_id, reason=reason)


def _build(promotion: Promotion) -> PullRequestResult:
    try:
        return _open_pr(promotion)
    except (StrategyError, PromotionRefused) as exc:
        raise ChangeFailed(str(exc)) from None


def _push(promotion: Promotion) -> BranchResult:
    try:
        items = _items(promotion)
        # No fetch here: the request read the source revisions from this mirror, and the base
        # head is fetched only when the mirror lacks it (`mirror_at`).
        mirror = gitops.mirror_for(promotion.repository, fetch=False)
        missing = [i.source_revision for i in items if not gitops.ensure_commit(mirror, i.source_revision)]
        if missing:
            raise PullRequestRetryable(f"the repository mirror has not got {missing[0][:12]} yet")
        return branch_ensure(
            spec=_spec(promotion, items, body=""), prepare_branch=_prepare(promotion, items, mirror)
        )
    except (StrategyError, PromotionRefused) as exc:
        raise ChangeFailed(str(exc)) from None


def _items(promotion: Promotion) -> list[PromotionItem]:
    """The promotion's items, and its branch name chosen (and kept) once."""
    items = list(promotion.items.select_related("application").order_by("application__name"))
    if not items:
        raise PullRequestPermanent("the promotion has no applications")
    branch = branch_name(promotion, items)
    base = validate_ref_name(promotion.target_env.branch)
    if promotion.pr_branch != branch or promotion.pr_base != base:
        Promotion.objects.filter(pk=promotion.pk).update(pr_branch=branch, pr_base=base)
        promotion.pr_branch, promotion.pr_base = branch, base
    return items


def _open_pr(promotion: Promotion) -> PullRequestResult:
    items = _items(promotion)
    mirror = gitops.mirror_for(promotion.repository)
    rendered = _recheck_gates(promotion, items, mirror)
    approvers = list(
        promotion.approvals.approving(promotion.pushed_head_sha).values_list("approver_name", flat=True)
    )
    spec = _spec(promotion, items, body=_pr_body(promotion, items, mirror, approvers, rendered))
    return pull_request_ensure(spec=spec, prepare_branch=_prepare(promotion, items, mirror))


def _prepare(promotion: Promotion, items: Sequence[PromotionItem], mirror: Any) -> PrepareBranch:
    """The promotion's commit: the target overlays edited to what the source runs.

    Its message and trailers hold nothing decided after the request (no approvers): the commit is
    made before anyone approves it, and a lost branch is rebuilt to the same SHA.
    """
    requester = promotion.requested_by
    trailers = {
        "Promotion-Id": str(promotion.pk),
        "Requested-By": _person(requester, promotion.requested_by_name),
    }
    title = _pr_title(promotion, items)

    def prepare(ws: GitWorkspace | TreeWorkspace) -> str | None:
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

    return prepare


def _spec(promotion: Promotion, items: Sequence[PromotionItem], *, body: str) -> PullRequestSpec:
    reviewers: list[str] = []
    for item in items:
        options = (
            item.application.strategy_options if isinstance(item.application.strategy_options, dict) else {}
        )
        for login in options.get("reviewers") or []:
            if isinstance(login, str) and login not in reviewers:
                reviewers.append(login)
    return PullRequestSpec(
        repository=promotion.repository,
        branch=promotion.pr_branch,
        base=promotion.pr_base,
        title=_pr_title(promotion, items),
        body=body,
        labels=PR_LABELS,
        reviewers=reviewers,
        trust=change_branch_trust(kind=PROMOTION, change=promotion),
        shallow=True,  # overlay edits need no history; a monorepo's full clone would dominate the push
        # Overlay edits need no work tree either: the commit is made on the portal's mirror (no
        # clone, checkout and cleanup of the whole repository: most of the push's time).
        mirror_at=lambda sha: gitops.mirror_with_commit(promotion.repository, sha),
    )


def _person(user: User | None, fallback: str) -> str:
    if user is None:
        return fallback or "unknown"
    name = user.get_username()
    return f"{name} <{user.email}>" if user.email else name


def _evaluate_gates(
    promotion: Promotion, items: Sequence[PromotionItem], mirror: Any, *, label: str
) -> tuple[list[g.Gate], list[RenderedChange] | None]:
    """Every gate of the promotion now, on Argo CD's rendering once a head is pushed.

    Stored as the last evaluation and kept as a snapshot labelled `label` (changes.gatehistory).
    """
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
    rendered: list[RenderedChange] | None = None
    if promotion_head_revision(promotion, branch_ok=False):
        rendered = promotion_rendered(promotion, branch_ok=False)
        checks.append(g.gate_rendered(rendered))
    checks += _recheck_checklist_and_secrets(promotion, items, mirror, rendered)
    promotion.gates = [c.as_dict() for c in checks]
    promotion.gate_evaluations = snapshots_append(
        promotion.gate_evaluations, gate_snapshot(label, timezone.now(), promotion.gates)
    )
    Promotion.objects.filter(pk=promotion.pk).update(
        gates=promotion.gates, gate_evaluations=promotion.gate_evaluations
    )
    return checks, rendered


def _recheck_gates(
    promotion: Promotion, items: Sequence[PromotionItem], mirror: Any
) -> list[RenderedChange] | None:
    """Gates again, at task time: transient failures retry, others fail the promotion.

    Once the branch was pushed (a head SHA is recorded), Argo CD renders it: a render failure is a
    blocking gate. Returns the rendered changes (None while nothing is pushed yet).
    """
    checks, rendered = _evaluate_gates(promotion, items, mirror, label=AT_PR_OPENING)
    failing = g.failing(checks)
    if any(c.transient for c in failing):
        raise PullRequestRetryable("; ".join(f"{c.label}: {c.detail}" for c in failing if c.transient))
    if failing:
        raise PromotionRefused(
            "gate failed at PR time: " + "; ".join(f"{c.label}: {c.detail}" for c in failing)
        )
    return rendered


def _recheck_checklist_and_secrets(
    promotion: Promotion, items: Sequence[PromotionItem], mirror: Any, rendered: list[RenderedChange] | None
) -> list[g.Gate]:
    """The secret scan and the checklist again at PR time, on Argo CD's rendering once it exists.

    The secret scan covers the diff the approvers saw and the rendered objects, with the baseline
    the target branch has now. The checklist is evaluated again on the rendering (else the gates
    the approvers saw are kept); an approver's override carries over to the same gates only, so a
    blocking finding the rendering reveals for the first time fails the promotion.
    """
    base_sha = mirror.branch_head(validate_ref_name(promotion.target_env.branch)) or ""
    baseline = gitops.reader(mirror, base_sha)(BASELINE_PATH) if base_sha else None
    rows = list(promotion_argo_apps(promotion)) if rendered else []
    previous = [gate for gate in promotion.gates or [] if isinstance(gate, dict) and is_checklist_gate(gate)]
    overridden = {gate_key(gate): str(gate["overridden"]) for gate in previous if gate.get("overridden")}
    out: list[g.Gate] = []
    fresh: list[g.Gate] = []
    for item in items:
        app = item.application
        names = {row.name for row in rows if row.application_id == app.pk}
        mine = [r for r in rendered or [] if r.app in names]
        out.append(
            g.Gate(
                **secret_scan_gate(
                    app=app.name, unified_diff=item.diff, rendered=mine, baseline_text=baseline
                )
            )
        )
        if any(r.ok for r in mine):
            fresh += g.gates_checklist(app, promotion.target_env, rendered=mine)
    if not fresh:
        return out + [
            g.Gate(**{k: v for k, v in gate.items() if k in g.Gate.__dataclass_fields__}) for gate in previous
        ]
    for gate in fresh:
        reason = overridden.get(gate_key(gate.as_dict()), "")
        out.append(dataclasses.replace(gate, overridden=reason) if reason and gate.overridable else gate)
    return out


def _pr_title(promotion: Promotion, items: Sequence[PromotionItem]) -> str:
    s, t = promotion.source_env.name, promotion.target_env.name
    if len(items) == 1:
        i = items[0]
        return f"Promote {i.application.name} {i.version_before} → {i.version_after} to {t}"
    return f"Release train {s} → {t}: {len(items)} apps"


def _pr_body(
    promotion: Promotion,
    items: Sequence[PromotionItem],
    mirror: Any,
    approvers: list[str],
    rendered: Sequence[RenderedChange] | None = None,
) -> str:
    s, t = promotion.source_env.name, promotion.target_env.name
    link = settings.PORTAL_BASE_URL.rstrip("/") + promotion.get_absolute_url()
    lines = [
        f"Promotion [#{promotion.pk}]({link}) from **{s}** to **{t}**, requested by "
        f"{md_escape(promotion.requested_by_name)}; approved by {md_escape(', '.join(approvers)) or 'n/a (not required)'}.",
        "",
        f"The {t} overlay now references exactly what {s} runs (as Argo CD reports it).",
        "",
        "| App | Before | After | Source revision |",
        "|---|---|---|---|",
    ]
    for i in items:
        lines.append(
            f"| {md_escape(i.application.name)} | `{md_escape(i.version_before)}` | `{md_escape(i.version_after)}` | "
            f"`{i.source_revision[:12]}` |"
        )
    lines += ["", "### Changelog"]
    for i in items:
        app = i.application
        # The commits the requester and the approvers saw (only those that reach the target).
        entries = [c for c in i.commits or [] if isinstance(c, dict)] or [
            {"short_sha": e.short_sha, "url": e.url, "subject": e.subject, "author": e.author}
            for e in changelog(
                mirror, promotion.repository, app, promotion.source_env, i.source_revision, None, i
            )
        ]
        lines.append(f"**{md_escape(app.name)}**")
        if not entries:
            lines.append("- (no commits found)")
        for e in entries:
            short, url = str(e.get("short_sha", "")), str(e.get("url", ""))
            sha = f"[`{short}`]({url})" if url else f"`{short}`"
            lines.append(
                f"- {sha} {md_escape(str(e.get('subject', '')))} ({md_escape(str(e.get('author', '')))})"
            )
    lines += ["", "### Gates"]
    for gate in promotion.gates or []:
        mark = {"pass": "✅", "fail": "❌", "warning": "⚠️"}.get(
            "pass" if gate.get("passed") else ("fail" if gate.get("blocking") else "warning"), ""
        )
        lines.append(
            f"- {mark} {md_escape(str(gate.get('label')))}: {md_escape(str(gate.get('detail')))[:300]}"
        )
    if promotion.override_sync_window:
        lines += ["", f"**Sync window overridden**: {md_escape(promotion.override_justification)}"]
    lines += ["", f"Correlation id: `{promotion.correlation_id}`"]
    forge = promotion.repository.forge_kind
    if rendered is None:
        section = f"### Rendered by Argo CD\n\nRendered after the branch is pushed: {link}#rendered"
    else:
        section = rendered_summary_markdown(rendered, link=f"{link}#rendered", limit=summary_limit(forge))
    return body_cap("\n".join(lines), section, limit=pr_body_limit(forge))


def promotion_close_pr(*, promotion_id: int) -> str:
    """Close the PR and delete the branch of a cancelled, rejected or failed promotion; idempotent."""
    promotion = Promotion.objects.with_related().get(pk=promotion_id)
    if promotion.state not in (S.CANCELLED, S.FAILED, S.REJECTED):
        return "not-cancelled"
    number = promotion.pr_number
    if number is None and promotion.pr_branch:
        # The PR may have been opened by an attempt that was still running when we cancelled.
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
