"""Record Argo CD history entries as Deployments; tell portal changes from out-of-band ones."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from audit.services import audit_event_record, change_record_sync
from core.kustomize import KustomizationError, image_version
from integrations.argocd import ArgoApplication as RemoteApp
from integrations.argocd import HistoryEntry
from integrations.gitrepo import GitError, GitMirror

from .appstate import POLLER, SHA, git_revision
from .mirrors import mirror_exists, mirror_for
from .models import Application, ArgoApplication, Commit, CommitTouch, Deployment, GitRepository


class HistoricVersions:
    """Read the image version an overlay pinned at an older revision (from the local mirror)."""

    def __init__(self) -> None:
        self._mirrors: dict[int, GitMirror | None] = {}
        self._cache: dict[tuple[int, str, str], str] = {}

    def version(self, repo: GitRepository | None, revision: str, path: str, app: str) -> str:
        if repo is None or not revision or not path or not SHA.fullmatch(revision):
            return ""
        key = (repo.pk, revision, path)
        if key not in self._cache:
            self._cache[key] = self._read(repo, revision, path, app)
        return self._cache[key]

    def _read(self, repo: GitRepository, revision: str, path: str, app: str) -> str:
        if repo.pk not in self._mirrors:
            self._mirrors[repo.pk] = mirror_for(repo) if mirror_exists(repo) else None
        mirror = self._mirrors[repo.pk]
        if mirror is None:
            return ""
        try:
            blob = mirror.file_at(revision, f"{path.strip('/')}/kustomization.yaml")
        except GitError:
            return ""
        if not blob:
            return ""
        try:
            return image_version(blob, app)[:200]
        except KustomizationError:
            return ""  # an overlay that was broken at that revision has no version to show


def _out_of_band(
    *,
    entry: HistoryEntry,
    revision: str,
    previous_revision: str,
    seqs: dict[str, int],
    touches: list[tuple[int, str]],
    has_repo: bool,
    production_like: bool = True,
) -> tuple[bool, str]:
    """Tell whether a deployment was not caused by a portal PR, and why.

    Outside production-like environments a plain Git commit (a CI image bump) is the normal change
    path, so only syncs started by hand or revisions missing from the tracked history count there.
    """
    if entry.initiated_by_username and not entry.initiated_by_automated:
        return True, f"initiated by {entry.initiated_by_username} (manual sync or rollback in Argo CD)"
    if not has_repo or not SHA.fullmatch(revision or ""):
        return False, "no Git repository to check"
    if revision not in seqs:
        return True, "revision not found in the ingested Git history"
    low = seqs.get(previous_revision, 0) if previous_revision else 0
    high = seqs[revision]
    in_range = [ref for seq, ref in touches if low < seq <= high]
    if not in_range:
        return False, "no change to this app in the deployed range"
    if any(in_range):
        return False, "deployed by a portal pull request"
    if not production_like:
        return False, "Git commits to a non-production environment"
    return (
        True,
        f"{len(in_range)} commit(s) without Promotion-Id/Rollback-Id and not from a promote/ or rollback/ branch",
    )


@dataclass
class _NewDeployment:
    """One Deployment about to be stored, with why it is (or is not) out of band."""

    row: Deployment
    reason: str
    revision_before: str  # what the app ran before this deployment
    version_before: str


@dataclass
class _AppHistory:
    """What the ingested Git history says about one locked Argo CD application."""

    locked: ArgoApplication
    app: Application | None
    repo: GitRepository | None
    seqs: dict[str, int] = field(default_factory=dict)  # deployed sha -> commit seq
    touches: list[tuple[int, str]] = field(default_factory=list)  # (seq, portal ref) of its commits

    @property
    def app_name(self) -> str:
        return self.app.name if self.app else self.locked.name

    @property
    def env_name(self) -> str:
        return self.locked.environment.name if self.locked.environment else ""

    @property
    def cluster_name(self) -> str:
        return self.locked.cluster.name if self.locked.cluster else ""

    @property
    def production_like(self) -> bool:
        return bool(self.locked.environment and self.locked.environment.production_like)


def deployments_record(
    *,
    argo_app: ArgoApplication,
    history: Sequence[HistoryEntry],
    remote: RemoteApp | None = None,
    versions: HistoricVersions | None = None,
) -> list[Deployment]:
    """Store each status.history entry as a Deployment exactly once; return the new rows.

    The Argo CD application row is locked first, so concurrent polls of the same app serialise and
    the second one finds the rows already there. Each new row writes `deployment.observed`.
    """
    versions = versions or HistoricVersions()
    with transaction.atomic():
        locked = (
            ArgoApplication.objects.select_for_update(of=("self",))
            .select_related("application__repository", "environment", "cluster")
            .get(pk=argo_app.pk)
        )
        known_rows = list(
            Deployment.objects.filter(argo_app=locked).values_list("history_id", "revision", "version")
        )
        known_ids = {hid for hid, _, _ in known_rows}
        fresh = [e for e in sorted(history, key=lambda e: e.id) if e.id not in known_ids]
        if not fresh:
            return []
        app = locked.application
        repo = app.repository if app is not None else None
        repo_urls = {repo.url, repo.url.removesuffix(".git")} if repo else set()
        sources = remote.sources if remote is not None else ()
        revision_of = {e.id: e.revision or git_revision(e.revisions, sources, repo_urls) for e in fresh}
        context = _app_history(
            locked=locked,
            app=app,
            repo=repo,
            revisions=set(revision_of.values()) | {r for _, r, _ in known_rows if r},
        )
        new = _deployments_build(
            context=context, fresh=fresh, revision_of=revision_of, known_rows=known_rows, versions=versions
        )
        Deployment.objects.bulk_create([n.row for n in new])
        for item in new:
            _deployment_observed_record(context=context, item=item)
        if context.production_like:
            for item in new:
                if item.row.out_of_band:
                    _out_of_band_change_record(context=context, item=item)
        return [n.row for n in new]


def _app_history(
    *, locked: ArgoApplication, app: Application | None, repo: GitRepository | None, revisions: set[str]
) -> _AppHistory:
    """Load the ingested commits of the deployed revisions and the app's portal-made changes."""
    context = _AppHistory(locked=locked, app=app, repo=repo)
    if repo is None or app is None:
        return context
    context.seqs = dict(
        Commit.objects.filter(
            repository=repo, sha__in=[r for r in revisions if SHA.fullmatch(r or "")]
        ).values_list("sha", "seq")
    )
    if context.seqs:
        env_q = Q(environment__isnull=True)
        if locked.environment_id:
            env_q |= Q(environment_id=locked.environment_id)
        context.touches = list(
            CommitTouch.objects.filter(env_q, application=app, seq__lte=max(context.seqs.values()))
            .order_by("seq")
            .values_list("seq", "commit__portal_ref")
        )
    return context


