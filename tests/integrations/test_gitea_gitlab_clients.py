"""GiteaClient and GitLabClient against a local HTTP server with recorded, spec-shaped answers."""

from __future__ import annotations

import pytest

from integrations.forges import (
    BranchAlreadyExists,
    ForgeUnavailable,
    ForgeValidationError,
    GiteaClient,
    GitLabClient,
    MergeNotAllowed,
    PullRequestAlreadyExists,
    forge_client,
)
from tests.integrations.integration_fakes import FakeServer, load_fixture

TOKEN = "secret-forge-token"
HEAD = "4522cbcefc20728a5b72b3a86af35e608622c514"


# -- Gitea ----------------------------------------------------------------------------------------

GREPO = "/api/v1/repos/acme/gitops"


@pytest.fixture
def gitea(server: FakeServer) -> GiteaClient:
    client = forge_client("gitea", f"{server.url}/api/v1", TOKEN, "acme/gitops", allow_http=True)
    assert isinstance(client, GiteaClient)
    return client


def test_gitea_pull_request_and_token_header(server: FakeServer, gitea: GiteaClient) -> None:
    server.add("GET", f"{GREPO}/pulls/7", body=load_fixture("gitea/pull-open.json"))

    pr = gitea.get_pull_request(7)

    assert server.requests[0].headers["Authorization"] == f"token {TOKEN}"
    assert (pr.number, pr.state, pr.merged, pr.merge_commit_sha) == (7, "open", False, None)
    assert (pr.head_ref, pr.head_sha, pr.base_ref) == ("promote/checkout/prod", HEAD, "main")
    assert pr.api_url == f"{server.url}{GREPO}/pulls/7"
    assert pr.labels == ("promotion",)


def test_gitea_merged_state(server: FakeServer, gitea: GiteaClient) -> None:
    server.add("GET", f"{GREPO}/pulls/7", body=load_fixture("gitea/pull-merged.json"))

    pr = gitea.get_pull_request(7)

    assert pr.state == "merged" and pr.merge_commit_sha == "a148a755b627ac79f86bf3447e41927e1f4ad259"
    assert pr.merged_by == "portal-bot"


def test_gitea_find_filters_head_and_base(server: FakeServer, gitea: GiteaClient) -> None:
    listing = load_fixture("gitea/pulls-list.json")
    listing[0]["head"]["ref"] = "other"
    server.add("GET", f"{GREPO}/pulls", body=listing)

    pr = gitea.find_pull_request(head="promote/checkout/prod", base="main")

    assert pr is not None and pr.number == 7
    assert server.requests[0].query == {"state": ["open"], "limit": ["50"]}


def test_gitea_duplicate_409_raises_already_exists(server: FakeServer, gitea: GiteaClient) -> None:
    message = "pull request already exists for these targets [id: 7, issue_id: 9, head_repo_id: 12, base_repo_id: 12, head_branch: promote/checkout/prod, base_branch: main]"
    server.add(
        "POST", f"{GREPO}/pulls", 409, {"message": message, "url": "https://gitea.example/api/swagger"}
    )

    with pytest.raises(PullRequestAlreadyExists, match="already exists"):
        gitea.create_pull_request(head="promote/checkout/prod", base="main", title="t", body="b", draft=True)

    assert server.requests[0].json()["title"] == "WIP: t"


def test_gitea_labels_are_resolved_to_ids(server: FakeServer, gitea: GiteaClient) -> None:
    server.add("GET", f"{GREPO}/labels", body=load_fixture("gitea/labels.json"))
    server.add("POST", f"{GREPO}/issues/7/labels", body=[])

    gitea.add_labels(7, ["env:prod", "promotion"])

    assert server.requests[-1].json() == {"labels": [4, 3]}
    with pytest.raises(ForgeValidationError, match="unknown labels nope"):
        gitea.add_labels(7, ["nope"])


def test_gitea_branch_create_409_same_sha_is_fine(server: FakeServer, gitea: GiteaClient) -> None:
    server.add("POST", f"{GREPO}/branches", 409, {"message": "The branch with the same name already exists."})
    server.add("GET", f"{GREPO}/branches/promote%2Fcheckout%2Fprod", body=load_fixture("gitea/branch.json"))

    gitea.create_branch("promote/checkout/prod", HEAD)
    with pytest.raises(BranchAlreadyExists):
        gitea.create_branch("promote/checkout/prod", "0" * 40)
    assert server.requests[0].json() == {"new_branch_name": "promote/checkout/prod", "old_ref_name": HEAD}


