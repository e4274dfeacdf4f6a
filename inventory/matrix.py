"""Build the deployment matrix page: one row per app, one cell per environment and cluster."""

from __future__ import annotations

import bisect
import re
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property
from typing import Any

from django.core.paginator import Page, Paginator
from django.db.models import Count, OuterRef, Q, QuerySet, Subquery
from django.utils import timezone

from core.querytext import query_page, query_text

from .models import (
    Application,
    ArgoApplication,
    Commit,
    Deployment,
    Environment,
    GitRepository,
)
from .revisions import AppRevision, RevisionKey, TouchSeqs, app_revisions, touches_of
from .selectors import (
    HEALTH_BADGES,
    PAGE_SIZE,
    SYNC_BADGES,
    ActionRights,
    stale_after,
    visible_applications,
    visible_instances,
)

_LABEL = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._/-]{0,120})=([A-Za-z0-9._:/-]{0,120})$")


@dataclass(frozen=True)
class MatrixFilters:
    project: str = ""
    environment: str = ""
    label: str = ""
    q: str = ""
    only_differing: bool = False
    page: int = 1
    at: datetime | None = None
    errors: tuple[str, ...] = ()

    @classmethod
    def from_query(cls, params: Any) -> MatrixFilters:
        errors: list[str] = []
        label = query_text(params, "label")
        if label and not _LABEL.match(label):
            errors.append("cluster label: use key=value")
            label = ""
        at = None
        raw_at = query_text(params, "at", limit=40)
        if raw_at:
            try:
                at = datetime.fromisoformat(raw_at)
                if timezone.is_naive(at):
                    at = timezone.make_aware(at, timezone.get_current_timezone())
            except (ValueError, OverflowError):
                errors.append("point in time: use YYYY-MM-DDTHH:MM")
        page = query_page(params)
        return cls(
            project=query_text(params, "project"),
            environment=query_text(params, "environment", limit=64),
            label=label,
            q=query_text(params, "q"),
            only_differing=(params.get("differing") or "") in ("1", "on", "true"),
            page=page,
            at=at,
            errors=tuple(errors),
        )


@dataclass
class Column:
    environment: Environment
    cluster_id: int | None
    cluster_name: str


@dataclass
class EnvGroup:
    environment: Environment
    span: int


@dataclass
class Cell:
    argo_name: str
    env_name: str
    instance: str
    cluster: str
    revision: str
    short_sha: str
    commit_url: str
    version: str
    full_version: str
    sync_status: str
    sync_badge: str
    health_status: str
    health_badge: str
    deployed_at: datetime | None
    behind: int | None
    behind_env: str
    stale: bool
    promote_to: str
    # Argo CD's synced revision when it is a later commit than the app's own (`revision`).
    argo_revision: str = ""
    deleted: bool = False
    # The next environment already runs this version: "Promote to" would have nothing to promote.
    next_runs_same: bool = False
    can_promote: bool = False  # release manager of the app's project for `promote_to`, something to promote
    can_rollback: bool = False  # on-call for the app's project in this environment

    @property
    def behind_note(self) -> str:
        """ "3 commits behind stage", or nothing when this environment is not behind."""
        if not self.behind:
            return ""
        return f"{self.behind} commit{'s' if self.behind != 1 else ''} behind {self.behind_env}"


@dataclass
class Row:
    application: Application
    slots: list[list[Cell]]


@dataclass
class StaleNotice:
    instance: str
    since: datetime | None
    error: str


@dataclass(frozen=True)
class MatrixSummary:
    """Counts over the cells shown: how many run, and how many need a look."""

    deployments: int = 0
    out_of_sync: int = 0
    degraded: int = 0
    stale: int = 0
    behind: int = 0

    @classmethod
    def of(cls, rows: list[Row]) -> MatrixSummary:
        cells = [cell for row in rows for slot in row.slots for cell in slot if not cell.deleted]
        return cls(
            deployments=len(cells),
            out_of_sync=sum(1 for c in cells if c.sync_status == "OutOfSync"),
            degraded=sum(1 for c in cells if c.health_status == "Degraded"),
            stale=sum(1 for c in cells if c.stale),
            behind=sum(1 for c in cells if c.behind),
        )


