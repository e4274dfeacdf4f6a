"""Build the app page: per environment its Argo CD apps, deployment timeline and pending commits."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from django.db.models import Q, QuerySet, Subquery, Value
from django.db.models.functions import Coalesce
from django.urls import reverse

from audit.models import ChangeRecord

from .appstate import SHA
from .liveobjects import LiveObjects
from .models import (
    Application,
    ArgoApplication,
    Commit,
    CommitTouch,
    Deployment,
    Environment,
)
from .revisions import AppRevision, RevisionKey, app_revisions
from .selectors import HEALTH_BADGES, SYNC_BADGES, ActionRights


def _env_seq(application: Application, env: Environment, *, latest: bool) -> Subquery:
    revisions = (
        ArgoApplication.objects.filter(application=application, environment=env, deleted_at__isnull=True)
        .exclude(deployed_revision="")
        .values("deployed_revision")
    )
    commits = Commit.objects.filter(repository_id=application.repository_id, sha__in=revisions)
    return Subquery(commits.order_by("-seq" if latest else "seq").values("seq")[:1])


def commits_between(
    *, application: Application, from_env: Environment, to_env: Environment
) -> QuerySet[Commit]:
    """Return the commits to `from_env`'s overlay that `to_env` does not run yet (one query).

    Only commits that changed what a promotion copies count (`CommitTouch.carried`, the rule of
    inventory.carried the promotion preview applies too): a stage-only setting is never waiting.

    The gap starts after `from_env`'s latest deployment of the version `to_env` runs (or, when
    `from_env` never ran it, after `to_env`'s own last overlay change) and ends at what `from_env`
    runs. Same rule as the matrix's "N commits behind". Newest first.
    """
    repo_commits = Commit.objects.filter(repository_id=application.repository_id)
    from_seq = _env_seq(application, from_env, latest=True)
    to_seq = _env_seq(application, to_env, latest=False)
    to_version = (
        ArgoApplication.objects.filter(application=application, environment=to_env, deleted_at__isnull=True)
        .exclude(version="")
        .order_by("deployed_at")
        .values("version")[:1]
    )
    matched_revision = (
        Deployment.objects.filter(application=application, environment=from_env, version=Subquery(to_version))
        .order_by("-deployed_at", "-history_id")
        .values("revision")[:1]
    )
    matched_seq = Subquery(repo_commits.filter(sha=Subquery(matched_revision)).values("seq")[:1])
    last_to = CommitTouch.objects.filter(application=application, environment=to_env, seq__lte=to_seq)
    last_to_seq = Subquery(last_to.order_by("-seq").values("seq")[:1])
    carried = Q(touches__carried__isnull=True) | Q(touches__carried=True)  # the same touch row
    return repo_commits.filter(
        carried,
        touches__application=application,
        touches__environment=from_env,
        seq__lte=from_seq,
        seq__gt=Coalesce(matched_seq, last_to_seq, Value(0)),
    ).order_by("-seq")


AUTO_SYNC = "Argo CD (auto-sync)"
OUT_OF_BAND_HELP = (
    "Out of band: a change to a production-like environment that did not come through a portal "
    "pull request (a direct push, or a manual sync or rollback in Argo CD)."
)
_CHANGE_URLS = {"promotion": "promotions:detail", "rollback": "rollbacks:detail"}


@dataclass(frozen=True)
class ChangeLink:
    """The portal change (promotion or rollback) that shipped a revision: who asked, who approved."""

    label: str
    url: str
    requester: str
    approvers: list[str]
    pr_number: int | None
    pr_url: str
    incident: str
    outcome: str


@dataclass
class TimelineEntry:
    """One change in an environment: a revision, with the clusters that run it inside."""

    deployment: Deployment  # the newest deployment of the change
    revert_sha: str  # the app's deployed commit, when the user may request its revert
    clusters: list[Deployment] = field(default_factory=list)
    change: ChangeLink | None = None
    # The app's revision (inventory.revisions) beside Argo CD's synced one (the repository head
    # at sync time in a monorepo: often a commit to another app).
    revision: AppRevision = field(default_factory=lambda: AppRevision(argo=""))

    @property
    def initiator(self) -> str:
        """Who started it: the change's requester, the Argo CD user, or Argo CD's auto-sync."""
        if self.change is not None and self.change.requester:
            return self.change.requester
        named = [d.initiated_by for d in self.clusters if d.initiated_by and d.initiated_by != "automated"]
        if named:
            return named[0]
        return (
            AUTO_SYNC
            if any(d.automated or d.initiated_by == "automated" for d in self.clusters)
            else "unknown"
        )

    @property
    def out_of_band(self) -> bool:
        return any(d.out_of_band for d in self.clusters)


def _change_links(application: Application, revisions: set[str]) -> dict[tuple[str, str], ChangeLink]:
    """Return the portal change behind each ``(environment, revision)`` (one query; audit is the sink)."""
    links: dict[tuple[str, str], ChangeLink] = {}
    if not revisions:
        return links
    records = ChangeRecord.objects.filter(
        app=application.name, revision_after__in=revisions, source_type__in=_CHANGE_URLS
    ).order_by("occurred_at", "id")
    for record in records:
        source_id = record.evidence_target_id
        links[(record.environment, record.revision_after)] = ChangeLink(
            label=f"{record.source_type} #{source_id}",
            url=reverse(_CHANGE_URLS[record.source_type], args=[int(source_id)])
            if source_id.isdigit()
            else "",
            requester=record.requester_name,
            approvers=list(record.approvers),
            pr_number=record.pr_number,
            pr_url=record.pr_url,
            incident=record.incident,
            outcome=record.get_outcome_display(),
        )
    return links


def _group_by_change(deployments: list[Deployment], limit: int) -> list[list[Deployment]]:
    """Group an environment's deployments (newest first) into changes: one per revision."""
    groups: dict[str, list[Deployment]] = {}
    for d in deployments:
        groups.setdefault(d.revision or f"history-{d.argo_app_id}-{d.history_id}", []).append(d)
    return list(groups.values())[:limit]


