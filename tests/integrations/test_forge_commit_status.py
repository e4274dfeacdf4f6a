"""Posting the portal's commit status on each forge, per documented API shape.

GitHub `POST /repos/{o}/{r}/statuses/{sha}` (docs.github.com/en/rest/commits/statuses, 201 `status`),
Gitea `POST /repos/{o}/{r}/statuses/{sha}` (shared/forges/gitea-pulls-subset.json: CreateStatusOption,
201 CommitStatus whose state field is `status`), GitLab `POST /projects/:id/statuses/:sha`
(docs.gitlab.com/api/commits: state pending|running|success|failed|canceled, `name`).
"""

from __future__ import annotations

import copy

import pytest

from integrations.forges import ForgeAuthError, ForgeUnavailable, StatusContext, forge_client
from tests.integrations.integration_fakes import FakeServer, load_fixture

TOKEN = "secret-forge-token"
SHA = "4522cbcefc20728a5b72b3a86af35e608622c514"
URL = "https://portal.example.com/promotions/7/"
LONG = "Blocked: Rendered by Argo CD: Argo CD cannot render: checkout: " + "x" * 200

# GitHub's documented example answer (components/examples/status).
GITHUB_STATUS = {
    "url": f"https://api.github.com/repos/acme/gitops/statuses/{SHA}",
    "avatar_url": "https://github.com/images/error/hubot_happy.gif",
    "id": 1,
    "node_id": "MDY6U3RhdHVzMQ==",
    "state": "pending",
    "description": "Waiting for approval in the GitOps Portal",
    "target_url": URL,
    "context": "gitops-portal/gates",
    "created_at": "2012-07-20T01:19:13Z",
    "updated_at": "2012-07-20T01:19:13Z",
    "creator": {"login": "portal-bot", "id": 1},
}


def test_github_posts_state_context_description_and_target_url(server: FakeServer) -> None:
    gh = forge_client("github", server.url, TOKEN, "acme/gitops", allow_http=True)
    server.add("POST", f"/repos/acme/gitops/statuses/{SHA}", status=201, body=GITHUB_STATUS)

    posted = gh.set_commit_status(
        SHA, state="pending", context="gitops-portal/gates", description=LONG, target_url=URL
    )

    assert posted == StatusContext(
        "gitops-portal/gates", "pending", "Waiting for approval in the GitOps Portal", URL
    )
    (seen,) = server.requests
    body = seen.json()
    assert set(body) == {"state", "context", "description", "target_url"}
    assert body["state"] == "pending" and body["context"] == "gitops-portal/gates"
    assert body["target_url"] == URL
    assert len(body["description"]) == 140 and body["description"].endswith("…")  # GitHub's limit
    assert seen.headers["Authorization"] == f"Bearer {TOKEN}"


def test_github_403_is_an_auth_error_and_502_is_transient(server: FakeServer) -> None:
    gh = forge_client("github", server.url, TOKEN, "acme/gitops", allow_http=True)
    path = f"/repos/acme/gitops/statuses/{SHA}"
    server.add("POST", path, status=403, body={"message": "Resource not accessible by integration"})
    with pytest.raises(ForgeAuthError) as refused:
        gh.set_commit_status(SHA, state="success", context="c", description="d", target_url=URL)
    assert TOKEN not in str(refused.value)
    server.routes.clear()
    server.add("POST", path, status=502, body={"message": "Bad Gateway"})
    with pytest.raises(ForgeUnavailable):
        gh.set_commit_status(SHA, state="success", context="c", description="d", target_url=URL)


def test_gitea_posts_create_status_option_and_reads_commit_status(server: FakeServer) -> None:
    gitea = forge_client("gitea", f"{server.url}/api/v1", TOKEN, "acme/gitops", allow_http=True)
    documented = copy.deepcopy(load_fixture("gitea/combined-status.json")["statuses"][0])
    documented.update(status="failure", context="gitops-portal/gates", description="Blocked", target_url=URL)
    server.add("POST", f"/api/v1/repos/acme/gitops/statuses/{SHA}", status=201, body=documented)

    posted = gitea.set_commit_status(
        SHA, state="failure", context="gitops-portal/gates", description="Blocked", target_url=URL
    )

    assert posted == StatusContext("gitops-portal/gates", "failure", "Blocked", URL)
    (seen,) = server.requests
    assert seen.json() == {
        "state": "failure",
        "context": "gitops-portal/gates",
        "description": "Blocked",
        "target_url": URL,
    }
    assert seen.headers["Authorization"] == f"token {TOKEN}"


@pytest.mark.parametrize(
    ("ours", "gitlabs"), [("pending", "pending"), ("success", "success"), ("failure", "failed")]
)
def test_gitlab_posts_its_state_words_and_name(server: FakeServer, ours: str, gitlabs: str) -> None:
    gitlab = forge_client("gitlab", f"{server.url}/api/v4", TOKEN, "acme/gitops", allow_http=True)
    answer = copy.deepcopy(load_fixture("gitlab/statuses.json")[0])
    answer.update(status=gitlabs, name="gitops-portal/gates", description="d", target_url=URL)
    server.add("POST", f"/api/v4/projects/acme%2Fgitops/statuses/{SHA}", status=201, body=answer)

    posted = gitlab.set_commit_status(
        SHA, state=ours, context="gitops-portal/gates", description="d", target_url=URL
    )

    assert posted == StatusContext("gitops-portal/gates", ours, "d", URL)
    body = server.requests[0].json()
    assert body == {"state": gitlabs, "name": "gitops-portal/gates", "description": "d", "target_url": URL}
    assert server.requests[0].headers["PRIVATE-TOKEN"] == TOKEN


def test_gitlab_same_state_again_is_not_an_error(server: FakeServer) -> None:
    gitlab = forge_client("gitlab", f"{server.url}/api/v4", TOKEN, "acme/gitops", allow_http=True)
    server.add(
        "POST",
        f"/api/v4/projects/acme%2Fgitops/statuses/{SHA}",
        status=400,
        body={"message": "Cannot transition status via :enqueue from :pending (Reasons: ...)"},
    )

    posted = gitlab.set_commit_status(SHA, state="pending", context="g", description="d", target_url=URL)

    assert posted.state == "pending"


def test_gitlab_external_pipeline_of_posted_statuses_is_not_a_check(server: FakeServer) -> None:
    gitlab = forge_client("gitlab", f"{server.url}/api/v4", TOKEN, "acme/gitops", allow_http=True)
    external = copy.deepcopy(load_fixture("gitlab/pipelines.json")[0])
    external.update(id=99, source="external", status="pending", name=None)
    status = copy.deepcopy(load_fixture("gitlab/statuses.json")[0])
    status.update(name="gitops-portal/gates", status="pending")
    server.add("GET", "/api/v4/projects/acme%2Fgitops/pipelines", body=[external])
    server.add("GET", f"/api/v4/projects/acme%2Fgitops/repository/commits/{SHA}/statuses", body=[status])

    checks = gitlab.checks(SHA)

    assert [(c.name, c.source) for c in checks] == [("gitops-portal/gates", "status")]
