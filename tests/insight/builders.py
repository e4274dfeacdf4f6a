"""factory_boy factories for the rows insight reads (kept here: insight only reads them)."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime

import factory

from audit.models import ChangeRecord
from inventory import models as inv
from promotions.models import Promotion, PromotionItem
from rollbacks.models import RollbackRequest
from tests.factories import (
    ApplicationFactory,
    ArgoInstanceFactory,
    EnvironmentFactory,
    GitRepositoryFactory,
)


def at(text: str) -> datetime:
    """Return an aware UTC datetime from "2025-03-11 12:00"."""
    return datetime.strptime(text, "%Y-%m-%d %H:%M").replace(tzinfo=UTC)


def sha(name: str) -> str:
    """A stable 40-hex SHA for a readable name ("c1" → sha1("c1"))."""
    return hashlib.sha1(name.encode()).hexdigest()


class ClusterFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = inv.Cluster
        django_get_or_create = ("instance", "server")

    instance = factory.SubFactory(ArgoInstanceFactory)
    name = "prod-eu-west-1"
    server = factory.LazyAttribute(lambda c: f"https://{c.name}.k8s.example")
    labels = factory.LazyAttribute(lambda c: {"env": c.name.split("-")[0]})


class ArgoApplicationFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = inv.ArgoApplication
        django_get_or_create = ("instance", "name")

    instance = factory.SubFactory(ArgoInstanceFactory)
    application = factory.SubFactory(ApplicationFactory)
    environment = factory.SubFactory(EnvironmentFactory)
    cluster = factory.SubFactory(ClusterFactory)
    name = factory.LazyAttribute(lambda a: f"{a.application.name}-{a.cluster.name}")
    project = factory.LazyAttribute(lambda a: a.application.project)
    sync_status = "Synced"
    health_status = "Healthy"


class DeploymentFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = inv.Deployment

    argo_app = factory.SubFactory(ArgoApplicationFactory)
    history_id = factory.Sequence(lambda n: n + 1)
    application = factory.LazyAttribute(lambda d: d.argo_app.application)
    environment = factory.LazyAttribute(lambda d: d.argo_app.environment)
    cluster = factory.LazyAttribute(lambda d: d.argo_app.cluster)
    revision = factory.LazyFunction(lambda: sha("unknown"))
    deployed_at = factory.LazyFunction(lambda: at("2025-03-11 12:00"))


class CommitFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = inv.Commit

    repository = factory.SubFactory(GitRepositoryFactory)
    sha = factory.Sequence(lambda n: sha(f"commit-{n}"))
    seq = factory.Sequence(lambda n: n + 1)
    parents = factory.LazyFunction(list)
    author_name = "Dev"
    author_email = "dev@example.com"
    authored_at = factory.LazyAttribute(lambda c: c.committed_at)
    committer_name = "Dev"
    committed_at = factory.LazyFunction(lambda: at("2025-03-11 08:00"))
    message = "change"


class CommitTouchFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = inv.CommitTouch

    commit = factory.SubFactory(CommitFactory)
    application = factory.SubFactory(ApplicationFactory)
    environment = None
    seq = factory.LazyAttribute(lambda t: t.commit.seq)
    paths = factory.LazyFunction(list)


class RollbackFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = RollbackRequest

    application = factory.SubFactory(ApplicationFactory)
    environment = factory.SubFactory(EnvironmentFactory)
    mode = "previous"
    state = RollbackRequest.State.REQUESTED
    requested_by_name = "oncall"
    reason = "degraded after release"
    base_branch = "main"
    current_revision = factory.LazyFunction(lambda: sha("current"))


class PromotionFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Promotion

    source_env = factory.SubFactory(EnvironmentFactory, name="stage", order=1)
    target_env = factory.SubFactory(EnvironmentFactory, name="prod", order=2, production_like=True)
    repository = factory.SubFactory(GitRepositoryFactory)
    requested_by_name = "release"


class PromotionItemFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = PromotionItem

    promotion = factory.SubFactory(PromotionFactory)
    application = factory.SubFactory(ApplicationFactory)
    target_env = factory.LazyAttribute(lambda i: i.promotion.target_env)
    active = False


class ChangeRecordFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = ChangeRecord

    kind = "promotion"
    source_type = "promotion"
    source_id = factory.Sequence(lambda n: str(n + 1))
    app = "pay-api"
    environment = "prod"
    project = "payments"
    requester_name = "alice"
    approvers = factory.LazyFunction(lambda: ["bob"])
    separation_of_duties_ok = True
    outcome = "succeeded"