@dataclass(frozen=True)
class RunningApp:
    """One Argo CD app of the environment with the app's revision there (inventory.revisions)."""

    argo: ArgoApplication
    revision: AppRevision


@dataclass
class EnvSection:
    environment: Environment
    argo_apps: list[ArgoApplication]
    deployments: list[Deployment]
    commits_ahead_of_next: list[Commit]
    next_env: Environment | None
    can_promote_next: bool = False
    can_rollback: bool = False
    timeline: list[TimelineEntry] = field(default_factory=list)
    live: LiveObjects | None = None  # Rollouts and ApplicationSets, read live by the page
    running: list[RunningApp] = field(default_factory=list)


def app_detail(
    *, application: Application, user: Any = None, timeline_limit: int = 20, commits_limit: int = 50
) -> list[EnvSection]:
    """Return per environment: current Argo CD apps, the deployment timeline, pending commits.

    With a `user`, each section also says which actions (promote to the next environment, roll
    back, revert one deployed commit) that user may start there.
    """
    envs = list(Environment.objects.all())
    rights = ActionRights(user)
    live = list(
        ArgoApplication.objects.filter(application=application, deleted_at__isnull=True)
        .select_related("instance", "cluster", "environment")
        .order_by("name")
    )
    sections = []
    for i, env in enumerate(envs):
        next_env = envs[i + 1] if i + 1 < len(envs) else None
        # Several clusters per change: read enough rows to fill `timeline_limit` changes.
        deployments = list(
            Deployment.objects.filter(application=application, environment=env)
            .select_related("cluster", "argo_app")
            .order_by("-deployed_at", "-history_id")[: timeline_limit * 4]
        )
        commits = (
            list(commits_between(application=application, from_env=env, to_env=next_env)[:commits_limit])
            if next_env is not None and application.repository_id
            else []
        )
        here = [a for a in live if a.environment_id == env.pk]
        section = EnvSection(env, here, deployments, commits, next_env)
        if user is not None:
            section.can_promote_next = next_env is not None and rights.promote(
                application.project, next_env.name
            )
            section.can_rollback = bool(section.argo_apps) and rights.rollback(application.project, env.name)
        section.timeline = [
            TimelineEntry(group[0], "", clusters=group)
            for group in _group_by_change(deployments, timeline_limit)
        ]
        sections.append(section)
    # The app's revision behind each Argo CD app (what it synced last, else what it compares with)
    # and each timeline row: one bulk call, at most three queries for the whole page.
    running = {
        a.pk: RevisionKey(application.repository_id, application.pk, a.environment_id, a.running_revision)
        for a in live
    }
    keys = {
        id(entry): RevisionKey(
            application.repository_id, application.pk, s.environment.pk, entry.deployment.revision
        )
        for s in sections
        for entry in s.timeline
    }
    found = app_revisions([*running.values(), *keys.values()])
    for section in sections:
        section.running = [RunningApp(a, found[running[a.pk]]) for a in section.argo_apps]
        for entry in section.timeline:
            entry.revision = found.get(keys[id(entry)]) or AppRevision(argo=entry.deployment.revision)
            # Reverting Argo CD's revision would revert whatever the head commit changed (another
            # app, in a monorepo): the revert is of the app's own commit.
            shown = entry.revision.shown
            entry.revert_sha = shown if section.can_rollback and SHA.fullmatch(shown) else ""
    # Records keep the app's revision; older ones may keep Argo CD's: either finds the change.
    links = _change_links(
        application,
        {r for s in sections for e in s.timeline for r in (e.deployment.revision, e.revision.app) if r},
    )
    for section in sections:
        for entry in section.timeline:
            name = section.environment.name
            entry.change = links.get((name, entry.revision.app)) or links.get(
                (name, entry.deployment.revision)
            )
    return sections