def _deployments_build(
    *,
    context: _AppHistory,
    fresh: list[HistoryEntry],
    revision_of: dict[int, str],
    known_rows: list[tuple[int, str, str]],
    versions: HistoricVersions,
) -> list[_NewDeployment]:
    """Build the unsaved Deployments of new history entries, oldest first."""
    locked = context.locked
    previous_by_id = {hid: revision for hid, revision, _ in known_rows}
    version_by_id = {hid: version for hid, _, version in known_rows}
    new: list[_NewDeployment] = []
    for entry in fresh:
        revision = revision_of[entry.id]
        earlier = [hid for hid in previous_by_id if hid < entry.id]
        previous_revision = previous_by_id[max(earlier)] if earlier else ""
        out_of_band, reason = _out_of_band(
            entry=entry,
            revision=revision,
            previous_revision=previous_revision,
            seqs=context.seqs,
            touches=context.touches,
            has_repo=context.repo is not None,
            production_like=context.production_like,
        )
        if revision == locked.deployed_revision and locked.images:
            images, version = list(locked.images), locked.version
        else:
            images = []
            version = versions.version(
                context.repo, revision, entry.source_path or locked.path, context.app_name
            )
        row = Deployment(
            argo_app=locked,
            history_id=entry.id,
            application=context.app,
            environment=locked.environment,
            cluster=locked.cluster,
            revision=(revision or "")[:64],
            revisions=list(entry.revisions),
            deploy_started_at=entry.deploy_started_at,
            deployed_at=entry.deployed_at or entry.deploy_started_at or timezone.now(),
            initiated_by=(
                entry.initiated_by_username or ("automated" if entry.initiated_by_automated else "")
            )[:200],
            automated=entry.initiated_by_automated,
            images=images,
            version=version,
            source_path=(entry.source_path or "")[:500],
            out_of_band=out_of_band,
        )
        new.append(
            _NewDeployment(
                row=row,
                reason=reason,
                revision_before=previous_revision,
                version_before=version_by_id[max(earlier)] if earlier else "",
            )
        )
        previous_by_id[entry.id] = revision
        version_by_id[entry.id] = version
    return new


