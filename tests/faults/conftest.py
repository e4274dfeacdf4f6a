"""Fixtures of the fault tests: the sandbox (tests/sandbox_fixtures.py) plus fault proxies and users."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.faults.proxy import FaultProxy
from tests.sandbox_fixtures import *  # noqa: F403 - fixtures


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    """Keep each phase's report on the item, so fixtures can save worker logs of failed tests."""
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report


@pytest.fixture
def argo_proxy(argocd) -> Iterator[FaultProxy]:
    """A man-in-the-middle between the portal and the emulated Argo CD."""
    proxy = FaultProxy(argocd.base_url)
    proxy.start()
    yield proxy
    proxy.stop()


@pytest.fixture
def forge_proxy(forge) -> Iterator[FaultProxy]:
    """A man-in-the-middle between the portal and the sandbox forge (REST and smart-HTTP git)."""
    proxy = FaultProxy(forge.base_url)
    proxy.start()
    yield proxy
    proxy.stop()


@pytest.fixture
def workspaces_dir(settings, tmp_path):
    settings.WORKSPACES_DIR = tmp_path / "workspaces"
    return settings.WORKSPACES_DIR


@pytest.fixture
def people(db):
    """One user per role that promotions need (requester and a distinct approver)."""
    from django.contrib.auth.models import Group

    from accounts.roles import ALL_ROLES
    from tests.factories import UserFactory

    for role in ALL_ROLES:
        Group.objects.get_or_create(name=role)
    return {
        "rm": UserFactory(username="rita", roles=["release_manager"]),
        "rm2": UserFactory(username="rob", roles=["release_manager"]),
        "approver": UserFactory(username="alex", roles=["approver"]),
    }
