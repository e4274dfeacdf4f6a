"""Record Argo CD history entries as Deployments; tell portal changes from out-of-band ones."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from django.db import transaction
from django.utils import timezone

from audit.services import audit_events_record, change_records_create
from core.bulkinsert import models_copy_insert
from core.kustomize import KustomizationError, image_version
from integrations.argocd import ArgoApplication as RemoteApp
from integrations.argocd import HistoryEntry
from integrations.gitrepo import GitError, GitMirror

from .appstate import POLLER, SHA, git_revision, values_source
from .carried import helm_image_version
from .mirrors import mirror_exists, mirror_for
from .models import Application, ArgoApplication, Commit, CommitTouch, Deployment, GitRepository


def _is_values_file(path: str) -> bool:
    return path.endswith((".yaml", ".yml"))


class HistoricVersions:
    """Read the image version an overlay pinned at an older revision (from the local mirror).

    `prefetch` reads many (revision, overlay) pairs with one `git cat-file --batch` per repository;
    versions are cached by (repository, revision, path) and parsed once per (blob, app).
    """

    def __init__(self) -> None:
        self._mirrors: dict[int, GitMirror | None] = {}
        self._cache: dict[tuple[int, str, str], str] = {}
        self._by_blob: dict[tuple[str, str], str] = {}

    @staticmethod
    def _file(path: str) -> str:
        """An overlay directory's kustomization, or a Helm app's values file (a path to a file)."""
        path = path.strip("/")
        return path if _is_values_file(path) else f"{path}/kustomization.yaml"

    def _wanted(self, repo: GitRepository | None, revision: str, path: str) -> bool:
        return repo is not None and bool(revision and path) and bool(SHA.fullmatch(revision))

    def _mirror(self, repo: GitRepository) -> GitMirror | None:
        if repo.pk not in self._mirrors:
            self._mirrors[repo.pk] = mirror_for(repo) if mirror_exists(repo) else None
        return self._mirrors[repo.pk]

    def prefetch(self, wanted: Iterable[tuple[GitRepository | None, str, str, str]]) -> None:
        """Read the versions of many (repo, revision, path, app) at once (missing ones read as "")."""
        todo: dict[int, dict[tuple[str, str], tuple[GitRepository, str, str, str]]] = {}
        for repo, revision, path, app in wanted:
            if (
                repo is None
                or not self._wanted(repo, revision, path)
                or (repo.pk, revision, path) in self._cache
            ):
                continue
            todo.setdefault(repo.pk, {})[(revision, self._file(path))] = (repo, revision, path, app)
        for pairs in todo.values():
            repo = next(iter(pairs.values()))[0]
            mirror = self._mirror(repo)
            try:
                found = mirror.files_at(pairs) if mirror is not None else {}
            except GitError:
                found = {}
            for pair, (_, revision, path, app) in pairs.items():
                blob = found.get(pair)
                parsed = self._parse(blob[0], blob[1], app, _is_values_file(path)) if blob else ""
                self._cache[(repo.pk, revision, path)] = parsed

    def _parse(self, blob_id: str, content: bytes, app: str, values: bool = False) -> str:
        key = (blob_id, app)
        if key not in self._by_blob:
            try:
                if values:
                    self._by_blob[key] = helm_image_version(content)[:200]
                else:
                    self._by_blob[key] = image_version(content, app)[:200] if content else ""
            except KustomizationError:
                self._by_blob[key] = ""  # an overlay that was broken at that revision has no version
        return self._by_blob[key]

    def version(self, repo: GitRepository | None, revision: str, path: str, app: str) -> str:
        if repo is None or not self._wanted(repo, revision, path):
            return ""
        key = (repo.pk, revision, path)
        if key not in self._cache:
            self.prefetch([(repo, revision, path, app)])
        return self._cache.get(key, "")


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
    values_file: str = ""  # a multi-source Helm app's values file in the repository (its version)

    def source_of(self, entry: HistoryEntry) -> str:
        """Where the version of a history entry is read: the values file, else the source's path."""
        return self.values_file or entry.source_path or self.locked.path

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
    """Store each status.history entry of one app as a Deployment exactly once; return the new rows."""
    return deployments_record_many(items=[(argo_app, history, remote)], versions=versions)