@dataclass
class Matrix:
    filters: MatrixFilters
    environments: list[Environment]
    env_groups: list[EnvGroup]
    columns: list[Column]
    rows: list[Row]
    page: Page
    stale: list[StaleNotice]
    # The project filter's choices, read when the template asks: the whole page does, the grid's
    # 15-second refresh (htmx, the filters stay on the page) does not.
    project_choices: QuerySet[Application, str]
    point_in_time: bool
    now: datetime = field(default_factory=timezone.now)
    summary: MatrixSummary = field(default_factory=MatrixSummary)

    @cached_property
    def projects(self) -> list[str]:
        return list(self.project_choices)


def behind_count(
    *,
    touches_prev: list[int],
    touches_here: list[int],
    here_seq: int | None,
    prev_seq: int | None,
    matched_seq: int | None,
    versions_differ: bool,
) -> int | None:
    """Count the previous environment's overlay changes that this environment does not run.

    `touches_prev` are the previous environment's carried changes only (inventory.carried): a
    change a promotion would not copy never reaches this environment, so it is never "behind".

    `here_seq`/`prev_seq` are the positions (Commit.seq) of the revisions both run. When the
    previous environment once ran this environment's version (its deployment at `matched_seq`),
    the changes after that are the gap. Otherwise: changes newer than this environment's own last
    overlay change, and at least one when the versions differ.
    """
    if prev_seq is None:
        return None
    if matched_seq is not None and matched_seq <= prev_seq:
        return bisect.bisect_right(touches_prev, prev_seq) - bisect.bisect_right(touches_prev, matched_seq)
    if here_seq is None:
        return None
    i = bisect.bisect_right(touches_here, here_seq)
    last_here = touches_here[i - 1] if i else 0
    count = max(0, bisect.bisect_right(touches_prev, prev_seq) - bisect.bisect_right(touches_prev, last_here))
    return max(count, 1) if versions_differ else count


@dataclass(slots=True)
class _ArgoRow:
    """What the page reads of one Argo CD app (now, or as it ran at the point in time)."""

    name: str
    application_id: int | None
    environment_id: int | None
    cluster_id: int | None
    instance_id: int
    instance_name: str
    cluster_name: str
    cluster_labels: dict[str, Any]
    revision: str  # what runs: ArgoApplication.running_revision, or the revision deployed at the time
    version: str
    deployed_at: datetime | None
    sync_status: str
    health_status: str
    deleted: bool


# The page's few hundred cell rows are read as plain values, not models: no instance, cluster and
# environment objects per row, no JSON column decoded (cluster labels only for a label filter).
_ROW_FIELDS = (
    "name", "application_id", "environment_id", "cluster_id", "instance_id", "instance__name",
    "cluster__name", "deployed_revision", "revision", "version", "deployed_at", "sync_status",
    "health_status", "deleted_at",
)  # fmt: skip
_AT_FIELDS = ("at_revision", "at_version", "at_deployed_at")


def _cell_source(at: datetime | None) -> QuerySet[ArgoApplication]:
    qs = ArgoApplication.objects.all()
    if at is None:
        return qs.filter(deleted_at__isnull=True)
    latest = Deployment.objects.filter(argo_app=OuterRef("pk"), deployed_at__lte=at).order_by(
        "-deployed_at", "-history_id"
    )
    return (
        qs.filter(Q(deleted_at__isnull=True) | Q(deleted_at__gt=at))
        .annotate(
            at_revision=Subquery(latest.values("revision")[:1]),
            at_version=Subquery(latest.values("version")[:1]),
            at_deployed_at=Subquery(latest.values("deployed_at")[:1]),
        )
        .filter(at_deployed_at__isnull=False)
    )


