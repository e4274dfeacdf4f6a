"""Build the app page: per environment its Argo CD apps, deployment timeline and pending commits."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from django.db.models import QuerySet, Subquery, Value
from django.db.models.functions import Coalesce

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
from .selectors import ActionRights


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
    return repo_commits.filter(
        touches__application=application,
        touches__environment=from_env,
        seq__lte=from_seq,
        seq__gt=Coalesce(matched_seq, last_to_seq, Value(0)),
    ).order_by("-seq")


@dataclass
class TimelineEntry:
    deployment: Deployment
    revert_sha: str  # the deployed commit, when the user may request its revert


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
        deployments = list(
            Deployment.objects.filter(application=application, environment=env)
            .select_related("cluster", "argo_app")
            .order_by("-deployed_at", "-history_id")[:timeline_limit]
        )
        commits = (
            list(commits_between(application=application, from_env=env, to_env=next_env)[:commits_limit])
            if next_env is not None and application.repository_id
            else []
        )
        section = EnvSection(
            env, [a for a in live if a.environment_id == env.pk], deployments, commits, next_env
        )
        if user is not None:
            section.can_promote_next = next_env is not None and rights.promote(
                application.project, next_env.name
            )
            section.can_rollback = bool(section.argo_apps) and rights.rollback(application.project, env.name)
        section.timeline = [
            TimelineEntry(d, d.revision if section.can_rollback and SHA.fullmatch(d.revision) else "")
            for d in deployments
        ]
        sections.append(section)
    return sections