def deployments_record_many(
    *,
    items: Sequence[tuple[ArgoApplication, Sequence[HistoryEntry], RemoteApp | None]],
    versions: HistoricVersions | None = None,
    written: bool = False,
) -> list[Deployment]:
    """Store the status.history entries of many apps as Deployments exactly once; return the new rows.

    `written`: the caller inserted or updated these Argo CD rows in the current transaction (with
    their app, environment and cluster set): they are locked but not read again.

    One pass for the whole list: the Argo CD application rows are locked first (in id order), so
    concurrent polls of the same apps serialise and the second one finds the rows already there;
    then one query for the known history ids, one for the deployed commits of each repository, one
    for the apps' portal-made touches, one `git cat-file --batch` for the historic overlays, one
    bulk insert, and one batched append of the `deployment.observed` events (app by app, oldest
    first, as before).
    """
    versions = versions or HistoricVersions()
    wanted = {argo_app.pk: (history, remote) for argo_app, history, remote in items if history}
    if not wanted:
        return []
    with transaction.atomic():
        if written:
            # The caller wrote these rows in this transaction: lock them in the same order, and use
            # its instances (with their app, environment and cluster) instead of reading them again.
            given = {argo_app.pk: argo_app for argo_app, _, _ in items}
            locked_rows = [
                given[pk]
                for pk in ArgoApplication.objects.select_for_update()
                .filter(pk__in=list(wanted))
                .order_by("pk")
                .values_list("pk", flat=True)
            ]
        else:
            locked_rows = list(
                ArgoApplication.objects.select_for_update(of=("self",))
                .select_related("application", "environment", "cluster")
                .filter(pk__in=list(wanted))
                .order_by("pk")
            )
        # The few repositories once each, not joined per row (each row would decrypt its token again).
        repos = GitRepository.objects.in_bulk(
            {
                r.application.repository_id
                for r in locked_rows
                if r.application and r.application.repository_id
            }
        )
        for row in locked_rows:
            if row.application is not None and row.application.repository_id in repos:
                row.application.repository = repos[row.application.repository_id]
        known: dict[int, list[tuple[int, str, str]]] = {}
        for argo_id, hid, revision, version in Deployment.objects.filter(
            argo_app_id__in=list(wanted)
        ).values_list("argo_app_id", "history_id", "revision", "version"):
            known.setdefault(argo_id, []).append((hid, revision, version))
        pending: list[tuple[_AppHistory, list[HistoryEntry], dict[int, str], list[tuple[int, str, str]]]] = []
        locked_by_id = {row.pk: row for row in locked_rows}
        for pk, (history, remote) in wanted.items():  # in the caller's order (the ledger's order)
            locked = locked_by_id.get(pk)
            if locked is None:
                continue
            known_rows = known.get(locked.pk, [])
            known_ids = {hid for hid, _, _ in known_rows}
            fresh = [e for e in sorted(history, key=lambda e: e.id) if e.id not in known_ids]
            if not fresh:
                continue
            app = locked.application
            repo = app.repository if app is not None else None
            repo_urls = {repo.url, repo.url.removesuffix(".git")} if repo else set()
            sources = remote.sources if remote is not None else ()
            revision_of = {e.id: e.revision or git_revision(e.revisions, sources, repo_urls) for e in fresh}
            values = values_source(locked.sources or [], repo_urls) if locked.is_multi_source else None
            context = _AppHistory(
                locked=locked, app=app, repo=repo, values_file=values.files[0] if values else ""
            )
            context.seqs = {r: 0 for r in set(revision_of.values()) | {r for _, r, _ in known_rows if r}}
            pending.append((context, fresh, revision_of, known_rows))
        if not pending:
            return []
        _histories_load([context for context, _, _, _ in pending])
        versions.prefetch(
            (context.repo, revision_of[entry.id], context.source_of(entry), context.app_name)
            for context, fresh, revision_of, _ in pending
            for entry in fresh
            if not (revision_of[entry.id] == context.locked.deployed_revision and context.locked.images)
        )
        built = [
            (context, item)
            for context, fresh, revision_of, known_rows in pending
            for item in _deployments_build(
                context=context,
                fresh=fresh,
                revision_of=revision_of,
                known_rows=known_rows,
                versions=versions,
            )
        ]
        models_copy_insert([item.row for _, item in built])
        audit_events_record(_deployment_observed_event(context=context, item=item) for context, item in built)
        change_records_create(
            _out_of_band_change(context=context, item=item)
            for context, item in built
            if context.production_like and item.row.out_of_band
        )
        return [item.row for _, item in built]