def _deployment_observed_record(*, context: _AppHistory, item: _NewDeployment) -> None:
    """Write the `deployment.observed` audit event of one stored Deployment."""
    row, locked = item.row, context.locked
    env_name, cluster_name = context.env_name, context.cluster_name
    audit_event_record(
        action="deployment.observed",
        target_type="deployment",
        target_id=row.pk,
        target_label=f"{locked.name}#{row.history_id}",
        app=context.app_name,
        environment=env_name,
        cluster=cluster_name,
        shas=[s for s in [row.revision, *row.revisions] if SHA.fullmatch(s or "")][:8] or [row.revision],
        out_of_band=row.out_of_band,
        after={
            "argo_app": locked.name,
            "history_id": row.history_id,
            "revision": row.revision,
            "revisions": row.revisions,
            "version": row.version,
            "deployed_at": row.deployed_at.isoformat() if row.deployed_at else None,
            "initiated_by": row.initiated_by,
            "out_of_band": row.out_of_band,
            "reason": item.reason,
        },
        message=f"{context.app_name} {row.revision[:8]} deployed to {env_name or '?'}/{cluster_name or '?'}"
        + (" (out of band)" if row.out_of_band else ""),
        system_name=POLLER,
    )


def _out_of_band_change_record(*, context: _AppHistory, item: _NewDeployment) -> None:
    """Give an out-of-band deployment to a production-like environment its change record."""
    row, app_name = item.row, context.app_name
    env_name, cluster_name = context.env_name, context.cluster_name
    project = (context.app.project if context.app else "") or context.locked.project
    where = f"{env_name}/{cluster_name}" if cluster_name else env_name
    fields: dict[str, Any] = {}
    if row.initiated_by and not row.automated:
        fields["requester_name"] = row.initiated_by  # a person synced by hand in Argo CD
    result = context.locked.sync_result
    if result and result.get("revision") == row.revision:
        fields["sync_result"] = result  # Argo CD's last operation is the one that deployed this row
    change_record_sync(
        kind="out_of_band",
        source_type="deployment",
        source_id=str(row.pk),
        app=app_name,
        environment=env_name,
        project=project,
        clusters=[cluster_name] if cluster_name else [],
        title=f"Out-of-band deployment of {app_name} {row.version or row.revision[:8]} to {where}: {item.reason}"[
            :300
        ],
        revision_before=item.revision_before,
        revision_after=row.revision,
        versions_before={app_name: item.version_before} if item.version_before else {},
        versions_after={app_name: row.version} if row.version else {},
        deployed_at=row.deployed_at,
        outcome="succeeded",
        **fields,
    )
