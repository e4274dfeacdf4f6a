"""factory_boy factories over the real database."""

from __future__ import annotations

import factory
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group

from inventory import models as inv


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = get_user_model()
        django_get_or_create = ("username",)
        skip_postgeneration_save = True

    username = factory.Sequence(lambda n: f"user{n}")
    email = factory.LazyAttribute(lambda u: f"{u.username}@example.com")

    @factory.post_generation
    def password(self, create, extracted, **kwargs):
        self.set_password(extracted or "demo-pass-1234")
        if create:
            self.save()

    @factory.post_generation
    def roles(self, create, extracted, **kwargs):
        if create and extracted:
            for role in extracted:
                # get_or_create: a transactional test runs after another one's flush emptied the
                # groups the accounts migration created.
                self.groups.add(Group.objects.get_or_create(name=role)[0])


def user_with_role(role: str, username: str | None = None):
    return UserFactory(username=username or role, roles=[role])


class EnvironmentFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = inv.Environment
        django_get_or_create = ("name",)

    name = "dev"
    order = factory.Sequence(int)


class ArgoInstanceFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = inv.ArgoInstance
        django_get_or_create = ("name",)

    name = "sandbox"
    url = "http://127.0.0.1:8081"
    token = "sandbox-argocd-token"
    allow_http = True


class GitRepositoryFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = inv.GitRepository
        django_get_or_create = ("name",)

    name = "gitops"
    url = "http://127.0.0.1:8082/acme/gitops.git"
    full_name = "acme/gitops"
    api_url = "http://127.0.0.1:8082"
    allow_http = True


class ApplicationFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = inv.Application
        django_get_or_create = ("name",)

    name = factory.Sequence(lambda n: f"app-{n}")
    project = "payments"
    repository = factory.SubFactory(GitRepositoryFactory)
