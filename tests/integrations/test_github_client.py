"""GitHubClient against a local HTTP server serving GitHub's documented example answers."""

from __future__ import annotations

import copy
import time

import pytest

from integrations.forges import (
    BranchAlreadyExists,
    ForgeAuthError,
    ForgeError,
    ForgeNotFound,
    ForgeResponseError,
    ForgeUnavailable,
    ForgeValidationError,
    GitHubClient,
    MergeNotAllowed,
    PullRequestAlreadyExists,
    forge_client,
)
from tests.integrations.integration_fakes import FakeServer, load_fixture

TOKEN = "ghp_secretsecretsecretsecret"
REPO = "/repos/octocat/Hello-World"
SHA = "aa218f56b14c9653891f9e74264a383fa43fefbd"
DUPLICATE = {
    "message": "Validation Failed",
    "errors": [
        {
            "resource": "PullRequest",
            "code": "custom",
            "message": "A pull request already exists for octocat:new-topic.",
        }
    ],
    "documentation_url": "https://docs.github.com/rest/pulls/pulls#create-a-pull-request",
}


@pytest.fixture
def gh(server: FakeServer) -> GitHubClient:
    client = forge_client("github", server.url, TOKEN, "octocat/Hello-World", allow_http=True)
    assert isinstance(client, GitHubClient)
    return client


def pr_fixture(**changes: object) -> dict[str, object]:
    data = copy.deepcopy(load_fixture("github/pull-request.json"))
    data.update(changes)
    return data


def test_headers_and_pull_request_parsing(server: FakeServer, gh: GitHubClient) -> None:
    server.add("GET", f"{REPO}/pulls/1347", body=pr_fixture(merged_at=None))

    pr = gh.get_pull_request(1347)

    seen = server.requests[0].headers
    assert seen["Authorization"] == f"Bearer {TOKEN}"
    assert seen["Accept"] == "application/vnd.github+json"
    assert seen["X-GitHub-Api-Version"] == "2022-11-28"
    assert seen["User-Agent"].startswith("gitops-portal/")
    assert (pr.number, pr.state, pr.merged) == (1347, "open", False)
    assert pr.merge_commit_sha is None  # the test-merge SHA of an open PR is not reported
    assert pr.url == "https://github.com/octocat/Hello-World/pull/1347"
    assert pr.api_url == "https://api.github.com/repos/octocat/Hello-World/pulls/1347"
    assert (pr.head_ref, pr.base_ref, pr.author) == ("new-topic", "master", "octocat")
    assert pr.head_sha == "6dcb09b5b57875f334f61aebed695e2e4193db5e"
    assert pr.labels == ("bug",)


def test_merged_pull_request(server: FakeServer, gh: GitHubClient) -> None:
    server.add("GET", f"{REPO}/pulls/1347", body=pr_fixture(state="closed", merged=True))

    pr = gh.get_pull_request(1347)

    assert pr.state == "merged" and pr.merged
    assert pr.merge_commit_sha == "e5bd3914e2e596debea16f433f57875b5b90bcd6"
    assert pr.merged_by == "octocat"


def test_find_pull_request_follows_link_pagination(server: FakeServer, gh: GitHubClient) -> None:
    page1 = load_fixture("github/pulls-list.json")
    page1[0]["head"]["ref"] = "other-branch"
    page2 = load_fixture("github/pulls-list.json")
    page2[0]["merged_at"] = None
    link = (
        "<{base}"
        + REPO
        + '/pulls?state=open&head=octocat%3Anew-topic&base=master&per_page=100&page=2>; rel="next"'
    )
    server.add("GET", f"{REPO}/pulls", body=page2, query={"page": "2"})
    server.add("GET", f"{REPO}/pulls", body=page1, headers={"Link": link})

    pr = gh.find_pull_request(head="new-topic", base="master")

    assert pr is not None and pr.number == 1347 and pr.state == "open"
    first, second = server.requests
    assert first.query == {
        "state": ["open"],
        "head": ["octocat:new-topic"],
        "base": ["master"],
        "per_page": ["100"],
    }
    assert second.query["page"] == ["2"]
    assert second.headers["Authorization"] == f"Bearer {TOKEN}"


def test_pagination_link_to_other_host_is_refused(server: FakeServer, gh: GitHubClient) -> None:
    server.add(
        "GET", f"{REPO}/pulls", body=[], headers={"Link": '<https://evil.example/steal?page=2>; rel="next"'}
    )

    with pytest.raises(ForgeError, match="another origin"):
        gh.find_pull_request(head="x", base="main")