@dataclass(frozen=True)
class LaneStage:
    """One environment of an app's pipeline lane: what runs there and what waits to reach the next."""

    environment: str
    versions: list[str]
    revisions: list[str]  # the app's revisions (short)
    argo_revisions: list[str]  # Argo CD's synced revisions where they differ from the app's
    sync: str
    sync_badge: str
    health: str
    health_badge: str
    deployed: bool
    next_env: str
    waiting: int  # commits here that the next environment does not run yet
    waiting_versions: str  # "1.4.2 → 1.4.3" when the next environment runs another version
    can_promote: bool  # a promotion to the next environment is possible for this user


def _worst(values: list[str], order: list[str]) -> str:
    """Return the worst status of the clusters (first in `order`), or the only one."""
    for value in order:
        if value in values:
            return value
    return values[0] if values else "—"


def pipeline_lane(sections: list[EnvSection]) -> list[LaneStage]:
    """Build the dev → stage → prod lane from the app page's sections (no extra queries)."""
    lane = []
    for i, section in enumerate(sections):
        apps = section.argo_apps
        nxt = sections[i + 1] if i + 1 < len(sections) else None
        versions = sorted({a.version for a in apps if a.version})
        next_versions = sorted({a.version for a in nxt.argo_apps if a.version}) if nxt else []
        waiting = len(section.commits_ahead_of_next) if nxt else 0
        differs = bool(nxt and versions and versions != next_versions)
        sync = _worst([a.sync_status for a in apps if a.sync_status], ["OutOfSync", "Unknown", "Synced"])
        health = _worst(
            [a.health_status for a in apps if a.health_status],
            ["Degraded", "Missing", "Progressing", "Suspended", "Unknown", "Healthy"],
        )
        lane.append(
            LaneStage(
                environment=section.environment.name,
                versions=versions,
                revisions=sorted({r.revision.shown[:8] for r in section.running if r.revision.shown}),
                argo_revisions=sorted({r.revision.argo[:8] for r in section.running if r.revision.differs}),
                sync=sync,
                sync_badge=SYNC_BADGES.get(sync, "idle"),
                health=health,
                health_badge=HEALTH_BADGES.get(health, "idle"),
                deployed=bool(apps),
                next_env=section.next_env.name if section.next_env else "",
                waiting=waiting,
                waiting_versions=(
                    f"{', '.join(next_versions) or 'nothing'} → {', '.join(versions)}" if differs else ""
                ),
                can_promote=bool(section.can_promote_next and apps and (waiting or differs)),
            )
        )
    return lane
