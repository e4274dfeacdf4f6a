"""An app's revision in an environment: the one definition every page and record uses.

Argo CD reports the Git revision it synced. With `targetRevision: main` that is the branch head at
the time of the sync (or, for `status.sync.revision`, at the last refresh): a commit that may have
changed another app entirely. The app's own revision is the newest commit, at or before Argo CD's,
that touched the app's paths in that environment (its overlay) or its shared base: the ingested
`CommitTouch` rows. Both are shown: the app's revision first, Argo CD's beside it when it differs.
When Argo CD's revision is not ingested (yet), the app's revision is unknown and Argo CD's stands in.
"""

from __future__ import annotations

import bisect
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import NamedTuple

from django.contrib.postgres.aggregates import ArrayAgg
from django.db import connection
from django.db.models import Q

from .appstate import SHA
from .models import Application, Commit, CommitTouch, Environment

TouchSeqs = dict[tuple[int, int | None], list[int]]


@dataclass(frozen=True)
class AppRevision:
    """Argo CD's synced revision and the app's own last commit at or before it."""

    argo: str
    app: str = ""

    @property
    def shown(self) -> str:
        """The app's revision when known, else Argo CD's."""
        return self.app or self.argo

    @property
    def differs(self) -> bool:
        """Argo CD synced a later commit than the app's last change (a commit to something else)."""
        return bool(self.app) and bool(self.argo) and self.app != self.argo


class RevisionKey(NamedTuple):
    repository_id: int | None
    application_id: int
    environment_id: int | None
    argo_revision: str


class Touches(NamedTuple):
    """Per (app, environment) the sorted seqs of all commits touching it, and of those carried."""

    all: TouchSeqs
    carried: TouchSeqs  # changed what a promotion out of the environment copies (inventory.carried)


def touches_of(app_ids: Iterable[int], env_ids: Iterable[int], *, base: bool = True) -> Touches:
    """Return every touch's seq and the carried ones per (app, environment), in one query.

    With `base`, the app's shared base is included under the key `(app, None)`. A touch whose
    `carried` was never evaluated (null) counts as carried.
    """
    apps, envs = list(set(app_ids)), list(set(env_ids))
    out = Touches(defaultdict(list), defaultdict(list))
    if not apps:
        return out
    where = Q(environment_id__in=envs) | Q(environment__isnull=True) if base else Q(environment_id__in=envs)
    qs = CommitTouch.objects.filter(where, application_id__in=apps)
    if connection.vendor == "postgresql":
        for app_id, env_id, seqs, carried in (
            qs.values("application_id", "environment_id")
            .annotate(
                seqs=ArrayAgg("seq", order_by="seq"),
                carried_seqs=ArrayAgg("seq", order_by="seq", filter=~Q(carried=False), default=[]),
            )
            .values_list("application_id", "environment_id", "seqs", "carried_seqs")
        ):
            out.all[(app_id, env_id)] = list(seqs)
            if carried:
                out.carried[(app_id, env_id)] = list(carried)
        return out
    for app_id, env_id, seq, flag in qs.order_by("seq").values_list(
        "application_id", "environment_id", "seq", "carried"
    ):
        out.all[(app_id, env_id)].append(seq)
        if flag is not False:
            out.carried[(app_id, env_id)].append(seq)
    return out


def touch_seqs(app_ids: Iterable[int], env_ids: Iterable[int], *, base: bool = True) -> TouchSeqs:
    """Return the sorted seqs of the commits touching each (app, environment) in one query.

    With `base`, the app's shared base is included under the key `(app, None)`.
    """
    return touches_of(app_ids, env_ids, base=base).all


def commit_seqs(repository_ids: Iterable[int | None], shas: Iterable[str]) -> dict[tuple[int, str], int]:
    """Return the position (Commit.seq) of each ingested SHA per repository, in one query."""
    repos = {r for r in repository_ids if r}
    wanted = {s for s in shas if SHA.fullmatch(s or "")}
    if not repos or not wanted:
        return {}
    return {
        (repo_id, sha): seq
        for repo_id, sha, seq in Commit.objects.filter(repository_id__in=repos, sha__in=wanted).values_list(
            "repository_id", "sha", "seq"
        )
    }


def _last_at_or_before(seqs: list[int], position: int) -> int:
    i = bisect.bisect_right(seqs, position)
    return seqs[i - 1] if i else 0


def app_revisions(
    keys: Iterable[RevisionKey],
    *,
    touches: TouchSeqs | None = None,
    seqs: dict[tuple[int, str], int] | None = None,
) -> dict[RevisionKey, AppRevision]:
    """Return each key's AppRevision in at most three queries (fewer with `touches`/`seqs` given)."""
    keys = set(keys)
    if not keys:
        return {}
    if seqs is None:
        seqs = commit_seqs((k.repository_id for k in keys), (k.argo_revision for k in keys))
    if touches is None:
        touches = touch_seqs(
            (k.application_id for k in keys), (k.environment_id for k in keys if k.environment_id)
        )
    chosen: dict[RevisionKey, tuple[int, int]] = {}
    for key in keys:
        position = seqs.get((key.repository_id or 0, key.argo_revision))
        if position is None:
            continue
        last = max(
            _last_at_or_before(touches.get((key.application_id, key.environment_id), []), position)
            if key.environment_id
            else 0,
            _last_at_or_before(touches.get((key.application_id, None), []), position),
        )
        if last:
            chosen[key] = (key.repository_id or 0, last)
    shas: dict[tuple[int, int], str] = {}
    if chosen:
        where = Q(pk__in=[])
        by_repo: dict[int, set[int]] = defaultdict(set)
        for repo_id, seq in chosen.values():
            by_repo[repo_id].add(seq)
        for repo_id, wanted in by_repo.items():
            where |= Q(repository_id=repo_id, seq__in=wanted)
        shas = {
            (r, s): sha
            for r, s, sha in Commit.objects.filter(where).values_list("repository_id", "seq", "sha")
        }
    return {
        key: AppRevision(argo=key.argo_revision, app=shas.get(chosen[key], "") if key in chosen else "")
        for key in keys
    }


def app_revision(application: Application, environment: Environment, argo_revision: str) -> AppRevision:
    """Return the revision of one app in one environment, given the revision Argo CD synced."""
    key = RevisionKey(application.repository_id, application.pk, environment.pk, argo_revision)
    return app_revisions([key])[key]