def test_find_returns_none_when_nothing_matches(server: FakeServer, gh: GitHubClient) -> None:
    server.add("GET", f"{REPO}/pulls", body=[])

    assert gh.find_pull_request(head="x", base="main") is None


def test_create_pull_request(server: FakeServer, gh: GitHubClient) -> None:
    server.add("POST", f"{REPO}/pulls", 201, pr_fixture(merged_at=None))

    pr = gh.create_pull_request(
        head="new-topic", base="master", title="Amazing new feature", body="Please pull"
    )

    assert pr.number == 1347
    assert server.requests[0].json() == {
        "head": "new-topic",
        "base": "master",
        "title": "Amazing new feature",
        "body": "Please pull",
        "draft": False,
    }


def test_duplicate_pull_request_422_raises_already_exists(server: FakeServer, gh: GitHubClient) -> None:
    server.add("POST", f"{REPO}/pulls", 422, DUPLICATE)

    with pytest.raises(PullRequestAlreadyExists, match="already exists for octocat:new-topic"):
        gh.create_pull_request(head="new-topic", base="master", title="t", body="b")


def test_other_422_is_validation_error_with_github_messages(server: FakeServer, gh: GitHubClient) -> None:
    body = {
        "message": "Validation Failed",
        "errors": [{"resource": "PullRequest", "field": "base", "code": "invalid"}],
    }
    server.add("POST", f"{REPO}/pulls", 422, body)

    with pytest.raises(ForgeValidationError) as info:
        gh.create_pull_request(head="new-topic", base="nope", title="t", body="b")

    assert not isinstance(info.value, PullRequestAlreadyExists)
    assert "Validation Failed" in str(info.value) and "invalid" in str(info.value)


@pytest.mark.parametrize("status", [500, 502, 503])
def test_server_errors_are_unavailable(server: FakeServer, gh: GitHubClient, status: int) -> None:
    server.add("GET", f"{REPO}/pulls/1", status, {"message": "Server Error"})

    with pytest.raises(ForgeUnavailable) as info:
        gh.get_pull_request(1)

    assert info.value.status == status and info.value.retry_after is None


def test_secondary_rate_limit_uses_retry_after(server: FakeServer, gh: GitHubClient) -> None:
    body = {
        "message": "You have exceeded a secondary rate limit. Please wait a few minutes before you try again."
    }
    server.add("POST", f"{REPO}/pulls", 403, body, headers={"Retry-After": "30"})

    with pytest.raises(ForgeUnavailable) as info:
        gh.create_pull_request(head="a", base="b", title="t", body="b")

    assert info.value.retry_after == 30.0


def test_secondary_rate_limit_without_header_waits_a_minute(server: FakeServer, gh: GitHubClient) -> None:
    server.add("POST", f"{REPO}/pulls", 403, {"message": "You have exceeded a secondary rate limit."})

    with pytest.raises(ForgeUnavailable) as info:
        gh.create_pull_request(head="a", base="b", title="t", body="b")

    assert info.value.retry_after == 60.0


def test_primary_rate_limit_waits_until_reset(server: FakeServer, gh: GitHubClient) -> None:
    reset = int(time.time()) + 120
    headers = {"X-RateLimit-Remaining": "0", "X-RateLimit-Limit": "5000", "X-RateLimit-Reset": str(reset)}
    server.add("GET", f"{REPO}/pulls/1", 403, {"message": "API rate limit exceeded"}, headers=headers)

    with pytest.raises(ForgeUnavailable) as info:
        gh.get_pull_request(1)

    assert info.value.retry_after is not None and 100 < info.value.retry_after <= 120


def test_plain_403_and_401_are_auth_errors(server: FakeServer, gh: GitHubClient) -> None:
    server.add("GET", f"{REPO}/pulls/1", 403, {"message": "Resource not accessible by integration"})
    server.add("GET", f"{REPO}/pulls/2", 401, {"message": "Bad credentials"})

    with pytest.raises(ForgeAuthError):
        gh.get_pull_request(1)
    with pytest.raises(ForgeAuthError) as info:
        gh.get_pull_request(2)
    assert TOKEN not in str(info.value)


def test_not_found(server: FakeServer, gh: GitHubClient) -> None:
    with pytest.raises(ForgeNotFound):
        gh.get_pull_request(99)