def test_gitea_merge_reads_back_merge_commit(server: FakeServer, gitea: GiteaClient) -> None:
    server.add("POST", f"{GREPO}/pulls/7/merge", 200, None)
    server.add("GET", f"{GREPO}/pulls/7", body=load_fixture("gitea/pull-merged.json"))

    sha = gitea.merge_pull_request(7, sha=HEAD)

    assert sha == "a148a755b627ac79f86bf3447e41927e1f4ad259"
    assert server.requests[0].json() == {"Do": "merge", "head_commit_id": HEAD}


def test_gitea_merge_405_is_not_allowed(server: FakeServer, gitea: GiteaClient) -> None:
    server.add("POST", f"{GREPO}/pulls/7/merge", 405, {"message": "Please try again later"})

    with pytest.raises(MergeNotAllowed):
        gitea.merge_pull_request(7)


def test_gitea_status_and_compare(server: FakeServer, gitea: GiteaClient) -> None:
    server.add("GET", f"{GREPO}/commits/{HEAD}/status", body=load_fixture("gitea/combined-status.json"))
    server.add("GET", f"{GREPO}/compare/main...{HEAD}", body=load_fixture("gitea/compare.json"))

    status = gitea.combined_status(HEAD)
    comparison = gitea.compare("main", HEAD)

    assert status.state == "pending"
    assert [(c.context, c.state) for c in status.contexts] == [("ci/build", "success"), ("ci/e2e", "pending")]
    assert comparison.ahead_by == 1 and comparison.files == ("environments/prod/checkout/kustomization.yaml",)


# -- GitLab ---------------------------------------------------------------------------------------

GPROJ = "/api/v4/projects/acme%2Fgitops"


@pytest.fixture
def gitlab(server: FakeServer) -> GitLabClient:
    client = forge_client("gitlab", f"{server.url}/api/v4", TOKEN, "acme/gitops", allow_http=True)
    assert isinstance(client, GitLabClient)
    return client


def test_gitlab_merge_request_parsing_and_headers(server: FakeServer, gitlab: GitLabClient) -> None:
    server.add("GET", f"{GPROJ}/merge_requests/11", body=load_fixture("gitlab/mr-open.json"))

    pr = gitlab.get_pull_request(11)

    seen = server.requests[0]
    assert seen.raw_path == f"{GPROJ}/merge_requests/11"  # project path stays URL-encoded
    assert seen.headers["PRIVATE-TOKEN"] == TOKEN and "Authorization" not in seen.headers
    assert (pr.number, pr.state, pr.merged) == (11, "open", False)
    assert pr.url == "https://gitlab.example/acme/gitops/-/merge_requests/11"
    assert (pr.head_ref, pr.base_ref, pr.head_sha) == ("promote/checkout/prod", "main", HEAD)


@pytest.mark.parametrize(("raw", "state"), [("opened", "open"), ("closed", "closed"), ("locked", "closed")])
def test_gitlab_state_mapping(server: FakeServer, gitlab: GitLabClient, raw: str, state: str) -> None:
    body = load_fixture("gitlab/mr-open.json") | {"state": raw}
    server.add("GET", f"{GPROJ}/merge_requests/11", body=body)

    assert gitlab.get_pull_request(11).state == state


def test_gitlab_merged(server: FakeServer, gitlab: GitLabClient) -> None:
    server.add("GET", f"{GPROJ}/merge_requests/11", body=load_fixture("gitlab/mr-merged.json"))

    pr = gitlab.get_pull_request(11)

    assert (
        pr.state == "merged"
        and pr.merged
        and pr.merge_commit_sha == "78a76ee6b4992a6baf64c59fc4c44c7323d60438"
    )
    assert pr.merged_by == "portal-bot"