def _argo_rows(
    cells_qs: QuerySet[ArgoApplication], app_ids: list[int], filters: MatrixFilters
) -> list[_ArgoRow]:
    fields = (
        _ROW_FIELDS
        + (_AT_FIELDS if filters.at is not None else ())
        + (("cluster__labels",) if filters.label else ())
    )
    rows = []
    for v in cells_qs.filter(application_id__in=app_ids).order_by("name").values(*fields):
        if filters.at is None:
            # ArgoApplication.running_revision: the last sync's revision, else the compared one.
            revision, version, deployed_at = (
                v["deployed_revision"] or v["revision"],
                v["version"],
                v["deployed_at"],
            )
            sync, health = v["sync_status"], v["health_status"]
        else:
            revision, version, deployed_at = (
                v["at_revision"] or "",
                v["at_version"] or "",
                v["at_deployed_at"],
            )
            sync, health = "", ""  # not historical
        rows.append(
            _ArgoRow(
                name=v["name"],
                application_id=v["application_id"],
                environment_id=v["environment_id"],
                cluster_id=v["cluster_id"],
                instance_id=v["instance_id"],
                instance_name=v["instance__name"],
                cluster_name=v["cluster__name"] or "",
                cluster_labels=v.get("cluster__labels") or {},
                revision=revision,
                version=version,
                deployed_at=deployed_at,
                sync_status=sync,
                health_status=health,
                deleted=v["deleted_at"] is not None,
            )
        )
    return rows