def _histories_load(contexts: list[_AppHistory]) -> None:
    """Load the ingested commits of the deployed revisions and the apps' portal-made changes.

    `context.seqs` holds the revisions to look up on the way in, and their commit seqs (the ones
    found in the ingested history) on the way out.
    """
    by_repo: dict[int, set[str]] = {}
    for context in contexts:
        wanted, context.seqs = context.seqs, {}
        if context.repo is not None and context.app is not None:
            by_repo.setdefault(context.repo.pk, set()).update(r for r in wanted if SHA.fullmatch(r or ""))
            context.seqs = dict.fromkeys(wanted, 0)
    seq_of: dict[tuple[int, str], int] = {}
    for repo_id, shas in by_repo.items():
        for sha, seq in Commit.objects.filter(repository_id=repo_id, sha__in=sorted(shas)).values_list(
            "sha", "seq"
        ):
            seq_of[(repo_id, sha)] = seq
    for context in contexts:
        if context.repo is not None:
            context.seqs = {
                r: seq_of[(context.repo.pk, r)] for r in context.seqs if (context.repo.pk, r) in seq_of
            }
    with_seqs = [c for c in contexts if c.seqs and c.app is not None]
    if not with_seqs:
        return
    high = max(max(c.seqs.values()) for c in with_seqs)
    touches: dict[tuple[int, int | None], list[tuple[int, str]]] = {}
    for app_id, env_id, seq, ref in (
        CommitTouch.objects.filter(application_id__in={c.app.pk for c in with_seqs if c.app}, seq__lte=high)
        .order_by("seq")
        .values_list("application_id", "environment_id", "seq", "commit__portal_ref")
    ):
        touches.setdefault((app_id, env_id), []).append((seq, ref))
    for context in with_seqs:
        assert context.app is not None
        limit = max(context.seqs.values())
        env = context.locked.environment_id
        mine = touches.get((context.app.pk, None), []) + (
            touches.get((context.app.pk, env), []) if env else []
        )
        context.touches = sorted((t for t in mine if t[0] <= limit), key=lambda t: t[0])


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
            version = versions.version(context.repo, revision, context.source_of(entry), context.app_name)
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


def _deployment_observed_event(*, context: _AppHistory, item: _NewDeployment) -> dict[str, Any]:
    """Return the `deployment.observed` audit event of one stored Deployment (for audit_events_record)."""
    row, locked = item.row, context.locked
    env_name, cluster_name = context.env_name, context.cluster_name
    return dict(
        action="deployment.observed",
        target_type="deployment",
        target_id=row.pk,
        target_label=f"{locked.name}#{row.history_id}",
        app=context.app_name,
        # The deployment's own audit scope (Deployment.audit_scope), without a query per event.
        project=context.app.project if context.app else "",
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


def _out_of_band_change(*, context: _AppHistory, item: _NewDeployment) -> dict[str, Any]:
    """Return the change record of an out-of-band deployment to a production-like environment."""
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
    return dict(
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