def test_gitlab_find_and_duplicate(server: FakeServer, gitlab: GitLabClient) -> None:
    server.add("GET", f"{GPROJ}/merge_requests", body=load_fixture("gitlab/mrs-list.json"))
    server.add(
        "POST",
        f"{GPROJ}/merge_requests",
        409,
        {"message": ["Another open merge request already exists for this source branch: !11"]},
    )

    found = gitlab.find_pull_request(head="promote/checkout/prod", base="main")
    with pytest.raises(PullRequestAlreadyExists, match="!11"):
        gitlab.create_pull_request(head="promote/checkout/prod", base="main", title="t", body="b")

    assert found is not None and found.number == 11
    assert server.requests[0].query == {
        "state": ["opened"],
        "source_branch": ["promote/checkout/prod"],
        "target_branch": ["main"],
        "per_page": ["100"],
    }
    assert server.requests[1].json() == {
        "source_branch": "promote/checkout/prod",
        "target_branch": "main",
        "title": "t",
        "description": "b",
    }


def test_gitlab_merge_via_put(server: FakeServer, gitlab: GitLabClient) -> None:
    server.add("PUT", f"{GPROJ}/merge_requests/11/merge", body=load_fixture("gitlab/mr-merged.json"))
    server.add(
        "PUT",
        f"{GPROJ}/merge_requests/12/merge",
        409,
        {"message": "SHA does not match HEAD of source branch"},
    )

    assert gitlab.merge_pull_request(11, sha=HEAD) == "78a76ee6b4992a6baf64c59fc4c44c7323d60438"
    assert server.requests[0].json() == {"squash": False, "sha": HEAD}
    with pytest.raises(MergeNotAllowed, match="SHA does not match"):
        gitlab.merge_pull_request(12, sha=HEAD)


def test_gitlab_close_labels_comment(server: FakeServer, gitlab: GitLabClient) -> None:
    closed = load_fixture("gitlab/mr-open.json") | {"state": "closed"}
    server.add("PUT", f"{GPROJ}/merge_requests/11", body=closed)
    server.add("POST", f"{GPROJ}/merge_requests/11/notes", 201, {"id": 1, "body": "hi"})

    assert gitlab.close_pull_request(11).state == "closed"
    gitlab.add_labels(11, ["promotion", "env:prod"])
    gitlab.comment(11, "hi")

    assert [r.json() for r in server.requests] == [
        {"state_event": "close"},
        {"add_labels": "promotion,env:prod"},
        {"body": "hi"},
    ]


def test_gitlab_branch_status_compare(server: FakeServer, gitlab: GitLabClient) -> None:
    server.add(
        "GET",
        f"{GPROJ}/repository/branches/promote%2Fcheckout%2Fprod",
        body=load_fixture("gitlab/branch.json"),
    )
    server.add(
        "GET", f"{GPROJ}/repository/commits/{HEAD}/statuses", body=load_fixture("gitlab/statuses.json")
    )
    server.add("GET", f"{GPROJ}/repository/compare", body=load_fixture("gitlab/compare.json"))
    server.add("POST", f"{GPROJ}/repository/branches", 400, {"message": "Branch already exists"})

    assert gitlab.get_branch_sha("promote/checkout/prod") == HEAD
    assert gitlab.get_branch_sha("missing") is None
    gitlab.create_branch("promote/checkout/prod", HEAD)  # exists at the same SHA: fine
    status = gitlab.combined_status(HEAD)
    comparison = gitlab.compare("main", HEAD)

    assert status.state == "failure"
    assert [(c.context, c.state) for c in status.contexts] == [("build", "success"), ("e2e", "failure")]
    assert comparison.commit_shas == (HEAD,) and comparison.ahead_by == 1


def test_gitlab_429_retry_after(server: FakeServer, gitlab: GitLabClient) -> None:
    server.add(
        "GET", f"{GPROJ}/merge_requests/1", 429, {"message": "Retry later"}, headers={"Retry-After": "12"}
    )

    with pytest.raises(ForgeUnavailable) as info:
        gitlab.get_pull_request(1)

    assert info.value.retry_after == 12.0


def test_unknown_forge_kind() -> None:
    from integrations.forges import ForgeError

    with pytest.raises(ForgeError, match="unknown forge"):
        forge_client("bitbucket", "https://api.example", TOKEN, "a/b")