def deployment_matrix(*, user: Any, filters: MatrixFilters, page_size: int = PAGE_SIZE) -> Matrix:
    """Build the app x environment (x cluster) matrix for one page of apps.

    The number of queries does not depend on the number of apps, environments or clusters.
    """
    now = timezone.now()
    all_envs = list(Environment.objects.all())
    envs = [e for e in all_envs if not filters.environment or e.name == filters.environment]
    # Other teams' instances (names, errors) are not shown to a scoped viewer.
    instances = list(visible_instances(user).order_by("name"))
    threshold = now - stale_after()
    stale_ids = {
        i.pk for i in instances if i.is_stale or i.last_success_at is None or i.last_success_at < threshold
    }
    stale = [
        StaleNotice(i.name, i.stale_since or i.last_success_at, i.last_error or "no successful poll recently")
        for i in instances
        if i.pk in stale_ids and filters.at is None
    ]

    cells_qs = _cell_source(filters.at)
    cell_filter = Q()
    if filters.environment:
        cell_filter &= Q(environment__name=filters.environment)
    if filters.label:
        key, _, value = filters.label.partition("=")
        cell_filter &= Q(**{f"cluster__labels__{key}": value})

    apps = visible_applications(user)
    if filters.project:
        apps = apps.filter(project=filters.project)
    if filters.q:
        apps = apps.filter(Q(name__icontains=filters.q) | Q(project__icontains=filters.q))
    apps = apps.filter(pk__in=cells_qs.filter(cell_filter).values("application_id"))
    if filters.only_differing:
        if filters.at is None:
            apps = apps.annotate(
                n_versions=Count(
                    "argo_apps__version",
                    filter=Q(argo_apps__deleted_at__isnull=True) & ~Q(argo_apps__version=""),
                    distinct=True,
                ),
                n_revisions=Count(
                    "argo_apps__deployed_revision",
                    filter=Q(argo_apps__deleted_at__isnull=True) & ~Q(argo_apps__deployed_revision=""),
                    distinct=True,
                ),
            ).filter(Q(n_versions__gt=1) | Q(n_versions=0, n_revisions__gt=1))
        else:
            differing = defaultdict(set)
            # at_version is annotated by the queryset's builder above, out of django-stubs' sight.
            for app_id, version in cells_qs.values_list("application_id", "at_version"):  # type: ignore[misc]
                differing[app_id].add(version)
            apps = apps.filter(pk__in=[a for a, v in differing.items() if len(v) > 1])
    paginator = Paginator(apps.select_related("repository").order_by("name"), page_size)
    page = paginator.get_page(filters.page)
    page_apps = list(page.object_list)
    app_ids = [a.pk for a in page_apps]

    argo_rows = _argo_rows(cells_qs, app_ids, filters) if app_ids else []
    apps_by_id = {a.pk: a for a in page_apps}  # the rows' apps: loaded once with the page, not joined
    env_names = {e.pk: e.name for e in all_envs}
    shown_rows = [r for r in argo_rows if _matches(r, filters, env_names)]

    # Columns: environments, split by cluster where an environment has several.
    clusters_by_env: dict[int, dict[int | None, str]] = defaultdict(dict)
    for r in shown_rows:
        if r.environment_id:
            clusters_by_env[r.environment_id][r.cluster_id] = r.cluster_name
    columns: list[Column] = []
    groups: list[EnvGroup] = []
    for env in envs:
        found = clusters_by_env.get(env.pk, {})
        if len(found) > 1:
            for cid, cname in sorted(found.items(), key=lambda kv: kv[1]):
                columns.append(Column(env, cid, cname))
            groups.append(EnvGroup(env, len(found)))
        else:
            cid, cname = next(iter(found.items()), (None, ""))
            columns.append(Column(env, None, cname))
            groups.append(EnvGroup(env, 1))

    # What each environment ran over time (version -> revision), to find where a version came from.
    past = Deployment.objects.filter(application_id__in=app_ids).exclude(version="")
    if filters.at is not None:
        past = past.filter(deployed_at__lte=filters.at)
    ran: dict[tuple[int, int, str], str] = {}
    for app_id, env_id, version, revision in past.order_by("deployed_at", "history_id").values_list(
        "application_id", "environment_id", "version", "revision"
    ):
        if env_id is not None:
            ran[(app_id, env_id, version)] = revision  # the latest deployment of that version wins

    # Positions of those revisions in the ingested history, and each app's overlay changes.
    revisions = ({r.revision for r in argo_rows} | set(ran.values())) - {""}
    repo_ids = {a.repository_id for a in page_apps if a.repository_id}
    seqs: dict[tuple[int, str], int] = {}
    if revisions and repo_ids:
        for repo_id, sha, seq in Commit.objects.filter(
            repository_id__in=repo_ids, sha__in=revisions
        ).values_list("repository_id", "sha", "seq"):
            seqs[(repo_id, sha)] = seq
    # One query: every touch (the app's revision) and the carried ones ("behind" counts only those).
    touches = touches_of(app_ids, [e.pk for e in all_envs])
    revision_of = app_revisions(
        [_revision_key(r, apps_by_id[r.application_id]) for r in argo_rows if r.application_id is not None],
        touches=touches.all,
        seqs=seqs,
    )
    env_index = {e.pk: i for i, e in enumerate(all_envs)}

    # The most advanced deployed revision per (app, environment): what "behind" compares with.
    best: dict[tuple[int, int], tuple[int, str]] = {}
    for r in argo_rows:
        app_of_row = apps_by_id.get(r.application_id or 0)
        if not r.environment_id or app_of_row is None:
            continue
        position = seqs.get((app_of_row.repository_id or 0, r.revision))
        if position is not None:
            app_env = (app_of_row.pk, r.environment_id)
            if app_env not in best or position > best[app_env][0]:
                best[app_env] = (position, r.version)
    context = _BehindContext(
        all_envs, env_names, env_index, seqs, touches.all, touches.carried, best, ran, revision_of
    )

    by_app: dict[int, list[_ArgoRow]] = defaultdict(list)
    for r in shown_rows:
        if r.application_id is not None:
            by_app[r.application_id].append(r)
    rights = ActionRights(user)
    point_in_time = filters.at is not None
    rows: list[Row] = []
    column_keys = [(col.environment.id, col.cluster_id) for col in columns]
    for app in page_apps:
        slots: list[list[Cell]] = []
        app_rows = by_app.get(app.id, [])
        for env_id, cluster_id in column_keys:
            cells = [
                _cell(r, app, context, stale_ids, point_in_time)
                for r in app_rows
                if r.environment_id == env_id and (cluster_id is None or r.cluster_id == cluster_id)
            ]
            for cell in cells:
                cell.can_promote = (
                    bool(cell.promote_to)
                    and not cell.next_runs_same
                    and rights.promote(app.project, cell.promote_to)
                )
                cell.can_rollback = rights.rollback(app.project, cell.env_name)
            slots.append(cells)
        rows.append(Row(app, slots))

    projects_qs = (
        visible_applications(user)
        .exclude(project="")
        .order_by("project")
        .values_list("project", flat=True)
        .distinct()
    )
    return Matrix(
        filters=filters,
        environments=all_envs,
        env_groups=groups,
        columns=columns,
        rows=rows,
        page=page,
        stale=stale,
        project_choices=projects_qs,
        point_in_time=filters.at is not None,
        now=now,
        summary=MatrixSummary.of(rows),
    )


