"""Read Argo Rollouts and ApplicationSets live from Argo CD for the app, promotion and rollback pages.

Nothing here is stored: pages read these on load with a short timeout, and an unreachable Argo CD
shows as an error line on the page, never as an exception.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from integrations.argocd import ArgoCDClient, ArgoCDError
from integrations.argocd.resources import (
    ROLLOUT_GROUP,
    ROLLOUT_KIND,
    ApplicationSet,
    AppSetApplicationStatus,
    Rollout,
)

from .clients import argocd_client_for
from .models import ArgoApplication

# Pages wait at most this long per Argo CD call (the poller's timeout is far longer).
LIVE_READ_TIMEOUT_SECONDS = 5.0


@dataclass(frozen=True)
class RolloutView:
    """The Rollouts of one Argo CD app (or why they could not be read)."""

    argo_app: str
    rollouts: tuple[Rollout, ...] = ()
    error: str = ""


@dataclass(frozen=True)
class AppSetStep:
    """One RollingSync step: its selector and the apps in it with their state."""

    number: int
    selector: str
    apps: tuple[AppSetApplicationStatus, ...]


@dataclass(frozen=True)
class AppSetView:
    """The ApplicationSet that generated one Argo CD app, its generators and its progressive steps."""

    argo_app: str
    name: str = ""
    generators: str = ""
    strategy: str = ""
    steps: tuple[AppSetStep, ...] = ()
    error: str = ""


@dataclass
class _Clients:
    cache: dict[int, ArgoCDClient] = field(default_factory=dict)

    def get(self, row: ArgoApplication) -> ArgoCDClient:
        if row.instance_id not in self.cache:
            self.cache[row.instance_id] = argocd_client_for(
                row.instance, read_timeout=LIVE_READ_TIMEOUT_SECONDS
            )
        return self.cache[row.instance_id]


def argo_rollouts(rows: Iterable[ArgoApplication]) -> list[RolloutView]:
    """Read the Rollouts of each app: its resource tree, then each Rollout's live object."""
    clients = _Clients()
    views = []
    for row in rows:
        try:
            client = clients.get(row)
            nodes = [
                n
                for n in client.resource_tree(row.name).nodes
                if n.group == ROLLOUT_GROUP and n.kind == ROLLOUT_KIND
            ]
            rollouts = tuple(
                client.rollout(row.name, namespace=n.namespace, resource_name=n.name) for n in nodes
            )
        except ArgoCDError as exc:
            views.append(RolloutView(argo_app=row.name, error=f"Rollouts unreadable: {exc}"))
            continue
        if rollouts:
            views.append(RolloutView(argo_app=row.name, rollouts=rollouts))
    return views


def rollouts_aborted(views: Sequence[RolloutView]) -> list[str]:
    """Describe every aborted Rollout with Argo Rollouts' own message (empty: none aborted)."""
    return [
        f"{view.argo_app}: Rollout {r.name} aborted: {r.message or 'no message'}"
        for view in views
        for r in view.rollouts
        if r.aborted
    ]


def _steps(app_set: ApplicationSet) -> tuple[AppSetStep, ...]:
    return tuple(
        AppSetStep(
            number=i,
            selector=selector,
            apps=tuple(s for s in app_set.application_status if s.step == str(i)),
        )
        for i, selector in enumerate(app_set.steps, start=1)
    )


def argo_application_sets(rows: Iterable[ArgoApplication]) -> list[AppSetView]:
    """Name the ApplicationSet (and its generators) of each app: ownerReferences, else the set's resources."""
    clients = _Clients()
    sets_by_instance: dict[int, tuple[ApplicationSet, ...]] = {}
    views = []
    for row in rows:
        try:
            client = clients.get(row)
            if row.instance_id not in sets_by_instance:
                sets_by_instance[row.instance_id] = client.list_application_sets()
            sets = sets_by_instance[row.instance_id]
            owner = client.application_owner_set(row.name)
        except ArgoCDError as exc:
            views.append(AppSetView(argo_app=row.name, error=f"ApplicationSets unreadable: {exc}"))
            continue
        match = next(
            (
                s
                for s in sets
                if owner is not None and (s.uid == owner[1] or (not owner[1] and s.name == owner[0]))
            ),
            None,
        ) or next((s for s in sets if row.name in s.applications), None)
        if match is None:
            continue
        views.append(
            AppSetView(
                argo_app=row.name,
                name=match.name,
                generators=", ".join(match.generators) or "—",
                strategy=match.strategy or "all at once",
                steps=_steps(match) if match.strategy == "RollingSync" else (),
            )
        )
    return views


@dataclass(frozen=True)
class LiveObjects:
    """What a page shows live beside the stored state of some Argo CD apps."""

    rollouts: list[RolloutView]
    app_sets: list[AppSetView]

    @property
    def aborted(self) -> list[str]:
        return rollouts_aborted(self.rollouts)


def live_objects(rows: Sequence[ArgoApplication], *, app_sets: bool = True) -> LiveObjects:
    """Read the Rollouts (and, unless told not to, the ApplicationSets) of some Argo CD apps."""
    rows = list(rows)
    return LiveObjects(rollouts=argo_rollouts(rows), app_sets=argo_application_sets(rows) if app_sets else [])
