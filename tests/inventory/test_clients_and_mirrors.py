"""The one Argo CD client factory and the one mirror accessor."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest

from integrations.argocd import ArgoCDUnavailable
from integrations.gitrepo import UnsafeRemote
from inventory.clients import argocd_client_for
from inventory.mirrors import mirror_exists, mirror_for, mirror_path_for
from promotions import observed
from tests.factories import ArgoInstanceFactory, GitRepositoryFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def silent_server() -> Iterator[str]:
    """Accept connections and never answer: only the read timeout ends a request."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.1)
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            held.append(conn)

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.getsockname()[1]}"
    stop.set()
    thread.join(2)
    for conn in held:
        conn.close()
    server.close()


@pytest.mark.parametrize(
    "factory", [argocd_client_for, observed.argo_client], ids=["inventory", "promotions"]
)
def test_argo_cd_reads_give_up_after_the_configured_read_timeout(settings, silent_server, factory):
    settings.ARGOCD_CONNECT_TIMEOUT_SECONDS = 2
    settings.ARGOCD_READ_TIMEOUT_SECONDS = 0.5
    instance = ArgoInstanceFactory(url=silent_server)
    started = time.monotonic()
    with pytest.raises(ArgoCDUnavailable):
        factory(instance).list_clusters()
    # The client may retry an idempotent read once; either way far below the 15 s / 30 s defaults.
    assert time.monotonic() - started < 5


def test_promotions_read_argo_cd_through_the_inventory_factory():
    assert observed.argo_client is argocd_client_for


def test_mirror_lives_under_mirrors_dir_and_exists_only_once_cloned(settings, tmp_path):
    settings.MIRRORS_DIR = tmp_path
    repo = GitRepositoryFactory()
    assert mirror_for(repo).path == mirror_path_for(repo) == tmp_path / "gitops.git"
    assert not mirror_exists(repo)
    (tmp_path / "gitops.git").mkdir()
    (tmp_path / "gitops.git" / "HEAD").write_text("ref: refs/heads/main\n")
    assert mirror_exists(repo)


def test_file_remotes_only_for_the_sandbox_outside_production(settings, tmp_path):
    settings.MIRRORS_DIR = tmp_path
    repo = GitRepositoryFactory(name="local", url=str(tmp_path / "origin.git"))
    settings.SANDBOX_ENABLED, settings.PRODUCTION = True, False
    assert mirror_for(repo).remote_url == str(tmp_path / "origin.git")
    settings.SANDBOX_ENABLED, settings.PRODUCTION = True, True
    with pytest.raises(UnsafeRemote):
        mirror_for(repo)
    settings.SANDBOX_ENABLED, settings.PRODUCTION = False, False
    with pytest.raises(UnsafeRemote):
        mirror_for(repo)
