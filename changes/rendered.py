"""What a change will do in the cluster: Argo CD's rendered manifests before and after, compared.

The portal never renders: Argo CD renders any revision on request (`ArgoCDClient.manifests`).
`render_change` is the thin fetch: one Argo CD Application (app x destination), the revision it
runs now and the revision the change produces → `RenderedChange` (its `error` holds Argo CD's
message when rendering failed: callers show it as a blocking gate, never as an empty diff).
The comparison itself (canonical YAML, object diff with Secrets by key only, sync order and the
PreSync callout) is pure, in `changes.manifests`; its public names are re-exported here.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from django.core.cache import cache

from changes.fields import PullRequestRecord
from changes.manifests import (
    ADDED,
    CHANGED,
    KIND_ORDER,
    PHASES,
    REMOVED,
    SECRET_MASK,
    KindCount,
    ObjectChange,
    ObjectDiff,
    ObjectId,
    SyncPlan,
    SyncStep,
    WaveGroup,
    canonical,
    canonical_yaml,
    is_secret,
    object_diff,
    object_id,
    redact_secrets,
    sync_phases,
    sync_plan,
    sync_wave,
)
from integrations.argocd import ArgoCDClient, ArgoCDError, RenderError
from inventory.clients import argocd_client_for
from inventory.models import ArgoApplication

__all__ = [
    "ADDED",
    "CHANGED",
    "KIND_ORDER",
    "PHASES",
    "REMOVED",
    "SECRET_MASK",
    "KindCount",
    "ObjectChange",
    "ObjectDiff",
    "ObjectId",
    "RenderVerdict",
    "RenderedChange",
    "SyncPlan",
    "SyncStep",
    "WaveGroup",
    "canonical",
    "canonical_yaml",
    "change_head_revision",
    "destination_of",
    "is_secret",
    "object_diff",
    "object_id",
    "redact_secrets",
    "render_change",
    "rendered_changes",
    "rendered_compare",
    "rendered_verdict",
    "source_revisions",
    "sync_phases",
    "sync_plan",
    "sync_wave",
]

# A page waits for the rendering: never longer than this (settings may shorten it further).
RENDER_READ_TIMEOUT = 30.0
RENDER_CACHE_SECONDS = 600
_SHA = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")


# ---- one app x destination ----------------------------------------------------------------------------


@dataclass(frozen=True)
class RenderedChange:
    """The rendered diff of one Argo CD Application (app x destination) for one change.

    `before_objects`/`after_objects` are Argo CD's rendering at each revision (Secret values masked);
    `error` is Argo CD's message when either rendering failed (`diff` and `waves` are then None).
    `pending` says the change's revision does not exist yet (the branch is not pushed).
    """

    app: str
    destination: str
    before_revision: str
    after_revision: str
    before_objects: tuple[dict[str, Any], ...] = ()
    after_objects: tuple[dict[str, Any], ...] = ()
    diff: ObjectDiff | None = None
    waves: SyncPlan | None = None
    error: str = ""
    transient: bool = False
    pending: bool = False
    namespace: str = ""

    @property
    def ok(self) -> bool:
        return not self.error and not self.pending and self.diff is not None


def rendered_compare(
    *,
    app: str,
    destination: str,
    before_revision: str,
    after_revision: str,
    before_objects: Sequence[Mapping[str, Any]],
    after_objects: Sequence[Mapping[str, Any]],
    namespace: str = "",
) -> RenderedChange:
    """Build the RenderedChange of two renderings (pure: no Argo CD call)."""
    before = tuple(redact_secrets(dict(o)) for o in before_objects)
    after = tuple(redact_secrets(dict(o)) for o in after_objects)
    # Compare before redaction: a changed mask still says "this key changed" (never its value).
    diff = object_diff(
        before_objects,
        after_objects,
        namespace=namespace,
        before_label=before_revision[:12] or "before",
        after_label=after_revision[:12] or "after",
    )
    return RenderedChange(
        app=app,
        destination=destination,
        before_revision=before_revision,
        after_revision=after_revision,
        before_objects=before,
        after_objects=after,
        diff=diff,
        waves=sync_plan(after, diff, namespace=namespace, before=before),
        namespace=namespace,
    )


def destination_of(row: ArgoApplication) -> str:
    """Name where an Argo CD Application deploys: its cluster (else instance) and namespace."""
    where = row.cluster.name if row.cluster_id and row.cluster else row.instance.name
    return f"{where}/{row.namespace}" if row.namespace else where


def source_revisions(
    row: ArgoApplication, *, revision: str, repo_urls: Iterable[str]
) -> tuple[list[str], list[int]]:
    """For a multi-source app: the revisions per 1-based source position, `revision` for the sources of
    the GitOps repository (`repo_urls`), what runs now for the others (charts, other repos)."""
    urls = {u.removesuffix(".git") for u in repo_urls if u}
    running = list(row.revisions or [])
    revisions: list[str] = []
    positions: list[int] = []
    for i, source in enumerate(row.sources or [], 1):
        url = str((source or {}).get("repo_url") or "").removesuffix(".git")
        if url in urls and revision:
            revisions.append(revision)
        elif i - 1 < len(running) and running[i - 1]:
            revisions.append(str(running[i - 1]))
        else:
            continue  # Argo CD renders it at its target revision
        positions.append(i)
    return revisions, positions


def _fetch(
    client: ArgoCDClient, row: ArgoApplication, revision: str, repo_urls: Iterable[str]
) -> tuple[list[dict[str, Any]], str]:
    if row.is_multi_source:
        revisions, positions = source_revisions(row, revision=revision, repo_urls=repo_urls)
        result = client.manifests(
            row.name, revisions=revisions, source_positions=positions, project=row.project or None
        )
    else:
        result = client.manifests(row.name, revision=revision or None, project=row.project or None)
    return list(result.objects), result.namespace


def render_change(
    row: ArgoApplication,
    *,
    before_revision: str,
    after_revision: str,
    repo_urls: Iterable[str] = (),
    client: ArgoCDClient | None = None,
    read_timeout: float | None = None,
) -> RenderedChange:
    """Ask Argo CD for the app's manifests now and at `after_revision`; compare them.

    Multi-source apps: each revision applies to the sources in the GitOps repository (`repo_urls`);
    the other sources (a chart repository) keep the revision they run now. An empty `after_revision` gives a pending RenderedChange.
    Argo CD's errors come back in `error` (with `transient` for timeouts), never as an empty diff.
    """
    base = RenderedChange(
        app=row.name,
        destination=destination_of(row),
        before_revision=before_revision,
        after_revision=after_revision,
    )
    if not after_revision:
        return replace(base, pending=True)
    urls = list(repo_urls)
    try:
        argo = client or argocd_client_for(row.instance, read_timeout=read_timeout)
        before, namespace = _fetch(argo, row, before_revision, urls)
        after, namespace_after = _fetch(argo, row, after_revision, urls)
    except RenderError as exc:
        return replace(base, error=str(exc), transient=exc.transient)
    except ArgoCDError as exc:  # the client refused its URL: not a rendering problem Argo CD reported
        return replace(base, error=str(exc), transient=True)
    return rendered_compare(
        app=row.name,
        destination=base.destination,
        before_revision=before_revision,
        after_revision=after_revision,
        before_objects=before,
        after_objects=after,
        namespace=namespace_after or namespace or row.namespace,
    )


def change_head_revision(record: PullRequestRecord, branch: str = "") -> str:
    """Return the revision a change produces: the head the portal pushed, the PR's head, else its branch
    once a pull request shows it was pushed.

    "" while nothing is pushed yet (the rendered diff then waits for the branch).
    """
    return record.pushed_head_sha or record.pr_head_sha or (branch if record.pr_url else "")


def _cache_key(row: ArgoApplication, before: str, after: str, urls: Sequence[str]) -> str | None:
    """A key for a rendering that cannot change (both sides are commit SHAs), else None."""
    if not (_SHA.fullmatch(before) and _SHA.fullmatch(after)):
        return None
    what = json.dumps(
        [row.instance.url, row.name, row.project, row.sources, row.revisions, before, after, sorted(urls)],
        sort_keys=True,
        default=str,
    )
    return "rendered:v1:" + hashlib.sha256(what.encode()).hexdigest()


def rendered_changes(
    rows: Iterable[ArgoApplication],
    *,
    before_revision: Callable[[ArgoApplication], str],
    after_revision: str,
    repo_urls: Iterable[str] = (),
    read_timeout: float | None = RENDER_READ_TIMEOUT,
) -> list[RenderedChange]:
    """Render every Argo CD Application of a change (one client per Argo CD instance).

    A rendering of two commit SHAs is kept RENDER_CACHE_SECONDS (pages re-open, the PR body and the
    PR-time gate ask again); failures are never kept, so a retry asks Argo CD again.
    """
    urls = list(repo_urls)
    clients: dict[int, ArgoCDClient] = {}
    out: list[RenderedChange] = []
    for row in rows:
        before = before_revision(row)
        key = _cache_key(row, before, after_revision, urls)
        hit = cache.get(key) if key else None
        if isinstance(hit, RenderedChange):
            out.append(hit)
            continue
        client = clients.get(row.instance_id)
        if client is None and after_revision:
            try:
                client = clients[row.instance_id] = argocd_client_for(row.instance, read_timeout=read_timeout)
            except ArgoCDError as exc:
                out.append(
                    RenderedChange(row.name, destination_of(row), before, after_revision, error=str(exc))
                )
                continue
        change = render_change(
            row, before_revision=before, after_revision=after_revision, repo_urls=urls, client=client
        )
        if key and change.ok:
            cache.set(key, change, RENDER_CACHE_SECONDS)
        out.append(change)
    return out


@dataclass(frozen=True)
class RenderVerdict:
    """What the rendered diffs of a change say as a gate: a failure blocks (with Argo CD's message)."""

    passed: bool
    pending: bool
    transient: bool
    detail: str
    label: str = "Rendered by Argo CD"

    @property
    def badge(self) -> str:
        return "ok" if self.passed else "bad"

    @property
    def status(self) -> str:
        return "pass" if self.passed else "fail"


def rendered_verdict(changes: Sequence[RenderedChange]) -> RenderVerdict:
    """Judge a change's rendered diffs: any render failure fails, naming the app and Argo CD's message."""
    failed = [c for c in changes if c.error]
    if failed:
        detail = "; ".join(f"{c.app}: {c.error}" for c in failed)
        return RenderVerdict(
            False, False, all(c.transient for c in failed), f"Argo CD cannot render: {detail}"
        )
    if not changes:
        return RenderVerdict(True, False, False, "no Argo CD application to render in this environment")
    if any(c.pending for c in changes):
        return RenderVerdict(True, True, False, "rendered after the branch is pushed")
    total = sum(len(c.diff.changes) for c in changes if c.diff)
    return RenderVerdict(
        True, False, False, f"Argo CD rendered {len(changes)} application(s): {total} object change(s)"
    )
