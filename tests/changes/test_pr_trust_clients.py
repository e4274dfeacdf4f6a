"""Trust on Gitea and GitLab: forks, authors and the portal's own identity, on real-shaped answers."""

from __future__ import annotations

import pytest

from changes.pullrequests import forge_login, pull_request_distrust
from integrations.forges import GiteaClient, GitLabClient, forge_client
from inventory.models import GitRepository
from tests.integrations.integration_fakes import FakeServer, load_fixture

TOKEN = "secret-forge-token"
HEAD = "4522cbcefc20728a5b72b3a86af35e608622c514"
GREPO = "/api/v1/repos/acme/gitops"
GPROJ = "/api/v4/projects/acme%2Fgitops"


def _repository(server: FakeServer, kind: str, api: str) -> GitRepository:
    return GitRepository(
        name=f"gitops-{kind}",
        forge_kind=kind,
        api_url=f"{server.url}{api}",
        token=TOKEN,
        full_name="acme/gitops",
        allow_http=True,
    )


def _gitea(server: FakeServer) -> GiteaClient:
    client = forge_client("gitea", f"{server.url}/api/v1", TOKEN, "acme/gitops", allow_http=True)
    assert isinstance(client, GiteaClient)
    return client


def _gitlab(server: FakeServer) -> GitLabClient:
    client = forge_client("gitlab", f"{server.url}/api/v4", TOKEN, "acme/gitops", allow_http=True)
    assert isinstance(client, GitLabClient)
    return client


def test_gitea_pr_from_a_fork_is_not_the_portals(server: FakeServer) -> None:
    own = load_fixture("gitea/pull-open.json")
    fork = own | {"head": own["head"] | {"repo": own["head"]["repo"] | {"full_name": "mallory/gitops"}}}
    server.add("GET", f"{GREPO}/pulls/7", body=own)
    server.add("GET", f"{GREPO}/pulls/8", body=fork | {"number": 8})
    repository = _repository(server, "gitea", "/api/v1")

    mine, theirs = _gitea(server).get_pull_request(7), _gitea(server).get_pull_request(8)

    assert mine.head_repo == "acme/gitops" and mine.author == "portal-bot"
    assert pull_request_distrust(mine, repository=repository, login="portal-bot", head_sha=HEAD) == ""
    assert theirs.head_ref == mine.head_ref  # the same branch name ...
    reason = pull_request_distrust(theirs, repository=repository, login="portal-bot", head_sha=HEAD)
    assert "another repository (mallory/gitops)" in reason  # ... from somewhere else
    assert "not by the portal" in pull_request_distrust(
        mine, repository=repository, login="bot2", head_sha=HEAD
    )
    assert "not the commit" in pull_request_distrust(
        mine, repository=repository, login="portal-bot", head_sha="0" * 40
    )


def test_gitlab_mr_from_a_fork_is_not_the_portals(server: FakeServer) -> None:
    own = load_fixture("gitlab/mr-open.json")
    server.add("GET", f"{GPROJ}/merge_requests/11", body=own)
    server.add("GET", f"{GPROJ}/merge_requests/12", body=own | {"iid": 12, "source_project_id": 77})
    repository = _repository(server, "gitlab", "/api/v4")

    mine, theirs = _gitlab(server).get_pull_request(11), _gitlab(server).get_pull_request(12)

    assert mine.head_repo == "acme/gitops"
    assert pull_request_distrust(mine, repository=repository, login="portal-bot", head_sha=HEAD) == ""
    assert theirs.head_repo == "project:77"
    assert "another repository" in pull_request_distrust(
        theirs, repository=repository, login="portal-bot", head_sha=HEAD
    )


@pytest.mark.parametrize(
    ("kind", "api", "body"),
    [
        ("gitea", "/api/v1", {"id": 1, "login": "portal-bot"}),
        ("gitlab", "/api/v4", {"id": 5, "username": "portal-bot"}),
    ],
)
def test_the_portals_identity_is_asked_once(server: FakeServer, kind: str, api: str, body: dict) -> None:
    server.add("GET", f"{api}/user", body=body)
    repository = _repository(server, kind, api)

    assert forge_login(repository) == forge_login(repository) == "portal-bot"

    assert [r.path for r in server.requests] == [f"{api}/user"]


def test_gitlab_merge_pins_the_head_sha(server: FakeServer) -> None:
    merged = load_fixture("gitlab/mr-merged.json")
    server.add("PUT", f"{GPROJ}/merge_requests/11/merge", body=merged)

    _gitlab(server).merge_pull_request(11, sha=HEAD)

    assert server.requests[0].json()["sha"] == HEAD