def test_branch_lifecycle(server: FakeServer, gh: GitHubClient) -> None:
    server.add("GET", f"{REPO}/git/ref/heads/featureA", body=load_fixture("github/git-ref.json"))
    server.add("POST", f"{REPO}/git/refs", 201, load_fixture("github/git-ref.json"))
    server.add("DELETE", f"{REPO}/git/refs/heads/featureA", 204)

    assert gh.get_branch_sha("featureA") == SHA
    assert gh.get_branch_sha("missing") is None
    gh.create_branch("featureA", SHA)
    gh.delete_branch("featureA")
    gh.delete_branch("missing")  # 404 is fine

    create = next(r for r in server.requests if r.method == "POST")
    assert create.json() == {"ref": "refs/heads/featureA", "sha": SHA}


def test_create_branch_is_idempotent_for_same_sha(server: FakeServer, gh: GitHubClient) -> None:
    server.add("POST", f"{REPO}/git/refs", 422, {"message": "Reference already exists"})
    server.add("GET", f"{REPO}/git/ref/heads/featureA", body=load_fixture("github/git-ref.json"))

    gh.create_branch("featureA", SHA)
    with pytest.raises(BranchAlreadyExists) as info:
        gh.create_branch("featureA", "0" * 40)
    assert info.value.sha == SHA


def test_branch_names_with_slashes_are_kept_as_path(server: FakeServer, gh: GitHubClient) -> None:
    gh.get_branch_sha("promote/checkout/prod")

    assert server.requests[0].raw_path == f"{REPO}/git/ref/heads/promote/checkout/prod"


def test_merge(server: FakeServer, gh: GitHubClient) -> None:
    server.add("PUT", f"{REPO}/pulls/1347/merge", body=load_fixture("github/merge-result.json"))

    sha = gh.merge_pull_request(1347, sha="6dcb09b5b57875f334f61aebed695e2e4193db5e", method="squash")

    assert sha == "6dcb09b5b57875f334f61aebed695e2e4193db5e"
    assert server.requests[0].json() == {
        "merge_method": "squash",
        "sha": "6dcb09b5b57875f334f61aebed695e2e4193db5e",
    }


@pytest.mark.parametrize("status", [405, 409])
def test_merge_refused(server: FakeServer, gh: GitHubClient, status: int) -> None:
    server.add("PUT", f"{REPO}/pulls/1/merge", status, {"message": "Pull Request is not mergeable"})

    with pytest.raises(MergeNotAllowed):
        gh.merge_pull_request(1)


def test_labels_reviewers_comment_update(server: FakeServer, gh: GitHubClient) -> None:
    server.add("POST", f"{REPO}/issues/5/labels", body=load_fixture("github/labels.json"))
    server.add("POST", f"{REPO}/pulls/5/requested_reviewers", 201, pr_fixture())
    server.add("POST", f"{REPO}/issues/5/comments", 201, load_fixture("github/issue-comment.json"))
    server.add("PATCH", f"{REPO}/pulls/5", body=pr_fixture(state="closed", merged=False, merged_at=None))

    gh.add_labels(5, ["promotion", "env:prod"])
    gh.request_reviewers(5, ["alice"])
    gh.comment(5, "Synced to prod")
    closed = gh.close_pull_request(5)

    bodies = [r.json() for r in server.requests]
    assert bodies == [
        {"labels": ["promotion", "env:prod"]},
        {"reviewers": ["alice"]},
        {"body": "Synced to prod"},
        {"state": "closed"},
    ]
    assert closed.state == "closed"


def test_combined_status_and_compare(server: FakeServer, gh: GitHubClient) -> None:
    server.add("GET", f"{REPO}/commits/{SHA}/status", body=load_fixture("github/combined-status.json"))
    server.add("GET", f"{REPO}/compare/main...feature", body=load_fixture("github/compare.json"))

    status = gh.combined_status(SHA)
    comparison = gh.compare("main", "feature")

    assert status.state == "success"
    assert status.contexts[0].context == "continuous-integration/jenkins"
    assert comparison.status == "behind" and comparison.ahead_by == 1 and comparison.behind_by == 2
    assert comparison.files == ("file1.txt",)


def test_malformed_pull_request_is_response_error(server: FakeServer, gh: GitHubClient) -> None:
    server.add("GET", f"{REPO}/pulls/1", body=pr_fixture(state="weird"))
    server.add("GET", f"{REPO}/pulls/2", body=b'{"number": 2, "state": "op')

    with pytest.raises(ForgeResponseError, match=r"\$\.state"):
        gh.get_pull_request(1)
    with pytest.raises(ForgeResponseError, match="not valid JSON"):
        gh.get_pull_request(2)


def test_repr_hides_token() -> None:
    client = GitHubClient("https://api.github.com", TOKEN, "octocat/Hello-World")

    assert TOKEN not in repr(client) and TOKEN not in repr(vars(client))