def _matches(row: _ArgoRow, filters: MatrixFilters, env_names: dict[int, str]) -> bool:
    if filters.environment and env_names.get(row.environment_id or 0) != filters.environment:
        return False
    if filters.label:
        key, _, value = filters.label.partition("=")
        if row.cluster_id is None or str(row.cluster_labels.get(key, "")) != value:
            return False
    return True


@dataclass
class _BehindContext:
    envs: list[Environment]
    env_names: dict[int, str]
    env_index: dict[int, int]
    seqs: dict[tuple[int, str], int]
    touches: TouchSeqs
    carried: TouchSeqs
    best: dict[tuple[int, int], tuple[int, str]]
    ran: dict[tuple[int, int, str], str]
    app_revisions: dict[RevisionKey, AppRevision]


def _revision_key(row: _ArgoRow, app: Application) -> RevisionKey:
    return RevisionKey(app.repository_id, app.id, row.environment_id, row.revision)


def _short_version(version: str) -> str:
    return version[:19] + "…" if version.startswith("sha256:") and len(version) > 19 else version


def _cell(
    row: _ArgoRow, app: Application, ctx: _BehindContext, stale_ids: set[int], point_in_time: bool
) -> Cell:
    synced = row.revision
    revision_info = ctx.app_revisions.get(_revision_key(row, app)) or AppRevision(argo=synced)
    revision = revision_info.shown
    repo: GitRepository | None = app.repository
    repo_id = app.repository_id or 0
    app_id = app.id
    here_version = row.version
    idx = ctx.env_index.get(row.environment_id or 0)
    behind, behind_env, promote_to, next_runs_same = None, "", "", False
    if idx is not None:
        envs = ctx.envs
        if idx + 1 < len(envs):
            promote_to = envs[idx + 1].name
            next_version = ctx.best.get((app_id, envs[idx + 1].id), (None, ""))[1]
            next_runs_same = bool(next_version) and next_version == here_version
        if idx > 0:
            prev = envs[idx - 1]
            behind_env = prev.name
            prev_seq, prev_version = ctx.best.get((app_id, prev.id), (None, ""))
            matched = ctx.ran.get((app_id, prev.id, here_version)) if here_version else None
            behind = behind_count(
                touches_prev=ctx.carried.get((app_id, prev.id), []),
                touches_here=ctx.touches.get((app_id, row.environment_id or 0), []),
                here_seq=ctx.seqs.get((repo_id, synced)),
                prev_seq=prev_seq,
                matched_seq=ctx.seqs.get((repo_id, matched)) if matched else None,
                versions_differ=bool(here_version and prev_version and here_version != prev_version),
            )
    sync, health = row.sync_status, row.health_status
    stale = not point_in_time and row.instance_id in stale_ids
    return Cell(
        argo_name=row.name,
        env_name=ctx.env_names.get(row.environment_id or 0, ""),
        instance=row.instance_name,
        cluster=row.cluster_name,
        revision=revision,
        short_sha=revision[:8],
        commit_url=repo.commit_url(revision) if repo and revision else "",
        argo_revision=synced if revision_info.differs else "",
        version=_short_version(here_version),
        full_version=here_version,
        sync_status=sync or ("" if point_in_time else "unknown"),
        sync_badge="idle" if stale else SYNC_BADGES.get(sync, "idle"),
        health_status=health or ("" if point_in_time else "unknown"),
        health_badge="idle" if stale else HEALTH_BADGES.get(health, "idle"),
        deployed_at=row.deployed_at,
        behind=behind,
        behind_env=behind_env,
        stale=stale,
        promote_to=promote_to,
        next_runs_same=next_runs_same,
        deleted=row.deleted,
    )
