"""ArgoCDClient against the sandbox Argo CD emulator (skipped until the emulator exists)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from integrations.argocd import ArgoCDAuthError, ArgoCDClient, session_login

argocd_module = pytest.importorskip("sandbox.argocd")
repogen = pytest.importorskip("sandbox.repogen")
if not hasattr(argocd_module, "ArgoCDEmulator"):
    pytest.skip("sandbox.argocd.ArgoCDEmulator is not available yet", allow_module_level=True)

TOKEN = "sandbox-argocd-token"


@pytest.fixture(scope="module")
def emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    root: Path = tmp_path_factory.mktemp("argocd")
    generated = repogen.generate_repo(root / "demo.git", apps=3, clusters=1, commits=60, seed=5)
    emu = argocd_module.ArgoCDEmulator(
        repo_path=generated.path, repo_url="http://127.0.0.1:1/acme/gitops.git"
    )
    emu.generated = generated
    emu.url = emu.start()
    yield emu
    emu.stop()


def test_list_get_and_watch(emulator: Any) -> None:
    client = ArgoCDClient(emulator.url, TOKEN, allow_http=True)
    generated = emulator.generated

    listing = client.list_applications()
    assert len(listing.items) == len(generated.apps) * len(generated.envs)
    assert listing.resource_version
    first = listing.items[0]
    assert first.labels["env"] in generated.envs
    assert first.sources[0].path and first.sources[0].path.startswith("environments/")

    full = client.get_application(first.name, project=first.project)
    assert full.name == first.name

    events = client.watch_applications()
    try:
        seen = [next(events) for _ in range(len(listing.items))]
    finally:
        events.close()
    assert {e.type for e in seen} == {"ADDED"}
    assert sorted(e.application.name for e in seen) == sorted(a.name for a in listing.items)

    assert client.list_clusters()
    assert {p.name for p in client.list_projects()} >= {a.project for a in listing.items}


def test_login_and_bad_token(emulator: Any) -> None:
    token = session_login(emulator.url, "admin", "sandbox", allow_http=True)
    assert ArgoCDClient(emulator.url, token, allow_http=True).list_applications().items

    with pytest.raises(ArgoCDAuthError):
        ArgoCDClient(emulator.url, "wrong", allow_http=True).list_applications()
